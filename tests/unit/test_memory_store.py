"""A whole store on the in-memory hot tier (tierstore.testing): no Redis, no S3.

Fast checks of the store's paths through the ``hot_factory`` seam: writes to hot and warm, a
stored vector finding itself, moves both ways, deletes and updates, the merged query against an
exact numpy reference (with a filter), the policy under small capacities, a close and reopen,
and an unreachable hot tier (partial answers, durable writes indexed once it is back).
"""

from __future__ import annotations

import numpy as np
import pytest

from tierstore import TierUnavailableError, datasets, filters
from tierstore.testing import MemoryHotTier, memory_store

DIM = 16
SCHEMA = {"cluster": "tag", "rank": "numeric"}


@pytest.fixture(scope="module")
def ds() -> datasets.Dataset:
    return datasets.clustered(600, DIM, queries=40, seed=3)


def open_store(tmp_path, **kw):
    return memory_store(tmp_path, dim=DIM, schema=SCHEMA, **kw)


def fill(store, ds, n_hot: int = 300) -> None:
    """Rows [0, n_hot) hot, the rest warm."""
    n = len(ds.base)
    store.upsert(list(range(n_hot)), ds.base[:n_hot], ds.metadata[:n_hot], tier="hot")
    store.upsert(list(range(n_hot, n)), ds.base[n_hot:], ds.metadata[n_hot:], tier="warm")


def cosine_distances(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    b = base.astype(np.float64) / np.linalg.norm(base, axis=1, keepdims=True)
    return 1.0 - b @ (q.astype(np.float64) / np.linalg.norm(q))


def tier_of(store, ids) -> list[str]:
    return [r.tier for r in store.get(list(ids))]


def test_store_runs_on_the_memory_hot_tier(tmp_path, ds):
    with open_store(tmp_path) as store:
        assert isinstance(store.hot, MemoryHotTier)
        assert store._server is None and store.cold is None  # no redis-server, cold disabled
        fill(store, ds)
        st = store.stats()
        assert st["tiers"]["hot"]["backend"] == "memory" and st["tiers"]["hot"]["ok"]
        assert st["tiers"]["hot"]["count"] == 300 and st["tiers"]["warm"]["count"] == 300
        assert "cold" not in st["tiers"]


def test_each_vector_finds_itself_in_its_tier(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        assert store.catalog.counts() == {"hot": 300, "warm": 300, "cold": 0}
        assert store.hot.keys() == {store.catalog.iid(i) for i in range(300)}
        ids = list(range(0, 600, 7))
        for i, hits in zip(ids, store.query_batch(ds.base[ids], k=1), strict=True):
            assert hits.ids() == [i]
            assert hits[0].tier == ("hot" if i < 300 else "warm")
            assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
            assert hits[0].metadata == ds.metadata[i]
            assert not hits.partial


def test_moves_between_hot_and_warm(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        down, up = list(range(0, 50)), list(range(300, 350))
        assert store.move(down, "warm").moved == 50
        assert store.move(up, "hot").moved == 50
        assert set(tier_of(store, down)) == {"warm"} and set(tier_of(store, up)) == {"hot"}
        assert store.catalog.counts() == {"hot": 300, "warm": 300, "cold": 0}
        # the index follows the catalog: the moved-out copies are gone, the moved-in ones there
        iid = store.catalog.iid
        assert store.hot.keys() == {iid(i) for i in [*range(50, 300), *up]}
        for i, hits in zip(down + up, store.query_batch(ds.base[down + up], k=1), strict=True):
            assert hits.ids() == [i] and hits[0].tier == ("warm" if i < 300 else "hot")
        # and back again
        store.move(down, "hot")
        assert set(tier_of(store, down)) == {"hot"}
        assert store.verify()["ok"]


def test_deletes_and_updates(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        gone = [3, 4, 5, 400, 401]
        assert store.delete(gone) == 5
        assert store.get(gone) == [None] * 5
        assert not {store.catalog.iid(i) for i in gone} & store.hot.keys()
        for hits in store.query_batch(ds.base[gone], k=10):
            assert not set(hits.ids()) & set(gone)
        # an update is a new version, in place in hot; a warm row updated into hot leaves warm
        v_new = ds.base[[7, 500]][::-1].copy()  # swap the two vectors
        store.upsert([7, 500], v_new, [ds.metadata[7], ds.metadata[500]], tier="hot")
        assert tier_of(store, [7, 500]) == ["hot", "hot"]
        hits = store.query(v_new[0], k=1)
        assert hits.ids() == [7] and hits[0].tier == "hot"
        iid7 = store.catalog.iid(7)
        with store.catalog.read() as txn:
            version = store.catalog.entry(txn, iid7).version
        assert version == 2 and not store.hot.stale({iid7: version})
        rep = store.verify(deep=True)
        assert rep["ok"], rep["problems"]
        assert rep["hot"]["catalog"] == rep["hot"]["redis"] == 300 - 3 + 1


def test_merged_query_matches_an_exact_reference(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        truth = datasets.brute_force(ds.base, ds.queries, 10)
        results = store.query_batch(ds.queries, k=10)
        found = [h.ids() for h in results]
        assert datasets.recall_at(found, truth, 10) >= 0.95
        tiers_seen = set()
        for q, hits in zip(ds.queries, results, strict=True):
            d = [h.distance for h in hits]
            assert d == sorted(d) and len(set(hits.ids())) == len(hits) == 10
            exact = cosine_distances(ds.base[hits.ids()], q)
            assert np.allclose(d, exact, atol=1e-4)  # every tier: 1 - cos, as Redis's COSINE
            tiers_seen.update(h.tier for h in hits)
            assert hits.tiers["hot"].searched and hits.tiers["warm"].searched
        assert tiers_seen == {"hot", "warm"}


def test_filtered_query(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        tag = ds.metadata[0]["cluster"]
        flt = {"cluster": tag, "rank": {"$lt": 400}}
        rows = np.array([i for i, m in enumerate(ds.metadata) if m["cluster"] == tag and m["rank"] < 400])
        assert len(rows) >= 5
        k = min(5, len(rows))
        for q in ds.queries[:10]:
            hits = store.query(q, k=k, filter=flt)
            want = rows[np.argsort(cosine_distances(ds.base[rows], q), kind="stable")[:k]].tolist()
            assert len(set(hits.ids()) & set(want)) >= k - 1
            assert all(h.metadata["cluster"] == tag and h.metadata["rank"] < 400 for h in hits)
        # the memory tier's own filtered search agrees with the filter's reference semantics
        node = filters.compile_filter(flt, SCHEMA)
        iids, _dists, _inc = store.hot.search(ds.queries[0], 300, node)
        hot_rows = [store.catalog.user_ids([i])[0] for i in iids]
        assert set(hot_rows) == {int(r) for r in rows if r < 300}  # every match in hot, nothing else


def test_policy_with_small_capacities(tmp_path, ds):
    with open_store(tmp_path, hot={"capacity": 50}, warm={"capacity": 1000},
                    policy={"grace_period": 0, "half_life": 60, "interval": 3600}) as store:
        n = 300
        store.upsert(list(range(n)), ds.base[:n], ds.metadata[:n])  # ingest: hot up to 50, spill to warm
        assert store.catalog.counts()["hot"] == 50 and store.catalog.counts()["warm"] == n - 50
        busy = list(range(200, 220))  # warm now
        assert set(tier_of(store, busy)) == {"warm"}
        for _ in range(5):
            store.touch(busy)
        report = store.run_policy()
        assert report.moved.get("warm->hot", 0) >= len(busy)
        assert set(tier_of(store, busy)) == {"hot"}
        counts = store.catalog.counts()
        assert counts["hot"] <= 50 and sum(counts.values()) == n
        assert store.hot.count() == counts["hot"]
        assert store.verify()["ok"]
        for i, hits in zip(busy, store.query_batch(ds.base[busy], k=1), strict=True):
            assert hits.ids() == [i] and hits[0].tier == "hot"


def test_reopen_gives_the_same_answers(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        store.move(list(range(0, 20)), "warm")
        store.delete([1, 2, 350])
        before = [[(h.id, h.tier, h.distance) for h in hits] for hits in store.query_batch(ds.queries, k=10)]
        counts = store.catalog.counts()
    with open_store(tmp_path) as store:
        assert store.catalog.counts() == counts
        assert store.hot.count() == counts["hot"]  # refilled from the catalog at open
        after = [[(h.id, h.tier, h.distance) for h in hits] for hits in store.query_batch(ds.queries, k=10)]
        # the same hits; a distance may differ in its last float32 bits (the warm rows were in the
        # growing segment, scored by hnswlib, and are sealed now, scored by the numba kernels)
        assert [[h[:2] for h in q] for q in after] == [[h[:2] for h in q] for q in before]
        assert np.allclose([h[2] for q in after for h in q], [h[2] for q in before for h in q], atol=1e-5)
        assert store.verify()["ok"]


def test_hot_tier_down_partial_answers_and_durable_writes(tmp_path, ds):
    with open_store(tmp_path) as store:
        fill(store, ds)
        store.hot.down = "connection refused"
        hits = store.query(ds.base[5], k=3)
        assert hits.partial and not hits.tiers["hot"].ok
        assert 5 not in hits.ids() and {h.tier for h in hits} == {"warm"}
        with pytest.raises(TierUnavailableError) as err:
            store.upsert([1000], ds.base[[9]] * 0.5 + ds.base[[10]] * 0.5, tier="hot")
        assert err.value.durable
        assert store.catalog.iid(1000) in set(store.catalog.pending())
        store.hot.down = None
        store.flush()  # applies the pending index work
        assert not store.catalog.has_pending()
        hits = store.query(ds.base[[9]] * 0.5 + ds.base[[10]] * 0.5, k=1)
        assert hits.ids() == [1000] and hits[0].tier == "hot" and not hits.partial
        assert store.verify()["ok"]
