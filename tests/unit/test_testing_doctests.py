"""Doctests of the modules added by the refactor (issue 15) that need no servers: the cost model
and the test harness (``tierstore.testing``: a store on the in-memory hot tier)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["tierstore.costs", "tierstore.testing"])
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
    assert result.attempted > 0, f"{name} has no doctests"
