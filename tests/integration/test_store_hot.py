"""The store on the hot tier alone, against a real redis-server: every test runs on both hot
backends (RediSearch and Redis 8 vector sets) and on RediSearch over a 3-master Redis Cluster."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tierstore
from tierstore import datasets, filters
from tierstore.errors import (
    CapacityError,
    ClosedError,
    ConfigError,
    DimensionError,
    InvalidInputError,
    SchemaError,
    StoreLockedError,
)


def rng_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module", params=["search", "vectorset", "search-cluster"])
def hot_backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def wordnet_store(tmp_path_factory, redis_server, wordnet_20k, hot_backend, hot_target, request):
    ds = wordnet_20k
    store = tierstore.open(path=str(tmp_path_factory.mktemp("wn")), dim=ds.base.shape[1], env={},
                           schema={"pos": "tag", "lexname": "tag", "nlemmas": "numeric"},
                           hot={**hot_target(request, hot_backend, redis_server), "capacity": 50_000})
    for s in range(0, len(ds.base), 2000):
        store.upsert(list(range(s, s + 2000)), ds.base[s : s + 2000], ds.metadata[s : s + 2000])
    yield store
    store.close()


def test_recall_at_10_on_wordnet(wordnet_store, wordnet_20k):
    ds = wordnet_20k
    found = [h.ids() for h in wordnet_store.query_batch(ds.queries, k=10)]
    recall = datasets.recall_at(found, ds.gt, 10)
    assert recall >= 0.95, recall
    single = [wordnet_store.query(q, k=10).ids() for q in ds.queries[:50]]
    assert single == found[:50]


def test_distances_are_exact_cosine(wordnet_store, wordnet_20k):
    ds = wordnet_20k
    hits = wordnet_store.query(ds.queries[0], k=10)
    rows = np.array(hits.ids())
    expect = 1.0 - ds.base[rows] @ ds.queries[0]
    np.testing.assert_allclose(hits.distances(), expect, atol=2e-4)
    assert list(hits.distances()) == sorted(hits.distances())
    assert hits.partial is False and hits.tiers["hot"].ok and hits.tiers["hot"].returned == 10


FILTERS = [
    {"lexname": "noun.animal"},
    {"pos": {"$in": ["v", "r"]}, "nlemmas": {"$gte": 4}},
    {"$or": [{"lexname": "noun.plant"}, {"nlemmas": {"$gt": 9}}]},
    {"lexname": {"$ne": "noun.Tops"}, "nlemmas": {"$lt": 2}, "pos": "a"},
    {"$and": [{"pos": "s"}, {"nlemmas": {"$lte": 1}}, {"lexname": {"$in": ["adj.all", "adj.pert"]}}]},
    {"lexname": {"$in": []}},
    {"lexname": {"$nin": ["noun.animal", "noun.plant", "noun.Tops"]}, "pos": {"$nin": ["n"]}},
    {"nlemmas": {"$nin": [1, 2]}, "$or": [{"nlemmas": {"$exists": True}}, {"pos": "v"}]},
    {"nlemmas": {"$exists": False}},
]


@pytest.mark.parametrize("flt", FILTERS)
def test_filtered_results_equal_numpy_evaluation(wordnet_store, wordnet_20k, flt):
    ds = wordnet_20k
    node = filters.compile_filter(flt, wordnet_store.schema)
    allowed = np.array([filters.matches(node, m) for m in ds.metadata])
    # k larger than the number of matches: the result set must be exactly the matching set ...
    q = ds.queries[3]
    n_allowed = int(allowed.sum())
    if n_allowed <= 2000:
        hits = wordnet_store.query(q, k=max(n_allowed, 1) + 50, filter=flt)
        assert sorted(hits.ids()) == np.flatnonzero(allowed).tolist()
    # ... and the top 10 equal a numpy brute force over the allowed rows (recall for big sets)
    rows = np.flatnonzero(allowed)
    hits = wordnet_store.query(q, k=10, filter=flt)
    if len(rows):
        d = 1.0 - ds.base[rows] @ q
        expect = rows[np.argsort(d)[:10]].tolist()
        assert len(set(hits.ids()) & set(expect)) >= 9
        assert all(allowed[i] for i in hits.ids())
    else:
        assert hits.ids() == []


def test_tricky_tag_values_round_trip(open_store):
    values = ["a,b", "{x}", "with space", "ünï©ødé", "-neg", "@at", "a|b", "*", "", "$in", "x" * 300,
              "'\"", "tab\tsep", "back\\slash"]
    store = open_store(dim=4, schema={"t": "tag", "n": "numeric"})
    vecs = rng_vectors(len(values) + 1, 4)
    metas = [{"t": v, "n": i} for i, v in enumerate(values)] + [{"t": values}]
    store.upsert(list(range(len(vecs))), vecs, metas)
    for i, v in enumerate(values):
        got = sorted(store.query(vecs[0], k=50, filter={"t": v}).ids())
        assert got == [i, len(values)], v
        got = sorted(store.query(vecs[0], k=50, filter={"t": {"$ne": v}}).ids())
        assert got == [j for j in range(len(values)) if j != i], v
    assert sorted(store.query(vecs[0], k=50, filter={"n": {"$gt": 3, "$lte": 5}}).ids()) == [4, 5]
    # a vector with no value for a field never matches an equality, always a $ne
    assert len(store.query(vecs[0], k=50, filter={"n": {"$ne": 1}})) == len(values)


def test_l2_and_ip_metrics(open_store, hot_backend):
    base = rng_vectors(300, 16, seed=3)
    q = rng_vectors(1, 16, seed=4)[0]
    for metric, dist in (("l2", ((base - q) ** 2).sum(1)), ("ip", 1.0 - base @ q)):
        if hot_backend == "vectorset":  # vector sets normalise at insert: cosine only, said at open
            with pytest.raises(ConfigError, match=r"hot\.backend: 'vectorset' .*store\.metric = 'cosine'"):
                open_store(dim=16, metric=metric)
            continue
        store = open_store(dim=16, metric=metric)
        store.upsert(list(range(300)), base)
        hits = store.query(q, k=5, ef=300)
        assert hits.ids() == np.argsort(dist)[:5].tolist()
        np.testing.assert_allclose(hits.distances(), np.sort(dist)[:5], rtol=1e-4, atol=1e-4)


def test_get_update_delete_scan(open_store):
    store = open_store(dim=4, schema={"kind": "tag"})
    vecs = rng_vectors(5, 4)
    assert store.upsert(["a", "b", "c", "d", "e"], vecs, [{"kind": "x", "note": "free text"}] + [None] * 4) == 5
    rec = store.get(["a", "missing"])
    assert rec[1] is None
    assert rec[0].id == "a" and rec[0].tier == "hot" and rec[0].metadata == {"kind": "x", "note": "free text"}
    np.testing.assert_array_equal(rec[0].vector, vecs[0])
    # update: new vector, and the tag field removed -> no longer matches the filter
    store.upsert(["a"], vecs[1:2] * 2, [{"note": "changed"}])
    assert store.query(vecs[0], k=5, filter={"kind": "x"}).ids() == []
    assert store.get(["a"])[0].metadata == {"note": "changed"}
    assert store.delete(["b", "b2", "c"]) == 2
    assert store.delete(["b"]) == 0
    assert "b" not in store.query(vecs[1], k=5).ids()
    seen = [r.id for batch in store.scan(batch_size=2) for r in batch]
    assert sorted(seen) == ["a", "d", "e"] and len(store) == 3
    assert store.get([]) == [] and store.delete([]) == 0


def test_int_and_str_ids_are_distinct(open_store):
    store = open_store(dim=4)
    v = rng_vectors(2, 4)
    store.upsert([5], v[:1])
    store.upsert(["5"], v[1:])
    assert {type(r.id) for r in store.get([5]) + store.get(["5"])} == {int, str}
    assert sorted(map(str, store.query(v[0], k=2).ids())) == ["5", "5"]


BAD_WRITES = [
    (DimensionError, lambda v: ([1], np.ones((1, 5)))),
    (DimensionError, lambda v: ([1], np.full((1, 4), np.nan))),
    (DimensionError, lambda v: ([1], np.array([[1, np.inf, 0, 0]]))),
    (DimensionError, lambda v: ([1], np.zeros((1, 4)))),  # cosine of a zero vector
    (DimensionError, lambda v: ([1], [[1, 2], [3]])),
    (DimensionError, lambda v: ([1], [["a", "b", "c", "d"]])),
    (InvalidInputError, lambda v: ([], np.empty((0, 4)))),
    (InvalidInputError, lambda v: ([1, 2, 1], v[:3])),
    (InvalidInputError, lambda v: ([1, "2"], v[:2])),
    (InvalidInputError, lambda v: ([1, 2], v[:3])),
    (InvalidInputError, lambda v: ([True], v[:1])),
    (InvalidInputError, lambda v: ([1.5], v[:1])),
    (SchemaError, lambda v: ([1], v[:1], [{"kind": 3}])),
    (SchemaError, lambda v: ([1], v[:1], [{"price": "cheap"}])),
    (SchemaError, lambda v: ([1], v[:1], [{"other": {"nested": {1, 2}}}])),  # a set: JSON has none
    (SchemaError, lambda v: ([1], v[:1], [{"other": b"bytes"}])),
    (SchemaError, lambda v: ([1], v[:1], [{"\x00text": "reserved"}])),
    (SchemaError, lambda v: ([1], v[:1], [{"other": float("nan")}])),
    (InvalidInputError, lambda v: ([1], v[:1], [{"kind": "a"}, {"kind": "b"}])),
    (InvalidInputError, lambda v: ([1], v[:1], None, "attic")),
]


@pytest.mark.parametrize("exc,args", BAD_WRITES)
def test_bad_writes_raise_and_write_nothing(open_store, exc, args):
    store = open_store(dim=4, schema={"kind": "tag", "price": "numeric"})
    v = rng_vectors(3, 4)
    store.upsert([100], v[:1])
    with pytest.raises(exc) as info:
        store.upsert(*args(v))
    assert isinstance(info.value, ValueError) and str(info.value)
    assert len(store) == 1 and store.query(v[0], k=10).ids() == [100]


BAD_QUERIES = [
    (DimensionError, {"vector": np.ones(5)}),
    (DimensionError, {"vector": np.ones((2, 4))}),
    (DimensionError, {"vector": [np.nan, 1, 1, 1]}),
    (InvalidInputError, {"k": 0}),
    (InvalidInputError, {"k": -3}),
    (InvalidInputError, {"k": 2.5}),
    (InvalidInputError, {"ef": 0}),
    (InvalidInputError, {"tiers": ["attic"]}),
    (SchemaError, {"filter": {"undeclared": "x"}}),
    (SchemaError, {"filter": {"kind": {"$gt": 3}}}),
    (SchemaError, {"filter": {"price": {"$regex": "x"}}}),
    (SchemaError, {"filter": {"$or": "nope"}}),
    (SchemaError, {"filter": ["kind", "x"]}),
    (SchemaError, {"filter": {"price": "ten"}}),
]


@pytest.mark.parametrize("exc,kw", BAD_QUERIES)
def test_bad_queries_raise_typed_errors(open_store, exc, kw):
    store = open_store(dim=4, schema={"kind": "tag", "price": "numeric"})
    store.upsert([1], rng_vectors(1, 4))
    kw = {"vector": np.ones(4), **kw}
    with pytest.raises(exc):
        store.query(**kw)


def test_config_typo_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"hot\.capasity: unknown key \(did you mean 'capacity'"):
        tierstore.open(path=str(tmp_path), dim=4, hot={"capasity": 5}, env={})
    cfg = tmp_path / "t.toml"
    cfg.write_text('[store]\ndim = 4\nmetric = "cosin"\n')
    with pytest.raises(ConfigError, match=r"store\.metric: 'cosin'"):
        tierstore.open(cfg, env={})


def test_capacity_is_enforced(open_store):
    """An explicit tier= is refused when full; ingest without one spills to the next tier."""
    store = open_store(dim=4, hot={"capacity": 10})
    v = rng_vectors(14, 4)
    store.upsert(list(range(8)), v[:8])
    with pytest.raises(CapacityError, match=r"hot\.capacity = 10"):
        store.upsert(list(range(8, 11)), v[8:11], tier="hot")
    assert len(store) == 8
    store.upsert(list(range(6, 10)), v[6:10], tier="hot")  # 2 updates + 2 new: exactly full
    assert len(store) == 10
    store.delete([0])
    store.upsert([11], v[11:12], tier="hot")
    assert len(store) == 10
    # default placement: the hot tier never goes past its capacity, the rest goes warm
    store.upsert([12, 13, 1], v[12:14].tolist() + [v[1].tolist()])
    assert store.stats()["tiers"]["hot"]["count"] == 10
    assert [r.tier for r in store.get([12, 13, 1])] == ["warm", "warm", "hot"]
    assert store.stats()["queries"]["spilled"] == 2
    assert store.verify()["ok"]


def test_reopen_keeps_data_and_checks_identity(open_store, tmp_path, redis_server):
    path = tmp_path / "keep"
    store = open_store(path=path, dim=4, schema={"kind": "tag"})
    v = rng_vectors(20, 4)
    store.upsert(list(range(20)), v, [{"kind": str(i % 2)} for i in range(20)])
    store.touch([1, 1, 2])
    before = store.query(v[0], k=5, filter={"kind": "0"}).ids()
    store.close()
    with pytest.raises(ConfigError, match="store.dim"):
        open_store(path=path, dim=8)
    with pytest.raises(ConfigError, match="store.metric"):
        open_store(path=path, dim=4, metric="l2", schema={"kind": "tag"})
    with pytest.raises(ConfigError, match="schema.kind"):
        open_store(path=path, dim=4, schema={"kind": "numeric"})
    again = open_store(path=path, dim=4, schema={"kind": "tag", "extra": "numeric"})
    assert again.query(v[0], k=5, filter={"kind": "0"}).ids() == before
    assert again.access.decayed(slots_of(again, [1]))[0] > 1.5  # touched twice before the restart
    assert again.stats()["access"]["recorded"] >= 3
    again.upsert([99], v[:1], [{"extra": 5}])  # the newly declared field is indexed
    assert again.query(v[0], k=5, filter={"extra": 5}).ids() == [99]
    assert len(again.query(v[0], k=50, filter={"extra": {"$ne": 4}})) == 21  # old vectors lack it


def test_second_open_is_locked_and_close_is_idempotent(open_store, tmp_path):
    store = open_store(path=tmp_path / "x", dim=4)
    with pytest.raises(StoreLockedError):
        open_store(path=tmp_path / "x", dim=4)
    store.close()
    store.close()
    with pytest.raises(ClosedError):
        store.query(np.ones(4))
    open_store(path=tmp_path / "x", dim=4).close()


def test_concurrent_queries_and_writes(open_store):
    store = open_store(dim=8)
    v = rng_vectors(2000, 8)
    store.upsert(list(range(1000)), v[:1000])
    errors: list[BaseException] = []
    deleted = set(range(0, 1000, 3))
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                for h in store.query_batch(v[:20], k=10):
                    assert len(h) == 10 and len(set(h.ids())) == 10
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for s in range(1000, 2000, 100):
        store.upsert(list(range(s, s + 100)), v[s : s + 100])
    store.delete(sorted(deleted))
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(store) == 2000 - len(deleted)
    for h in store.query_batch(v[:50], k=20):
        assert not set(h.ids()) & deleted


def test_stats_report_hot_tier(open_store):
    store = open_store(dim=4)
    store.upsert(list(range(10)), rng_vectors(10, 4))
    store.query(np.ones(4), k=3)
    st = store.stats()
    assert st["tiers"]["hot"]["count"] == 10 and st["tiers"]["hot"]["num_docs"] == 10
    assert st["tiers"]["hot"]["ok"] and st["queries"]["queries"] == 1
    assert st["queries"]["latency_ms"]["p50"] > 0 and st["store"]["vectors"] == 10


def test_float16_vectors_keep_exact_distances(open_store, hot_backend, tmp_path):
    """hot.vector_type = "float16" (RediSearch): half the vector bytes in Redis, answers re-scored
    on the exact float32 vectors; switching the type back re-indexes from the catalog."""
    if hot_backend == "vectorset":
        # a parametrisation that does not apply (a RediSearch-only setting), not a missing server
        pytest.skip("hot.vector_type is RediSearch's (vector sets have hot.quantization)")
    base, qs = rng_vectors(1000, 32, seed=7), rng_vectors(10, 32, seed=8)
    d = 1.0 - (qs @ base.T) / np.outer(np.linalg.norm(qs, axis=1), np.linalg.norm(base, axis=1))
    path = tmp_path / "f16"
    for vtype in ("float16", "float32"):
        store = open_store(path=path, dim=32, hot={"vector_type": vtype})
        if vtype == "float16":
            store.upsert(list(range(1000)), base)
        for t in getattr(store.hot, "shards", [store.hot]):
            assert t._vector_type_of(t._index_info()) == vtype.upper()
        assert store.hot.count() == 1000
        for i, h in enumerate(store.query_batch(qs, k=10, ef=500)):
            assert h.ids() == np.argsort(d[i])[:10].tolist()
            np.testing.assert_allclose(h.distances(), np.sort(d[i])[:10], atol=1e-5)
        assert store.query(qs[0], k=10, ef=500).ids() == np.argsort(d[0])[:10].tolist()
        store.close()


def slots_of(store, ids):
    """The policy slots of ``ids`` (read from the catalog)."""
    with store.catalog.read() as txn:
        return np.asarray([store.catalog.entry(txn, store.catalog.iid(i)).slot for i in ids], np.int64)
