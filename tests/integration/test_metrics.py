"""Prometheus metrics on real Redis + S3: the exposed text against what the queries returned, two
stores in one registry, the HTTP exporter, and `tierstore serve-metrics`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tierstore


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """The exposed text parsed back: (sample name, labels without store) -> value."""
    text = generate_latest(registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset((k, v) for k, v in s.labels.items() if k != "store"))] = s.value
    return out


def val(smp: dict, name: str, **labels: str) -> float:
    return smp[(name, frozenset(labels.items()))]


def vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    return (centres[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def test_exposed_counters_match_the_queries_across_tiers(open_store, s3_server):
    store = open_store(dim=16, name="alpha", policy={"interval": 0}, cold={"segment_size": 1000})
    v = vectors(300)
    store.upsert(list(range(100)), v[:100])
    store.upsert(list(range(100, 200)), v[100:200], tier="warm")
    store.upsert(list(range(200, 300)), v[200:], tier="cold")
    store.cold.drop_cache()  # (the segment was written through to it): the first queries read S3
    answers = [store.query(v[i], k=5) for i in (3, 150, 250, 251)]
    answers += store.query_batch(v[[10, 110, 210]], k=4, tiers=["hot", "warm"])
    store.cold.settle()  # fetched blocks are in the cache now: the next query hits it
    answers += [store.query(v[i], k=5, tiers="cold") for i in (250, 260)]
    answers += [store.query(v[250], k=5, tiers="cold")]
    with pytest.raises(tierstore.DimensionError):
        store.query([1.0, 2.0], k=3)
    store.delete([0, 1])
    store.cold.settle()  # (blocks the last queries staged are written to the cache in the background)

    smp = samples(store.metrics.registry)
    assert val(smp, "tierstore_queries_total") == 10
    assert val(smp, "tierstore_query_duration_seconds_count") == 10
    assert val(smp, "tierstore_partial_queries_total") == 0
    searched = {t: sum(a.tiers[t].searched for a in answers if t in a.tiers) for t in ("hot", "warm", "cold")}
    assert searched == {"hot": 7, "warm": 7, "cold": 7}
    for t in ("hot", "warm", "cold"):
        assert val(smp, "tierstore_tier_searches_total", tier=t) == searched[t]
        assert val(smp, "tierstore_tier_search_duration_seconds_count", tier=t) == searched[t]
        assert val(smp, "tierstore_tier_search_duration_seconds_bucket", tier=t, le="+Inf") == searched[t]
        assert val(smp, "tierstore_results_total", tier=t) == sum(a.tiers[t].returned for a in answers if t in a.tiers)
        assert val(smp, "tierstore_tier_errors_total", tier=t) == 0
    assert val(smp, "tierstore_vectors", tier="hot") == 98
    assert val(smp, "tierstore_vectors", tier="warm") == val(smp, "tierstore_vectors", tier="cold") == 100
    assert val(smp, "tierstore_tier_capacity_vectors", tier="hot") == 100_000
    assert val(smp, "tierstore_upserted_vectors_total") == 300
    assert val(smp, "tierstore_deleted_vectors_total") == 2
    assert val(smp, "tierstore_errors_total", op="query", type="DimensionError") == 1
    ratios = store.stats()["policy"]["hit_ratio"]["results"]
    assert val(smp, "tierstore_hit_ratio", tier="hot") == pytest.approx(ratios["hot"])
    assert val(smp, "tierstore_hit_window_queries") == 10
    # S3 and the block cache: the same numbers the queries reported, and the tier's own counters
    cold = [a.tiers["cold"].details for a in answers if "cold" in a.tiers]
    assert val(smp, "tierstore_s3_gets_total") == sum(d["gets"] for d in cold) > 0
    assert val(smp, "tierstore_s3_get_bytes_total") == sum(d["bytes"] for d in cold) > 0
    assert val(smp, "tierstore_block_cache_hits_total") == sum(d["cache_hits"] for d in cold) > 0
    assert val(smp, "tierstore_block_cache_misses_total") == sum(d["fetched"] for d in cold) > 0
    assert val(smp, "tierstore_s3_puts_total") == store.cold.counters["puts"] >= 2  # segment + manifest
    assert val(smp, "tierstore_block_cache_bytes") == store.cold.cache.bytes > 0
    assert val(smp, "tierstore_cold_segments") == 1

    # moves: explicit ones, then a policy cycle (accessed warm/cold vectors go hot: room is free)
    store.move([5, 6, 7], "warm")
    report = store.run_policy()
    assert report.moved
    smp = samples(store.metrics.registry)
    assert val(smp, "tierstore_moves_total", direction="hot->warm", trigger="explicit") == 3
    for d, n in report.moved.items():
        assert val(smp, "tierstore_moves_total", direction=d, trigger="policy") == n
    assert val(smp, "tierstore_policy_cycles_total", outcome="ok") == 1
    assert val(smp, "tierstore_policy_cycle_duration_seconds_count") == 1
    assert val(smp, "tierstore_policy_cycle_duration_seconds_sum") == pytest.approx(report.seconds)
    store.run_policy(dry_run=True)  # plans only: not a cycle
    assert val(samples(store.metrics.registry), "tierstore_policy_cycles_total", outcome="ok") == 1

    # a corrupt cold object: a partial answer, counted per tier; strict raises, counted by type
    client = s3_server.client()
    seg = next(iter(store.cold.segs.values()))
    raw = bytearray(client.get_object(Bucket=store.cold.bucket, Key=seg.info["key"])["Body"].read())
    for off in seg.footer.offsets[:-1].tolist():
        raw[int(off) + 5] ^= 0x10
    client.put_object(Bucket=store.cold.bucket, Key=seg.info["key"], Body=bytes(raw))
    store.cold.drop_cache()
    nprobe = store.stats()["tiers"]["cold"]["partitions"]
    assert store.query(v[20], k=5, nprobe=nprobe).partial
    with pytest.raises(tierstore.IntegrityError):
        store.query(v[20], k=5, nprobe=nprobe, strict=True)
    smp = samples(store.metrics.registry)
    assert val(smp, "tierstore_partial_queries_total") == 1
    assert val(smp, "tierstore_tier_errors_total", tier="cold") == 1
    assert val(smp, "tierstore_errors_total", op="query", type="IntegrityError") == 1


def test_two_stores_share_one_registry_and_leave_it_on_close(open_store):
    shared = CollectorRegistry()
    a = open_store(name="a", cold={"enabled": False}, policy={"interval": 0})
    b = tierstore.open(path=str(a.path.parent / "b"), dim=8, name="b", hot={"redis_url": a.config.hot.redis_url},
                       cold={"enabled": False}, policy={"interval": 0}, env={}, registry=shared)
    try:
        a.metrics.register(shared)
        v = vectors(20, dim=8)
        a.upsert(list(range(20)), v)
        b.upsert(list(range(10)), v[:10])
        a.query(v[0], k=3)
        text = generate_latest(shared).decode()
        assert text.count("# TYPE tierstore_queries_total counter") == 1  # one family, a sample per store
        assert 'tierstore_queries_total{store="a"} 1.0' in text
        assert 'tierstore_queries_total{store="b"} 0.0' in text
        assert 'tierstore_vectors{store="a",tier="hot"} 20.0' in text
        assert 'tierstore_vectors{store="b",tier="hot"} 10.0' in text
        # each store's own registry holds only itself
        assert 'store="b"' not in generate_latest(a.metrics.registry).decode()
        with pytest.raises(tierstore.ConfigError, match="store.name"):  # labels must stay distinct
            tierstore.open(path=str(a.path.parent / "c"), dim=8, name="a", env={}, registry=shared)
    finally:
        b.close()
    text = generate_latest(shared).decode()
    assert 'store="b"' not in text and 'tierstore_queries_total{store="a"} 1.0' in text


def test_http_exporter_serves_while_open_and_stops_on_close(open_store):
    store = open_store(cold={"enabled": False}, policy={"interval": 0}, metrics={"port": 0})
    url = store.metrics.url
    assert store.metrics.port and url == f"http://127.0.0.1:{store.metrics.port}/metrics"
    store.upsert(["x"], np.ones((1, 8), np.float32))
    store.query(np.ones(8), k=1)
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    assert f'tierstore_queries_total{{store="{store.path}"}} 1.0' in body  # unnamed: labelled by path
    with pytest.raises(tierstore.ConfigError, match="metrics.port"):  # the port is taken
        open_store(cold={"enabled": False}, policy={"interval": 0}, metrics={"port": store.metrics.port})
    store.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_cli_serve_metrics_until_interrupted(tmp_path, redis_server):
    (tmp_path / "tierstore.toml").write_text(
        f'[store]\npath = "data"\ndim = 4\nname = "cli"\n[hot]\nredis_url = "{redis_server.url}"\n'
        "[cold]\nenabled = false\n")
    with tierstore.open(str(tmp_path / "tierstore.toml"), env={}) as store:
        store.upsert([1, 2, 3], np.eye(4, dtype=np.float32)[:3])
    proc = subprocess.Popen([sys.executable, "-m", "tierstore.cli", "serve-metrics", "--port", "0", "--json"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin"},
                            # Ctrl-C as a terminal delivers it: a suite run in the background (a
                            # shell's `&`) ignores SIGINT, and the child would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["store"] == "cli"
        body = urllib.request.urlopen(info["url"], timeout=10).read().decode()
        assert 'tierstore_vectors{store="cli",tier="hot"} 3.0' in body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(info["url"], timeout=5)
