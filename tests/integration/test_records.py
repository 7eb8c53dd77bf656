"""Records as users have them: any JSON metadata, a document text, vectors on hits, metadata
updates without the vector, counting and scanning by filter -- in every tier, across a reopen."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from tierstore.errors import InvalidInputError, ReadOnlyError, SchemaError

SCHEMA = {"kind": "tag", "year": "numeric"}
TIERS = ("hot", "warm", "cold")


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


LOADER_METADATA = [  # shapes document loaders produce (LangChain, LlamaIndex, unstructured)
    {"source": "/docs/a.md", "page": 3, "author": None, "kind": "a", "year": 2021,
     "coordinates": {"points": [[1.5, 2.0], [3.0, 4.25]], "system": "PixelSpace"},
     "languages": ["eng"], "ids": [1, 2, 3], "score": 0.25, "ok": True, "nested": {"a": {"b": [None, {}]}}},
    {"file_path": "/docs/b.txt", "creation_date": "2024-05-01", "kind": ["a", "b"], "year": None},
    {},
    {"emoji": "日本 🎉", "empty_list": [], "empty_dict": {}, "big": 2**60, "neg": -1e-300},
]


@pytest.mark.parametrize("tier", TIERS)
def test_metadata_and_text_round_trip_in_every_tier_and_after_reopen(open_store, tmp_path, tier):
    path = tmp_path / "s"
    store = open_store(path=path, schema=SCHEMA)
    n = len(LOADER_METADATA)
    vecs = _vectors(n)
    texts = ["first document", None, "", "last\nline"]
    ids = [f"d{i}" for i in range(n)]
    store.upsert(ids, vecs, LOADER_METADATA, tier=tier, texts=texts)

    def check(s):
        recs = s.get(ids)
        for r, md, text in zip(recs, LOADER_METADATA, texts, strict=True):
            assert r.tier == tier and r.metadata == md and r.text == text
        for i in range(n):  # a query returns the same metadata and text, and finds itself first
            hit = s.query(vecs[i], k=1, nprobe=64)[0]
            assert (hit.id, hit.metadata, hit.text, hit.vector) == (ids[i], LOADER_METADATA[i], texts[i], None)
        scanned = {r.id: (r.metadata, r.text) for batch in s.scan(batch_size=3) for r in batch}
        assert scanned == {i: (md, t) for i, md, t in zip(ids, LOADER_METADATA, texts, strict=True)}

    check(store)
    store.close()
    check(open_store(path=path, schema=SCHEMA))


def test_tuples_dates_and_numpy_values_follow_the_documented_rules(open_store):
    store = open_store(schema=SCHEMA)
    store.upsert(["x"], _vectors(1), [{"t": (1, "a"), "d": datetime.date(2024, 1, 2), "f": np.float32(0.5),
                                       "arr": np.arange(3)}])
    assert store.get(["x"])[0].metadata == {"t": [1, "a"], "d": "2024-01-02", "f": 0.5, "arr": [0, 1, 2]}


@pytest.mark.parametrize(("md", "exc", "pattern"), [
    ({"kind": {"a": 1}}, SchemaError, r"metadata field 'kind' is a tag"),
    ({"year": [2020]}, SchemaError, r"metadata field 'year' is numeric"),
    ({"x": float("nan")}, SchemaError, r"metadata\[0\]\['x'\]: nan is not a finite number"),
    ({"x": {1: "a"}}, SchemaError, r"key 1 is not a str"),
    ({"\x00text": "a"}, SchemaError, r"reserved"),
])
def test_bad_metadata_is_rejected_and_writes_nothing(open_store, md, exc, pattern):
    store = open_store(schema=SCHEMA)
    with pytest.raises(exc, match=pattern):
        store.upsert(["a", "b"], _vectors(2), [md, {}])
    assert len(store) == 0
    with pytest.raises(InvalidInputError, match=r"texts\[0\]: expected a str or None"):
        store.upsert(["a"], _vectors(1), texts=[b"bytes"])
    assert len(store) == 0


@pytest.mark.parametrize("tier", TIERS)
def test_include_vectors_returns_each_hits_stored_vector(open_store, tier):
    store = open_store(schema=SCHEMA)
    vecs = _vectors(200, seed=1)
    store.upsert(list(range(200)), vecs, tier=tier)
    hits = store.query(vecs[7], k=5, include_vectors=True, nprobe=64)
    assert hits[0].id == 7 and len(hits) == 5
    for h in hits:
        np.testing.assert_array_equal(h.vector, vecs[h.id])
    batch = store.query_batch(vecs[:3], k=2, include_vectors=True, nprobe=64)
    assert [b[0].id for b in batch] == [0, 1, 2]
    np.testing.assert_array_equal(batch[2][0].vector, vecs[2])


def test_include_vectors_across_tiers_in_one_answer(open_store):
    store = open_store(schema=SCHEMA)
    vecs = _vectors(30, seed=2)
    for i, tier in enumerate(TIERS):
        store.upsert(list(range(i * 10, i * 10 + 10)), vecs[i * 10 : i * 10 + 10], tier=tier)
    hits = store.query(vecs[0], k=30, include_vectors=True, nprobe=64)
    assert {h.tier for h in hits} == set(TIERS) and len(hits) == 30
    for h in hits:
        np.testing.assert_array_equal(h.vector, vecs[h.id])


@pytest.mark.parametrize("tier", TIERS)
def test_update_metadata_in_place_and_on_schema_fields(open_store, tmp_path, tier):
    path = tmp_path / "s"
    store = open_store(path=path, schema=SCHEMA)
    n = 300
    vecs = _vectors(n, seed=3)
    ids = [f"v{i}" for i in range(n)]
    store.upsert(ids, vecs, [{"kind": "a", "year": 2000 + i % 10, "note": "old"} for i in range(n)], tier=tier,
                 texts=[f"text {i}" for i in range(n)])
    versions_before = store.stats()["tiers"][tier]["count"]

    # free-form fields and text: the catalog entry only
    assert store.update_metadata(ids[:100] + ["missing"], {"note": "new", "extra": [1, None]}) == 100
    r = store.get([ids[0]])[0]
    assert r.metadata == {"kind": "a", "year": 2000, "note": "new", "extra": [1, None]} and r.text == "text 0"
    assert r.tier == tier
    assert store.update_metadata([ids[1]], {"note": "t"}, text="replaced text") == 1
    assert store.get([ids[1]])[0].text == "replaced text"

    # a declared field: the vector is re-placed in its tier and filters follow
    assert store.update_metadata(ids[100:150], {"kind": "b"}) == 50
    hits = store.query(vecs[120], k=60, filter={"kind": "b"}, nprobe=64, ef=400)
    assert hits[0].id == ids[120] and sorted(hits.ids()) == sorted(ids[100:150])
    assert hits[0].text == "text 120" and hits[0].metadata["note"] == "old"
    assert ids[120] not in store.query(vecs[120], k=10, filter={"kind": "a"}, nprobe=64).ids()
    assert {r.tier for r in store.get(ids[100:150])} == {tier}
    assert store.stats()["tiers"][tier]["count"] == versions_before  # replaced, not added

    # per-id patches, replace=True
    store.update_metadata(ids[150:152], [{"year": 1}, {"year": 2}], replace=True)
    assert [r.metadata for r in store.get(ids[150:152])] == [{"year": 1}, {"year": 2}]
    assert store.query(vecs[151], k=1, filter={"year": 2}, nprobe=64).ids() == [ids[151]]

    # bad patches write nothing
    with pytest.raises(SchemaError, match=r"metadata field 'year' is numeric"):
        store.update_metadata(ids[:5], {"year": "soon"})
    with pytest.raises(InvalidInputError, match=r"patch: 2 entries for 3 ids"):
        store.update_metadata(ids[:3], [{}, {}])
    assert store.get([ids[0]])[0].metadata["year"] == 2000

    assert store.count() == n == len(store)
    assert store.count({"kind": "b"}) == 50
    assert store.count({"year": {"$exists": False}}) == 0
    store.close()
    again = open_store(path=path, schema=SCHEMA)
    assert again.get([ids[0]])[0].metadata["note"] == "new"
    assert again.count({"kind": "b"}) == 50
    assert again.query(vecs[120], k=1, filter={"kind": "b"}, nprobe=64).ids() == [ids[120]]


def test_count_and_scan_by_filter(open_store):
    store = open_store(schema=SCHEMA)
    vecs = _vectors(600, seed=4)
    md = [{"kind": ["a", "b"][i % 2], "year": i} if i % 3 else {"kind": "c"} for i in range(600)]
    for i, tier in enumerate(TIERS):
        rows = slice(i * 200, i * 200 + 200)
        store.upsert(list(range(600))[rows], vecs[rows], md[rows], tier=tier)
    flt = {"kind": {"$nin": ["b"]}, "$or": [{"year": {"$lt": 100}}, {"year": {"$exists": False}}]}
    from tierstore import filters

    node = filters.compile_filter(flt, SCHEMA)
    want = sorted(i for i in range(600) if filters.matches(node, md[i]))
    assert store.count(flt) == len(want)
    got = [r.id for batch in store.scan(batch_size=64, filter=flt) for r in batch]
    assert sorted(got) == want and len(got) == len(want)
    got_warm = [r.id for batch in store.scan(filter={"kind": "c"}, tiers="warm") for r in batch]
    assert sorted(got_warm) == [i for i in range(200, 400) if i % 3 == 0]
    with pytest.raises(SchemaError, match=r"not declared in \[schema\]"):
        store.count({"nope": 1})


def test_read_only_process_cannot_update_metadata(open_store, tmp_path):
    path = tmp_path / "s"
    store = open_store(path=path, schema=SCHEMA)
    store.upsert(["a"], _vectors(1), [{"kind": "a"}])
    store.close()  # (one process may not open a store twice)
    reader = open_store(path=path, schema=SCHEMA, read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.update_metadata(["a"], {"x": 1})
    assert reader.count({"kind": "a"}) == 1


def test_update_metadata_edge_cases(open_store):
    """Review findings: duplicate ids, a deferred cold move, errors naming the caller's patch,
    a failing S3 read leaving nothing written, integers too large to read back."""
    store = open_store(schema=SCHEMA)
    vecs = _vectors(30, seed=5)
    store.upsert(list(range(10)), vecs[:10], [{"kind": "a", "year": 1}] * 10, tier="hot")
    store.upsert(list(range(10, 20)), vecs[10:20], [{"kind": "a", "year": 1}] * 10, tier="warm")
    store.upsert(list(range(20, 30)), vecs[20:30], [{"kind": "a", "year": 1}] * 10, tier="cold")
    with pytest.raises(InvalidInputError, match=r"ids\[1\]: 3 appears more than once"):
        store.update_metadata([3, 3], [{"year": 2}, {"note": "x"}])
    with pytest.raises(SchemaError, match=r"^patch\[1\] \(id 5\)\['year'\]: .*numeric"):
        store.update_metadata([999, 5], [{}, {"year": "x"}])
    with pytest.raises(SchemaError, match=r"too large to store"):
        store.update_metadata([5], {"big": 10**5000})

    # a deferred demotion stays queued through a metadata update
    report = store.move(list(range(10, 15)), "cold", defer=True)
    assert report.queued == 5
    store.update_metadata([10, 11], {"year": 5})
    store.flush()
    assert {r.tier for r in store.get(list(range(10, 15)))} == {"cold"}
    assert store.get([10])[0].metadata == {"kind": "a", "year": 5}

    # the cold vectors are read before anything is written: a failing read writes nothing
    real = store.cold.fetch

    def broken(*_a, **_k):
        raise OSError("S3 down")

    store.cold.fetch = broken
    try:
        with pytest.raises(OSError):
            store.update_metadata([0, 16, 25], [{"note": "x"}, {"year": 9}, {"year": 9}])
    finally:
        store.cold.fetch = real
    assert [r.metadata for r in store.get([0, 16, 25])] == [{"kind": "a", "year": 1}] * 3
    assert len(store.query(vecs[0], k=30, filter={"year": 9}, nprobe=64)) == 0


def test_hits_keep_their_four_field_tuple(open_store):
    store = open_store(schema=SCHEMA)
    vecs = _vectors(3, seed=6)
    store.upsert([1, 2, 3], vecs, texts=["a", "b", "c"])
    hits = store.query(vecs[0], k=3, include_vectors=True)
    uid, dist, tier, meta = hits[0]
    assert (uid, tier, meta, hits[0].text) == (1, "hot", {}, "a")
    again = store.query(vecs[0], k=3, include_vectors=True)
    assert hits == again and hits[0] in again  # equality compares the tuple (vectors are arrays)
    import pickle

    back = pickle.loads(pickle.dumps(hits[0]))
    assert back.text == "a" and np.array_equal(back.vector, vecs[0])


def test_filters_skip_values_stored_before_a_field_was_declared(open_store, tmp_path):
    path = tmp_path / "s"
    store = open_store(path=path, schema={"kind": "tag"})
    vecs = _vectors(4, seed=7)
    store.upsert([1, 2], vecs[:2], [{"year": "soon"}, {"year": 2020}], tier="warm")
    store.upsert([3, 4], vecs[2:], [{"year": [1]}, {"year": 2021}], tier="cold")
    store.close()
    store = open_store(path=path, schema={"kind": "tag", "year": "numeric"})
    assert store.count({"year": {"$gt": 1}}) == 2
    assert sorted(store.query(vecs[0], k=4, filter={"year": {"$gt": 1}}, nprobe=64).ids()) == [2, 4]
    assert sorted(store.query(vecs[0], k=4, filter={"year": {"$ne": 2020}}, nprobe=64).ids()) == [1, 3, 4]
