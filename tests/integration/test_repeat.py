"""The repeat skip (engine.query.RepeatCache): a query asked again searches only Redis while warm and
cold cannot change its answer, and gives exactly the answer a full search gives."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

DIM = 8


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def store(open_store):
    """400 vectors: the 20 nearest to Q in hot, the rest split between warm and cold."""
    rng = np.random.default_rng(5)
    q = unit(rng.standard_normal(DIM))
    x = unit(rng.standard_normal((400, DIM)))
    order = np.argsort(-(x @ q))
    s = open_store(dim=DIM, hot={"capacity": 100}, policy={"interval": 0})
    near, rest = order[:20], order[20:]
    s.upsert(near.tolist(), x[near], tier="hot")
    s.upsert(rest[::2].tolist(), x[rest[::2]], tier="warm")
    s.upsert(rest[1::2].tolist(), x[rest[1::2]], tier="cold")
    s.q, s.x = q, x
    return s


def full(store, q, **kw):
    """The same search without the repeat skip (batches never use it)."""
    return store.query_batch(np.stack([q, q]), **kw)[0]


def skipped(hits) -> bool:
    return all(not hits.tiers[t].searched and "skipped" in hits.tiers[t].details for t in ("warm", "cold"))


def test_repeat_searches_hot_only_and_answers_the_same(store):
    first = store.query(store.q, k=10)
    assert not skipped(first) and all(h.tier == "hot" for h in first)
    again = store.query(store.q, k=10)
    assert skipped(again)
    assert again.ids() == first.ids() == full(store, store.q, k=10).ids()
    np.testing.assert_allclose(again.distances(), first.distances())
    assert store.stats()["repeat_cache"]["skips"] == 1
    # another k, filter or tier list is another query
    assert not skipped(store.query(store.q, k=11))
    assert not skipped(store.query(store.q, k=10, ef=200))


def test_a_write_to_a_lower_tier_ends_the_skip(store):
    store.query(store.q, k=10)
    assert skipped(store.query(store.q, k=10))
    store.upsert(["new"], store.q[None, :], tier="cold")  # the exact match, where only a full search finds it
    hits = store.query(store.q, k=10)
    assert not skipped(hits) and hits[0].id == "new" and hits[0].tier == "cold"
    assert hits.ids() == full(store, store.q, k=10).ids()


def test_a_demotion_ends_the_skip(store):
    first = store.query(store.q, k=10)
    store.move([first[0].id], "warm")
    hits = store.query(store.q, k=10)
    assert not skipped(hits)
    assert hits.ids() == first.ids() and hits[0].tier == "warm"


def test_no_skip_when_hot_is_not_enough(store):
    # k = 30: the 20 hot vectors cannot fill the answer, so the lower tiers are always searched
    first = store.query(store.q, k=30)
    again = store.query(store.q, k=30)
    assert not skipped(again) and again.ids() == first.ids()
    # a query near lower-tier vectors: hot's k-th is not closer than what warm/cold offered
    far = store.x[int(np.argsort(store.x @ store.q)[0])]
    store.query(far, k=5)
    again = store.query(far, k=5)
    assert not skipped(again) and again.ids() == full(store, far, k=5).ids()


def test_random_writes_moves_and_policy_keep_the_skip_exact(store):
    rng = np.random.default_rng(9)
    queries = [store.q] + [unit(store.q + 0.3 * rng.standard_normal(DIM)) for _ in range(3)]
    ids = [h.id for h in store.query(store.q, k=60)]
    skips = 0
    for step in range(60):
        op = step % 6
        if op == 0:
            store.delete([ids[rng.integers(len(ids))]])
        elif op == 1:
            store.move([i for i in [ids[rng.integers(len(ids))]] if store.get([i])[0]], "hot")
        elif op == 2:
            store.move([i for i in [ids[rng.integers(len(ids))]] if store.get([i])[0]], "warm")
        elif op == 3:  # new vectors, near and far, into the lower tiers
            v = unit(queries[rng.integers(4)] + rng.uniform(0.05, 2.0) * rng.standard_normal(DIM))
            store.upsert([f"n{step}"], v[None, :], tier=str(rng.choice(["warm", "cold"])))
        elif op == 4:
            store.run_policy()
        for q in queries:
            for _ in range(2):  # the second ask may skip
                hits = store.query(q, k=10)
                skips += skipped(hits)
                assert hits.ids() == full(store, q, k=10).ids(), step
    assert skips > 0


def test_disabled(open_store):
    s = open_store(dim=DIM, store={"repeat_cache": 0}, policy={"interval": 0})
    v = unit(np.random.default_rng(1).standard_normal((50, DIM)))
    s.upsert(list(range(50)), v, tier="hot")
    s.upsert(list(range(50, 100)), v, tier="warm")
    s.query(v[0], k=3)
    assert not skipped(s.query(v[0], k=3))
    assert s.stats()["repeat_cache"] == {"size": 0}


def test_far_writes_to_lower_tiers_keep_the_skip(store):
    first = store.query(store.q, k=10)
    far = unit(-store.q[None, :] + 0.01)  # about the farthest a vector can be
    store.upsert(["far-warm"], far, tier="warm")
    store.upsert(["far-cold"], far, tier="cold")
    again = store.query(store.q, k=10)
    assert skipped(again) and again.ids() == first.ids() == full(store, store.q, k=10).ids()
    assert store.stats()["repeat_cache"]["carried"] == 1
    # a near one is not: the query searches the lower tiers again and finds it
    near = unit(store.q[None, :] + 0.01)
    store.upsert(["near-warm"], near, tier="warm")
    hits = store.query(store.q, k=10)
    assert not skipped(hits) and hits[0].id == "near-warm" and hits.ids() == full(store, store.q, k=10).ids()


def test_a_seal_breaks_the_chain(store):
    store.query(store.q, k=10)
    store.upsert(["far"], unit(-store.q[None, :] + 0.01), tier="warm")
    store.flush()  # seals the growing warm segment: rows move to a segment searched differently
    hits = store.query(store.q, k=10)
    assert not skipped(hits) and hits.ids() == full(store, store.q, k=10).ids()
    assert skipped(store.query(store.q, k=10))
