"""Metrics pieces that need no servers: the histogram, the [metrics] config section."""

from __future__ import annotations

import pytest

from tierstore.config import load_config
from tierstore.errors import ConfigError
from tierstore.metrics import Histogram


def test_histogram_buckets_are_cumulative_and_inclusive():
    h = Histogram([0.1, 1.0])
    h.observe(0.1)          # le="0.1" is inclusive
    h.observe(0.5, n=3)     # a batch of 3 queries timed together
    h.observe(7.0)
    assert h.buckets() == [("0.1", 1), ("1.0", 4), ("+Inf", 5)]
    assert h.count == 5 and h.sum == pytest.approx(0.1 + 1.5 + 7.0)


def test_metrics_config_is_off_by_default_and_validated():
    cfg = load_config(store={"dim": 4}, env={})
    assert cfg.metrics.port is None and cfg.metrics.addr == "127.0.0.1" and cfg.store.name is None
    cfg = load_config(store={"dim": 4, "name": "tenant-a"}, metrics={"port": "9464", "addr": "::"}, env={})
    assert (cfg.metrics.port, cfg.metrics.addr, cfg.store.name) == (9464, "::", "tenant-a")
    assert load_config(store={"dim": 4}, env={"TIERSTORE_METRICS_PORT": "0"}).metrics.port == 0
    assert load_config(cfg).metrics.port == 9464  # round trip through to_dict
    for bad, msg in (({"port": 70000}, "metrics.port: 70000 is not allowed"),
                     ({"port": "http"}, "metrics.port"),
                     ({"addr": "not a host!"}, "metrics.addr"),
                     ({"prot": 1}, "did you mean 'port'")):
        with pytest.raises(ConfigError, match=msg):
            load_config(store={"dim": 4}, metrics=bad, env={})
