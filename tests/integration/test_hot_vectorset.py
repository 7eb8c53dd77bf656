"""What only the vector-set hot backend has: the automatic choice on a Redis 8 without RediSearch,
quantisation, switching backends on one Redis, and the FILTER expressions against the server's own
evaluator. (The behaviour both backends share is tested on both in test_store_hot.py and
test_faults.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import tierstore
from tierstore import datasets, filters
from tierstore.errors import ConfigError
from tierstore.tiers.hot import SearchHotTier, VectorSetHotTier


def rng_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def open_on(tmp_path, url: str, name: str = "s", **kw) -> tierstore.TierStore:
    kw.setdefault("dim", 8)
    hot = {"redis_url": url, **kw.pop("hot", {})}
    return tierstore.open(path=str(tmp_path / name), env={}, hot=hot, cold={"enabled": False}, **kw)


# --- choosing the backend ------------------------------------------------------------------------


def test_auto_picks_vector_sets_without_the_search_module(tmp_path, redis_server_nosearch):
    v = rng_vectors(50, 8)
    with open_on(tmp_path, redis_server_nosearch.url, schema={"g": "tag"}) as store:
        assert isinstance(store.hot, VectorSetHotTier)
        store.upsert(list(range(50)), v, [{"g": str(i % 2)} for i in range(50)])
        assert store.query(v[3], k=1).ids() == [3]
        assert store.stats()["tiers"]["hot"]["backend"] == "vectorset"
    # reopening finds its vectors (verify: same owner, same backend, counts agree)
    with open_on(tmp_path, redis_server_nosearch.url, schema={"g": "tag"}) as store:
        assert store.hot.stats["rebuilds"] == 0
        assert sorted(store.query(v[3], k=50, filter={"g": "1"}).ids()) == list(range(1, 50, 2))


def test_auto_picks_search_when_the_module_is_there(tmp_path, redis_server):
    with open_on(tmp_path, redis_server.url) as store:
        assert isinstance(store.hot, SearchHotTier)


def test_explicit_search_without_the_module_is_a_config_error(tmp_path, redis_server_nosearch):
    with pytest.raises(ConfigError, match=r"^hot\.backend: 'search' is not allowed: .* has no RediSearch module"):
        open_on(tmp_path, redis_server_nosearch.url, hot={"backend": "search"})


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_auto_without_the_module_refuses_other_metrics(tmp_path, redis_server_nosearch, metric):
    with pytest.raises(ConfigError, match=r"^hot\.backend: 'auto' is not allowed: .* no RediSearch module and "
                                          r"vector sets .* only support store\.metric = 'cosine'"):
        open_on(tmp_path, redis_server_nosearch.url, metric=metric)


# --- quantisation ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordnet_5k(wordnet_20k) -> datasets.Dataset:
    ds = wordnet_20k
    base = ds.base[:5000]
    queries = ds.queries[:100]
    return datasets.Dataset(name="wordnet-5k", base=base, queries=queries, metadata=ds.metadata[:5000],
                            gt=datasets.brute_force(base, queries, 10))


def test_q8_and_noquant_recall_and_memory(tmp_path, redis_server, wordnet_5k):
    """Q8 (the default) costs far less memory than NOQUANT for about the same recall, and both
    return exact distances (the hot tier re-scores its candidates on the float32 vectors)."""
    ds = wordnet_5k
    got = {}
    for quant in ("q8", "noquant"):
        with open_on(tmp_path, redis_server.url, name=quant, dim=ds.base.shape[1],
                     hot={"backend": "vectorset", "quantization": quant}) as store:
            store.upsert(list(range(len(ds.base))), ds.base)
            hits = store.query_batch(ds.queries, k=10)
            recall = datasets.recall_at([h.ids() for h in hits], ds.gt, 10)
            h = hits[0]
            rows, q = ds.base[h.ids()].astype(np.float64), ds.queries[0].astype(np.float64)
            cos = rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
            np.testing.assert_allclose(h.distances(), 1.0 - cos, atol=1e-6)
            info = store.stats()["tiers"]["hot"]
            got[quant] = (recall, info["vector_index_bytes"] / len(ds.base))
            assert info["quantization"] == quant
            # the estimate hot.capacity_bytes divides by is close to what Redis reports
            assert 0.8 < store.hot.bytes_per_vector() / got[quant][1] < 1.25
    print("recall@10, bytes/vector:", got)
    assert got["q8"][0] >= 0.97 and got["noquant"][0] >= 0.97
    assert got["q8"][1] < 0.75 * got["noquant"][1]


def test_changing_quantization_or_m_rebuilds_the_set(tmp_path, redis_server):
    v = rng_vectors(300, 16, seed=1)
    path = tmp_path / "q"
    with open_on(tmp_path, redis_server.url, name="q", dim=16, hot={"backend": "vectorset"}) as store:
        store.upsert(list(range(300)), v)
        before = [h.ids() for h in store.query_batch(v[:10], k=5, ef=300)]
    for hot in ({"quantization": "noquant"}, {"quantization": "noquant", "m": 8}):
        with open_on(path.parent, redis_server.url, name="q", dim=16, hot={"backend": "vectorset", **hot}) as store:
            assert store.hot.stats["index_recreated"] == 1
            info = {k.decode(): v for k, v in store.hot.r.execute_command("VINFO", store.hot.vset_key).items()}
            assert info["quant-type"] == b"f32" and info["hnsw-m"] == hot.get("m", 16) and info["size"] == 300
            assert [h.ids() for h in store.query_batch(v[:10], k=5, ef=300)] == before


def test_switching_backends_on_one_redis_frees_the_other_backends_keys(tmp_path, redis_server):
    v = rng_vectors(200, 8, seed=2)
    schema = {"g": "tag", "n": "numeric"}
    metas = [{"g": str(i % 3), "n": i} for i in range(200)]
    flt = {"g": "1", "n": {"$lt": 100}}
    answers = []
    for backend in ("search", "vectorset", "search"):
        with open_on(tmp_path, redis_server.url, name="sw", schema=schema, hot={"backend": backend}) as store:
            if not len(store):
                store.upsert(list(range(200)), v, metas)
            answers.append([h.ids() for h in store.query_batch(v[:10], k=5, filter=flt, ef=200)])
            r, prefix = store.hot.r, store.hot.prefix
            keys = {k.decode() for k in r.scan_iter(match=prefix + "*")}
            if backend == "search":
                assert f"{prefix}vset" not in keys and len(keys) == 201  # meta + one hash per vector
            else:
                assert keys == {f"{prefix}meta", f"{prefix}vset"}
                assert f"{prefix}idx".encode() not in r.execute_command("FT._LIST")
            assert store.verify()["ok"]
    assert answers[0] == answers[1] == answers[2]


# --- filters against the server's own expression evaluator -------------------------------------------

SCHEMA = {"t": "tag", "u": "tag", "x": "numeric", "y": "numeric"}
NUMBERS = [0.0, -0.0, 1.0, -1.0, 0.1, 2.5, -3.75, 1e-5, -1e-7, 1e20, -1e300, 1e-300, 5e-324, 123456789.123]
TAGS = ["a", "b", "a,b", "with space", "ünï", '"q"', "\\", ""]


def random_meta(rng: np.random.Generator) -> dict:
    meta: dict = {}
    if rng.random() < 0.8:
        meta["t"] = TAGS[rng.integers(len(TAGS))]
    if rng.random() < 0.5:
        meta["u"] = [TAGS[i] for i in rng.choice(len(TAGS), int(rng.integers(0, 3)), replace=False)]
    if rng.random() < 0.8:
        meta["x"] = NUMBERS[rng.integers(len(NUMBERS))]
    if rng.random() < 0.6:
        meta["y"] = int(rng.integers(-3, 4))
    return meta


def random_filter(rng: np.random.Generator, depth: int = 0) -> dict:
    r = rng.random()
    if depth < 2 and r < 0.3:
        op = "$and" if rng.random() < 0.5 else "$or"
        return {op: [random_filter(rng, depth + 1) for _ in range(int(rng.integers(1, 4)))]}
    field = ["t", "u", "x", "y"][rng.integers(4)]
    if field in ("t", "u"):
        pick = lambda: TAGS[rng.integers(len(TAGS))]  # noqa: E731
        return {field: rng.choice([pick(), {"$ne": pick()}, {"$in": [pick(), pick()]}, {"$nin": [pick(), pick()]}])}
    num = lambda: NUMBERS[rng.integers(len(NUMBERS))] if field == "x" else int(rng.integers(-3, 4))  # noqa: E731
    op = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"][rng.integers(9)]
    if op == "$exists":
        return {field: {op: bool(rng.integers(2))}}
    return {field: {op: [num(), num(), num()] if op in ("$in", "$nin") else num()}}


def test_random_filters_match_the_reference_semantics(tmp_path, redis_server):
    """Every filter's VSIM FILTER expression selects exactly the vectors filters.matches() does
    (k above the store size: the answer is the whole matching set), over awkward tags and
    numbers (tiny, huge, negative zero, subnormal)."""
    rng = np.random.default_rng(7)
    n = 300
    v = rng_vectors(n, 8, seed=3)
    metas = [random_meta(rng) for _ in range(n)]
    with open_on(tmp_path, redis_server.url, schema=SCHEMA, hot={"backend": "vectorset"}) as store:
        store.upsert(list(range(n)), v, metas)
        for _ in range(150):
            spec = random_filter(rng)
            node = filters.compile_filter(spec, SCHEMA)
            expect = [i for i in range(n) if filters.matches(node, metas[i])]
            got = sorted(store.query(v[0], k=n + 10, filter=spec).ids())
            assert got == expect, spec


def test_moves_between_hot_and_warm(tmp_path, redis_server):
    v = rng_vectors(400, 8, seed=4)
    with open_on(tmp_path, redis_server.url, schema={"g": "tag"}, hot={"backend": "vectorset"}) as store:
        store.upsert(list(range(400)), v, [{"g": str(i % 2)} for i in range(400)])
        before = [h.ids() for h in store.query_batch(v[:20], k=10, ef=400)]
        store.move(list(range(0, 400, 2)), "warm")
        assert store.hot.count() == 200 and store.stats()["tiers"]["warm"]["count"] == 200
        assert [h.ids() for h in store.query_batch(v[:20], k=10, ef=400)] == before
        assert sorted(store.query(v[0], k=400, filter={"g": "1"}, tiers="hot").ids()) == list(range(1, 400, 2))
        store.move(list(range(0, 200, 2)), "hot")
        assert store.hot.count() == 300
        assert [h.ids() for h in store.query_batch(v[:20], k=10, ef=400)] == before
        assert store.verify()["ok"]


def test_capacity_bytes_uses_the_vector_set_estimate(tmp_path, redis_server):
    store = open_on(tmp_path, redis_server.url, dim=16, hot={"backend": "vectorset"})
    per = store.hot.bytes_per_vector()
    store.close()
    assert per == 16 + 19 * 16 + 400  # q8 codes: a byte per dimension
    with open_on(tmp_path, redis_server.url, dim=16,
                 hot={"backend": "vectorset", "capacity": 1000, "capacity_bytes": 10 * per + per // 2}) as store:
        assert store.capacity("hot") == 10
        store.upsert(list(range(14)), rng_vectors(14, 16))
        assert store.hot.count() == 10 and store.stats()["tiers"]["warm"]["count"] == 4
