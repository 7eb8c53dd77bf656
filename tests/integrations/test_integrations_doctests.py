"""The doctests of the adapters' framework-free modules."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["translate", "common"])
def test_module_doctests(name):
    module = importlib.import_module(f"tierstore.integrations.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0 and result.attempted > 0
