"""Run the doctests of the tierstore modules that need no servers."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["config.load", "config.parse", "filters", "catalog.core", "tiers", "kernels", "policy.access", "policy.plan", "policy.admission", "inputs",
           "results", "errors", "tiers.warm.segment", "datasets", "tiers.cold.format", "tiers.hot.vectorset", "tiers.hot.cluster_shard", "engine.query"]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(f"tierstore.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in tierstore.{name}"
    assert result.attempted > 0, f"tierstore.{name} has no doctests"
