"""The hot tier on a real 3-master Redis Cluster (RediSearch on every master, no coordinator):
placement over the masters, the fan-out merge against a standalone store, a master down (killed,
stopped) and back, a reshard, configuration errors. The general hot-tier tests also run on the
cluster (test_store_hot.py, test_faults.py: the "search-cluster" param)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import redis
from redis.crc import key_slot

import tierstore
from tierstore.datasets import brute_force
from tierstore.errors import ConfigError, TierUnavailableError
from tierstore.testing.servers import RedisCluster
from tierstore.tiers.hot import ClusterHotTier
from tierstore.tiers.hot.cluster_shard import tag_for_slot


def vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def hot_backend() -> str:
    return "search-cluster"


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    """A cluster this module may kill, stop and reshard (the session's stays intact)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("own-cluster")).start()
    yield cluster
    cluster.stop()


def shard_of_server(store, cluster: RedisCluster, i: int):
    port = cluster.servers[i].port
    return next(sh for sh in store.hot.shards if sh.port == port)


def wait_complete(store, q: np.ndarray, k: int, timeout: float = 20.0):
    """Query until the answer is no longer partial (a master coming back is retried after its
    back-off, then verified and reconciled from the catalog)."""
    deadline = time.monotonic() + timeout
    while True:
        hits = store.query(q, k=k, ef=1000)
        if not hits.partial or time.monotonic() > deadline:
            return hits
        time.sleep(0.2)


def test_tag_for_slot_pins_a_key_to_the_slot():
    for slot in (0, 1, 5460, 5461, 10922, 16383):
        assert key_slot(f"x{{{tag_for_slot(slot)}}}".encode()) == slot


def test_vectors_spread_over_every_master(open_store):
    store = open_store(dim=16, schema={"g": "tag"})
    assert isinstance(store.hot, ClusterHotTier)
    v = vectors(3000)
    store.upsert(list(range(3000)), v, [{"g": str(i % 5)} for i in range(3000)])
    info = store.stats()["tiers"]["hot"]
    assert info["cluster"] and info["masters"] == 3 and info["num_docs"] == 3000 and not info["shards_down"]
    assert all(800 < sh["num_docs"] < 1200 for sh in info["shards"]), info["shards"]
    for sh in store.hot.shards:
        slots = set(store.hot.slots_of(sh).tolist())
        assert key_slot(sh.index.encode()) in slots and key_slot(sh.meta_key.encode()) in slots
        keys = sh.keys()
        assert len(keys) == sh.count() and all(store.hot.slot(i) in slots for i in keys)
    hits = store.query(v[7], k=5)
    assert hits.ids()[0] == 7 and hits.tiers["hot"].details["shards"] == 3
    assert store.verify()["ok"]


def test_fan_out_merge_equals_a_standalone_store(open_store, redis_server):
    v = vectors(2000, seed=1)
    meta = [{"g": str(i % 7), "n": i % 100} for i in range(2000)]
    stores = [open_store(dim=16, schema={"g": "tag", "n": "numeric"}),
              open_store(dim=16, schema={"g": "tag", "n": "numeric"},
                         hot={"redis_url": redis_server.url, "backend": "search"})]
    assert isinstance(stores[0].hot, ClusterHotTier) and not isinstance(stores[1].hot, ClusterHotTier)
    for s in stores:
        s.upsert(list(range(2000)), v, meta)
    qs = vectors(25, seed=2)
    for flt in (None, {"g": "3"}, {"n": {"$lt": 20}, "g": {"$ne": "1"}}):
        allowed = np.array([flt is None or (
            (m["g"] == flt["g"]) if "n" not in flt else (m["n"] < 20 and m["g"] != "1")) for m in meta])
        rows = np.flatnonzero(allowed)
        expect = rows[brute_force(v[rows], qs, 10, metric="cosine")].tolist()
        answers = [[h.ids() for h in s.query_batch(qs, k=10, filter=flt, ef=2000)] for s in stores]
        assert answers[0] == answers[1] == expect
        single = [stores[0].query(q, k=10, filter=flt, ef=2000) for q in qs[:5]]
        assert [h.ids() for h in single] == expect[:5]
        ref = [stores[1].query(q, k=10, filter=flt, ef=2000) for q in qs[:5]]
        for a, b in zip(single, ref, strict=True):
            np.testing.assert_allclose(a.distances(), b.distances(), atol=1e-5)
            assert not a.partial


def test_a_killed_master_gives_partial_answers_then_comes_back(open_store, own_cluster):
    store = open_store(dim=16, hot={"redis_url": own_cluster.url, "socket_timeout": "1s"})
    v = vectors(900, seed=3)
    store.upsert(list(range(900)), v)
    victim = shard_of_server(store, own_cluster, 2)
    on_victim = {i for i in range(900) if store.hot.owner(store.catalog.iid(i)) is victim}
    assert 200 < len(on_victim) < 400
    others = np.array(sorted(set(range(900)) - on_victim))
    q = vectors(1, seed=4)[0]
    own_cluster.servers[2].kill()  # SIGKILL; the node has no persistence: it comes back empty
    try:
        hits = store.query(q, k=10, ef=1000)
        assert hits.partial and hits.tiers["hot"].ok
        assert list(hits.tiers["hot"].details["shard_errors"]) == [victim.node]
        assert "TierUnavailableError" in hits.tiers["hot"].details["shard_errors"][victim.node]
        assert hits.ids() == others[brute_force(v[others], q[None], 10, metric="cosine")[0]].tolist()
        with pytest.raises(TierUnavailableError, match="part of it did not answer"):
            store.query(q, k=10, strict=True)
        t0 = time.monotonic()
        batch = store.query_batch(v[:3], k=5)  # the master is backing off: no wait for it
        assert time.monotonic() - t0 < 0.5 and all(h.partial for h in batch)
        # a write that touches the dead master is durable in the catalog and indexed later
        with pytest.raises(TierUnavailableError) as info:
            store.upsert(list(range(900, 960)), vectors(60, seed=5))
        assert info.value.durable
        assert store.delete([sorted(on_victim)[0], int(others[0])]) == 2
        assert not store.stats()["tiers"]["hot"]["ok"] or store.stats()["tiers"]["hot"]["shards_down"]
    finally:
        own_cluster.servers[2].start()
        own_cluster.wait_ok()
    hits = wait_complete(store, q, 10)
    assert not hits.partial, hits.tiers["hot"].details
    live = np.array(sorted(set(range(960)) - {sorted(on_victim)[0], int(others[0])}))
    allv = np.concatenate([v, vectors(60, seed=5)])
    assert hits.ids() == live[brute_force(allv[live], q[None], 10, metric="cosine")[0]].tolist()
    assert store.hot.count() == len(live) == len(store)
    assert store.stats()["catalog"]["pending_index_updates"] == 0 and store.verify()["ok"]


def test_a_stopped_master_times_out_into_a_partial_answer(open_store, own_cluster):
    store = open_store(dim=16, hot={"redis_url": own_cluster.url, "socket_timeout": "1s"})
    v = vectors(600, seed=6)
    store.upsert(list(range(600)), v)
    expect = store.query(v[0], k=10, ef=1000).ids()
    pid = own_cluster.servers[1].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        hits = store.query(v[0], k=10, ef=1000)
        assert hits.partial and time.monotonic() - t0 < 4
        assert set(hits.ids()) <= set(range(600)) and len(hits) == 10
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_complete(store, v[0], 10).ids() == expect


def test_a_reshard_is_followed(open_store, own_cluster):
    store = open_store(dim=16, schema={"g": "tag"}, hot={"redis_url": own_cluster.url})
    v = vectors(1500, seed=7)
    store.upsert(list(range(1500)), v, [{"g": str(i % 3)} for i in range(1500)])
    qs = vectors(10, seed=8)
    expect = [h.ids() for h in store.query_batch(qs, k=10, ef=1000)]
    before = {sh.node: set(store.hot.slots_of(sh).tolist()) for sh in store.hot.shards}
    src = shard_of_server(store, own_cluster, 0)
    # 1. a range of node 0's slots (not the one its index is named after) moves to node 1, keys and all
    moved_slots = sorted(before[src.node])[:300]
    assert own_cluster.move_slots(moved_slots, 0, 1) > 0
    # writes to the moved keys follow the MOVED replies (the slot map is re-read, the write redone)
    movers = [i for i in range(1500) if store.hot.slot(store.catalog.iid(i)) in set(moved_slots)][:20]
    store.upsert(movers, v[movers] * 1.01, [{"g": "x"}] * len(movers))
    assert sorted(store.query(v[movers[0]], k=50, filter={"g": "x"}, ef=1000).ids()) == sorted(movers)
    store.hot.refresh_topology()
    dst = shard_of_server(store, own_cluster, 1)
    assert set(moved_slots) <= set(store.hot.slots_of(dst).tolist())
    assert [h.ids() for h in store.query_batch(qs, k=10, ef=1000)] == expect
    assert store.hot.count() == 1500 and store.verify()["ok"]
    # 2. the slot node 0's index is named after moves to node 2: node 0 gets a new index
    old_index = src.index
    own_cluster.move_slots([key_slot(old_index.encode())], 0, 2)
    store.hot.refresh_topology()
    assert [h.ids() for h in store.query_batch(qs, k=10, ef=1000)] == expect
    assert src.index != old_index and not any(h.partial for h in store.query_batch(qs, k=10))
    info = {sh["node"]: sh for sh in store.stats()["tiers"]["hot"]["shards"]}
    # Redis refuses FT.DROPINDEX for a name outside the node's slots: the old index is reported
    assert info[src.node].get("orphaned_indexes") == [old_index]
    with pytest.raises(redis.exceptions.MovedError):
        src.r.execute_command("FT.DROPINDEX", old_index)
    # ... unless the slot is briefly marked IMPORTING there (the operator's way out)
    assert store.hot.drop_orphaned_indexes() == [old_index]
    assert old_index.encode() not in src.r.execute_command("FT._LIST")
    assert not any(sh.get("orphaned_indexes") for sh in store.stats()["tiers"]["hot"]["shards"])
    assert [h.ids() for h in store.query_batch(qs, k=10, ef=1000)] == expect
    store.delete(movers[:5])
    assert store.hot.count() == 1495 and store.verify()["ok"]


def test_configuration_errors(open_store, tmp_path, redis_server, redis_cluster):
    with pytest.raises(ConfigError, match=r"hot\.backend: 'vectorset' is not allowed on a Redis Cluster"):
        open_store(dim=4, hot={"backend": "vectorset"})
    with pytest.raises(ConfigError, match=r"hot\.cluster: true is not allowed: .* not a Redis Cluster node"):
        open_store(dim=4, hot={"redis_url": redis_server.url, "backend": "search", "cluster": True})
    store = open_store(dim=4, hot={"cluster": True, "backend": "auto"})
    assert isinstance(store.hot, ClusterHotTier)
    with pytest.raises(ConfigError, match=r"hot\.cluster: 'sometimes'"):
        tierstore.open(path=str(tmp_path / "x"), dim=4, hot={"cluster": "sometimes"}, env={})


def test_moves_between_the_cluster_and_warm(open_store):
    """Moves (the policy's and explicit ones) go through the same cluster writes: copy, flip,
    removal from whichever master holds the vector."""
    store = open_store(dim=16, policy={"interval": 0})
    v = vectors(600, seed=9)
    store.upsert(list(range(600)), v)
    expect = [h.ids() for h in store.query_batch(v[:10], k=10, ef=1000)]
    report = store.move(list(range(0, 600, 2)), "warm")
    assert report.moved == 300 and store.hot.count() == 300
    assert [h.ids() for h in store.query_batch(v[:10], k=10, ef=1000)] == expect
    store.move(list(range(0, 600, 4)), "hot")
    assert store.hot.count() == 450 and store.verify()["ok"]
    assert [h.ids() for h in store.query_batch(v[:10], k=10, ef=1000)] == expect


def test_a_read_only_process_queries_the_cluster(open_store, tmp_path):
    store = open_store(dim=16, path=tmp_path / "ro", policy={"interval": 0})
    v = vectors(300, seed=10)
    store.upsert(list(range(300)), v)
    expect = store.query(v[3], k=5, ef=500).ids()
    cfg = store.config
    store.close()  # (one process cannot hold a store both ways; another process would keep it open)
    ro = tierstore.open(path=str(tmp_path / "ro"), dim=16, env={}, read_only=True,
                        hot={"redis_url": cfg.hot.redis_url},
                        cold={"url": cfg.cold.url, "endpoint_url": cfg.cold.endpoint_url})
    try:
        assert isinstance(ro.hot, ClusterHotTier)
        hits = ro.query(v[3], k=5, ef=500)
        assert hits.ids() == expect and not hits.partial
    finally:
        ro.close()


def test_a_failover_is_followed(open_store, tmp_path):
    """A master with a replica dies; the cluster promotes the replica (which has RediSearch's
    index and the vectors by replication) and the store re-plans onto it."""
    cluster = RedisCluster(tmp_path / "fo", masters=3, replicas=1, node_timeout_ms=1000).start()  # 3 follows 0
    try:
        store = open_store(dim=16, hot={"redis_url": cluster.urls[1], "socket_timeout": "1s"})
        v = vectors(600, seed=11)
        store.upsert(list(range(600)), v)
        expect = [h.ids() for h in store.query_batch(v[:10], k=10, ef=1000)]
        assert {sh.port for sh in store.hot.shards} == {s.port for s in cluster.servers[:3]}
        cluster.client(0).execute_command("WAIT", 1, 5000)  # the replica has every write
        cluster.servers[0].kill()
        assert store.query(v[0], k=10, ef=1000).partial  # until the failover
        cluster.wait_ok(timeout=30, nodes=[1, 2, 3])  # the replica now serves node 0's slots
        hits = wait_complete(store, v[0], 10, timeout=30)
        assert not hits.partial and hits.ids() == expect[0]
        assert {sh.port for sh in store.hot.shards} == {s.port for s in cluster.servers[1:]}
        assert [h.ids() for h in store.query_batch(v[:10], k=10, ef=1000)] == expect
        store.upsert([600], v[:1] * 2)
        assert store.hot.count() == 601 and store.verify()["ok"]
    finally:
        cluster.stop()
