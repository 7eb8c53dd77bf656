"""The cold tier against a real S3 server (SeaweedFS): round trips, recall, pruning, filters,
corruption, outages, crashes, compaction, verify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tierstore
from tierstore import datasets
from tierstore.services import S3Server


def vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim))
    return (centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, dim))).astype(np.float32)


def cosine_truth(base: np.ndarray, qs: np.ndarray, k: int, ok: np.ndarray | None = None) -> np.ndarray:
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    d = 1 - q @ b.T
    if ok is not None:
        d[:, ~ok] = np.inf
    return np.argsort(d, axis=1, kind="stable")[:, :k]


# --- a cold-only store on 20k wordnet vectors, shared by the read-only tests ----------------------


@pytest.fixture(scope="module")
def wn_cold(tmp_path_factory, redis_server, s3_server, wordnet_20k, cold_section):
    ds = wordnet_20k
    store = tierstore.open(path=str(tmp_path_factory.mktemp("wnc")), dim=384, env={},
                           schema={"pos": "tag", "lexname": "tag", "nlemmas": "numeric",
                                   "cluster": "tag", "rank": "numeric"},  # wordnet's, or the fallback's
                           hot={"redis_url": redis_server.url},
                           cold=cold_section(s3_server, segment_size=10_000))
    for s in range(0, 20_000, 10_000):
        store.upsert(list(range(s, s + 10_000)), ds.base[s : s + 10_000], ds.metadata[s : s + 10_000], tier="cold")
    yield store
    store.close()


def test_cold_recall_rises_with_nprobe_and_is_exact_when_probing_everything(wn_cold, wordnet_20k):
    ds = wordnet_20k
    qs = ds.queries[:100]
    truth = cosine_truth(ds.base, qs, 10)
    total = wn_cold.stats()["tiers"]["cold"]["partitions"]
    recalls = {}
    for nprobe in (1, 8, 32, total):
        res = wn_cold.query_batch(qs, k=10, nprobe=nprobe)
        recalls[nprobe] = datasets.recall_at([h.ids() for h in res], truth, 10)
        # nprobe is a budget of rows (~ nprobe * sqrt(cold rows)), met by the best partitions of
        # every segment together: at most one partition beyond it
        for h in res:
            det = h.tiers["cold"].details
            assert det["budget_rows"] <= det["rows"] < det["budget_rows"] + 1000 or det["rows"] == 20_000
    assert recalls[1] < recalls[8] <= recalls[32] <= recalls[total]
    assert recalls[total] == 1.0, recalls  # probing every partition is an exact scan
    assert recalls[32] >= 0.9, recalls


def test_cold_distances_are_exact_and_tier_reported(wn_cold, wordnet_20k):
    ds = wordnet_20k
    hits = wn_cold.query(ds.queries[0], k=5, nprobe=16)
    assert [h.tier for h in hits] == ["cold"] * 5 and not hits.partial
    b = ds.base[np.array(hits.ids())]
    q = ds.queries[0]
    want = 1 - (b @ q) / (np.linalg.norm(b, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(hits.distances(), want, atol=2e-6)
    det = hits.tiers["cold"].details
    assert det["probed"] >= 16 and det["fetched"] + det["cache_hits"] == det["probed"]
    assert det["gets"] - det["rerank_gets"] <= det["fetched"] and det["reranked"] >= 5
    assert det["rows"] >= det["budget_rows"] == int(16 * 20_000 / 141)


def test_second_query_is_served_by_the_block_cache(wn_cold, wordnet_20k):
    q = wordnet_20k.queries[7]
    wn_cold.cold.drop_cache()
    first = wn_cold.query(q, k=10, nprobe=8).tiers["cold"].details
    wn_cold.cold.settle()  # fetched blocks are written to the cache in the background
    second = wn_cold.query(q, k=10, nprobe=8).tiers["cold"].details
    # adjacent partitions share a GET: at most one per probed partition
    assert 1 <= first["gets"] - first["rerank_gets"] <= first["fetched"] == first["probed"] >= 8
    assert first["rerank_gets"] >= 1 and first["bytes"] > first["rerank_bytes"] > 0
    assert first["cache_hits"] == 0
    assert second["gets"] == 0 and second["cache_hits"] == first["probed"]


# (wordnet filters, filters for the generated fallback data); the last is selective (< 1% of rows)
FILTERS = [
    ({"lexname": "noun.act"}, {"cluster": "c1"}),
    ({"lexname": {"$in": ["noun.Tops", "noun.animal"]}}, {"cluster": {"$in": ["c2", "c3"]}}),
    ({"nlemmas": {"$gte": 3}}, {"rank": {"$gte": 500}}),
    ({"lexname": {"$nin": ["noun.act", "noun.artifact"]}, "nlemmas": {"$exists": True}},
     {"cluster": {"$nin": ["c1", "c2"]}, "rank": {"$exists": True}}),
    ({"$and": [{"lexname": "noun.animal"}, {"nlemmas": {"$gte": 6}}]}, {"$and": [{"cluster": "c4"}, {"rank": {"$lt": 20}}]}),
]


@pytest.mark.parametrize("which", range(len(FILTERS)))
def test_cold_filters_equal_numpy(wn_cold, wordnet_20k, which):
    ds = wordnet_20k
    from tierstore import filters

    wordnet = "lexname" in ds.metadata[0]
    flt = FILTERS[which][0 if wordnet else 1]
    selective = FILTERS[-1][0 if wordnet else 1]

    node = filters.compile_filter(flt, wn_cold.schema)
    ok = np.array([filters.matches(node, m) for m in ds.metadata])
    total = wn_cold.stats()["tiers"]["cold"]["partitions"]
    qs = ds.queries[:20]
    truth = cosine_truth(ds.base, qs, 10, ok)
    res = wn_cold.query_batch(qs, k=10, filter=flt, nprobe=total)
    for h, t in zip(res, truth, strict=True):
        assert h.ids() == [int(i) for i in t if ok[i]][:10]
        assert all(filters.matches(node, x.metadata) for x in h)
    # with the default nprobe a selective filter keeps probing until k rows match
    sel = filters.compile_filter(selective, wn_cold.schema)
    matching = sum(filters.matches(sel, m) for m in ds.metadata)
    h = wn_cold.query(qs[0], k=10, filter=selective)
    det = h.tiers["cold"].details
    # (partitions whose metadata rules the filter out count as considered, not probed)
    assert len(h) == min(10, matching) and det["probed"] + det.get("meta_skipped", 0) > 8


def test_scan_and_get_cover_cold_vectors(wn_cold, wordnet_20k):
    got = wn_cold.get([0, 12_345, 99_999])
    np.testing.assert_array_equal(got[0].vector, wordnet_20k.base[0])
    assert got[0].tier == "cold" and got[0].metadata == wordnet_20k.metadata[0] and got[2] is None
    seen = [r.id for batch in wn_cold.scan(batch_size=7_000) for r in batch]
    assert sorted(seen) == list(range(20_000))


# --- stores of their own ------------------------------------------------------------------------


def test_round_trip_through_every_tier(open_store):
    store = open_store(dim=16, schema={"g": "tag"}, cold={"segment_size": 300})
    v = vectors(1000)
    ids = [f"id{i}" for i in range(1000)]
    store.upsert(ids, v, metadata=[{"g": str(i % 4)} for i in range(1000)], tier="warm")
    rep = store.move(ids[:900], "cold")
    assert rep.moved == 900 and store.stats()["tiers"]["cold"]["segments"] == 3
    assert store.stats()["tiers"]["cold"]["count"] == 900
    store.move(ids[:50], "hot")
    store.move(ids[50:100], "warm")
    recs = store.get(ids)
    assert [r.tier for r in recs[:50]] == ["hot"] * 50 and recs[60].tier == "warm" and recs[500].tier == "cold"
    for i in (0, 77, 500, 999):
        np.testing.assert_array_equal(recs[i].vector, v[i])
        assert recs[i].metadata == {"g": str(i % 4)}
    # every vector is its own nearest neighbour, wherever it lives, and each appears once
    total = store.stats()["tiers"]["cold"]["partitions"]
    for i in range(0, 1000, 37):
        hits = store.query(v[i], k=5, nprobe=total)
        assert hits.ids()[0] == ids[i] and len(set(hits.ids())) == 5
    assert store.verify()["ok"]


def test_ingest_tier_cold_and_deferred_demotion(open_store, tmp_path, s3_server, cold_section):
    cold = cold_section(s3_server, segment_size=500)
    path = tmp_path / "d"
    store = open_store(path=path, dim=16, policy={"ingest_tier": "cold"}, cold=cold)
    v = vectors(1200, seed=3)
    store.upsert(list(range(200)), v[:200])
    assert store.get([5])[0].tier == "cold"
    store.upsert(list(range(200, 1200)), v[200:1200], tier="warm")
    rep = store.move(list(range(200, 700)), "cold", defer=True)
    assert rep.queued == 500 and rep.moved == 500  # the queue reached segment_size: flushed
    rep = store.move(list(range(700, 900)), "cold", defer=True)
    assert rep.queued == 200 and rep.moved == 0 and store.get([800])[0].tier == "warm"
    store.close()
    store = open_store(path=path, dim=16, policy={"ingest_tier": "cold"}, cold=cold)  # the queue is durable
    assert store.stats()["tiers"]["cold"]["queued_for_cold"] == 200
    store.delete([850])
    store.flush()
    assert store.get([800])[0].tier == "cold" and store.get([850]) == [None]
    assert store.stats()["tiers"]["cold"]["queued_for_cold"] == 0
    assert store.stats()["tiers"]["cold"]["count"] == 899
    assert store.verify()["ok"]


def test_deletes_updates_and_compaction_of_cold_segments(open_store):
    store = open_store(dim=16, cold={"segment_size": 400})
    v = vectors(1200, seed=5)
    store.upsert(list(range(1200)), v, tier="cold")  # one segment of 1200 rows
    store.upsert(list(range(400, 420)), v[400:420] + 1, tier="warm")  # updates: new versions in warm
    store.delete(list(range(0, 600)))  # tombstones: rows are dead, objects unchanged
    assert len(store) == 600
    hits = store.query(v[410], k=3, nprobe=1000)
    assert all(h.id >= 600 for h in hits) and len({h.id for h in hits}) == 3
    before = store.stats()["tiers"]["cold"]
    out = store.compact(0.3)["cold"]
    assert out["segments"] == 1 and out["rows_kept"] == 600 and out["rows_dropped"] == 600
    after = store.stats()["tiers"]["cold"]
    assert after["rows"] == 600 and after["s3_bytes"] < before["s3_bytes"]
    for i in range(600, 1200, 53):
        assert store.query(v[i], k=1, nprobe=1000).ids() == [i]
    rep = store.verify()
    assert rep["ok"] and rep["cold"]["orphan_objects"] == 0, rep


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_format_1_segments_still_read_next_to_format_2(open_store, monkeypatch, metric):
    """Segments an older tierstore wrote (format 1: float vectors in the blocks) are scanned with
    format-2 ones (int8 codes + exact pages) in one query, read back by get, verified, and
    compaction rewrites them as format 2."""
    import functools

    from tierstore.tiers.cold import format as coldseg

    store = open_store(dim=16, metric=metric, schema={"g": "tag"}, cold={"segment_size": 4000})
    v = vectors(1200, seed=9)
    meta = [{"g": str(i % 3)} for i in range(1200)]
    build = coldseg.build
    monkeypatch.setattr(coldseg, "build", functools.partial(build, version=1))
    store.upsert(list(range(600)), v[:600], meta[:600], tier="cold")
    monkeypatch.setattr(coldseg, "build", build)
    store.upsert(list(range(600, 1200)), v[600:], meta[600:], tier="cold")
    assert sorted(s.footer.format for s in store.cold.segs.values()) == [1, 2]

    def truth(q, ok=None):
        d = 1 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q)) if metric == "cosine" else ((v - q) ** 2).sum(1)
        if ok is not None:
            d = np.where(ok, d, np.inf)
        return np.argsort(d, kind="stable")[:5].tolist(), np.sort(d)[:5]

    total = store.stats()["tiers"]["cold"]["partitions"]
    ok = np.array([m["g"] == "1" for m in meta])
    for i in (3, 599, 600, 1111):
        hits = store.query(v[i], k=5, nprobe=total)
        want, dist = truth(v[i])
        assert hits.ids() == want
        np.testing.assert_allclose(hits.distances(), dist, rtol=1e-4, atol=1e-4)
        assert hits.tiers["cold"].details["reranked"] > 0  # the format-2 half went through the rerank
        assert store.query(v[i], k=5, nprobe=total, filter={"g": "1"}).ids() == truth(v[i], ok)[0]
    got = store.get([5, 700])
    np.testing.assert_array_equal(got[0].vector, v[5])
    np.testing.assert_array_equal(got[1].vector, v[700])
    assert store.verify(deep=True)["ok"]
    store.compact()
    assert [s.footer.format for s in store.cold.segs.values()] == [2]
    assert store.query(v[3], k=5, nprobe=total).ids() == truth(v[3])[0]


def test_filtered_query_skips_partitions_its_metadata_rules_out(open_store):
    """Per-partition summaries of the [schema] fields (tag value sets, numeric min/max): a filter
    whose values live in a few partitions never fetches the others, with the exact answer."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((12, 16))
    which = rng.integers(0, 12, 3000)
    v = (centres[which] + 0.2 * rng.standard_normal((3000, 16))).astype(np.float32)
    meta = [{"c": f"c{w}", "r": float(i)} for i, w in enumerate(which.tolist())]
    store = open_store(dim=16, schema={"c": "tag", "r": "numeric"}, cold={"segment_size": 3000})
    store.upsert(list(range(3000)), v, meta, tier="cold")
    total = store.stats()["tiers"]["cold"]["partitions"]
    for spec, ok in (({"c": "c4"}, which == 4), ({"r": {"$lt": 30}}, np.arange(3000) < 30)):
        for qi in (0, 1234, 2999):
            store.cold.drop_cache()
            h = store.query(v[qi], k=5, filter=spec, nprobe=total)  # nprobe = every partition
            d = 1 - (v @ v[qi]) / (np.linalg.norm(v, axis=1) * np.linalg.norm(v[qi]))
            assert h.ids() == np.argsort(np.where(ok, d, np.inf), kind="stable")[:5].tolist()
            det = h.tiers["cold"].details
            assert det["meta_skipped"] > 0 and det["probed"] + det["meta_skipped"] <= total
    store.cold.drop_cache()
    det = store.query(v[0], k=5, filter={"c": "c4"}, nprobe=total).tiers["cold"].details
    store.cold.drop_cache()
    full = store.query(v[0], k=5, nprobe=total).tiers["cold"].details
    assert det["bytes"] < full["bytes"] / 3, (det, full)


def test_a_selective_filter_keeps_the_recall_of_an_unfiltered_query(open_store):
    """At the default nprobe one budget of rows holds ~1% of a 1%-filter's matching rows: the
    answer then came from the few it saw (recall@10 0.88 on wordnet 100k). A filtered query keeps
    probing (at most _FILTER_ROUNDS budgets) until it has scanned what nprobe gives a tier of just
    the matching rows -- here all of them."""
    n = 20_000
    rng = np.random.default_rng(5)  # no clusters: a filtered answer's rows lie all over the partitions
    v = rng.standard_normal((n, 32)).astype(np.float32)
    meta = [{"b": f"b{i % 100}"} for i in range(n)]
    store = open_store(dim=32, schema={"b": "tag"}, cold={"segment_size": n})
    store.upsert(list(range(n)), v, meta, tier="cold")
    qs = rng.standard_normal((20, 32)).astype(np.float32)
    ok = np.array([m["b"] == "b7" for m in meta])
    truth = cosine_truth(v, qs, 10, ok)
    rec, rows = [], []
    for q, t in zip(qs, truth, strict=True):
        h = store.query(q, k=10, filter={"b": "b7"})
        rec.append(len(set(h.ids()) & set(t.tolist())) / 10)
        rows.append(h.tiers["cold"].details["rows"])
    assert np.mean(rec) >= 0.95, np.mean(rec)
    # with a small nprobe the extra rounds run into their cap: at most _FILTER_ROUNDS budgets
    budget = store.query(qs[0], k=10, nprobe=16).tiers["cold"].details["budget_rows"]
    small = [store.query(q, k=10, filter={"b": "b7"}, nprobe=16).tiers["cold"].details["rows"] for q in qs]
    assert 2 * budget < min(small) and max(small) <= 3 * budget + 500, (budget, small)  # (+ whole partitions)


def test_cold_stops_early_behind_a_hot_tier_that_holds_the_answer(open_store):
    """The early stop: a query whose faster tiers already hold k answers scans the first share of
    its budget and goes on only if a row there (a row the catalog still places in cold, on its
    exact distance) could enter the answer. Queries answered by hot stop after the look -- also
    when the answers were promoted out of cold and left their rows there -- with the answer a
    full search gives; a query whose nearest row is cold goes on and finds it;
    ``cold.early_stop = 0`` always scans the whole budget."""
    n, dim = 12_000, 32
    rng = np.random.default_rng(8)
    # (no clusters: the partitions' triangle-inequality bounds then rule out nothing, as on real embeddings)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    qs = (v[rng.choice(n, 30, replace=False)] + 0.3 * rng.standard_normal((30, dim))).astype(np.float32)
    truth = cosine_truth(v, qs, 10)
    near = np.unique(cosine_truth(v, qs, 20))  # each query's 20 nearest: hot
    cfg = {"dim": dim, "hot": {"capacity": 5000}, "policy": {"interval": 0, "promote_interval": 0},
           "cold": {"segment_size": n, "auto_compact_segments": 0}, "schema": {"g": "tag"}}
    store = open_store(**cfg)
    cold_ids = np.setdiff1d(np.arange(n), near)
    store.upsert(cold_ids.tolist(), v[cold_ids], [{"g": "c"}] * len(cold_ids), tier="cold")
    store.upsert(near.tolist(), v[near], [{"g": "h"}] * len(near), tier="hot")

    def ask(st, q, **kw):
        h = st.query(q, k=10, **kw)
        return h.ids(), h.tiers["cold"].details

    stops, rows = 0, []
    for q, t in zip(qs, truth, strict=True):
        ids, det = ask(store, q)
        assert ids == t.tolist()
        assert det["skipped"] == 0  # (so what is saved is the early stop's)
        stops += det["stopped_early"]
        rows.append(det["rows"])
        if det["stopped_early"]:
            assert det["rows"] < det["budget_rows"] / 2, det
    assert stops >= 25, stops
    # a filter no cold partition can match: nothing to look at, nothing read
    for q, t in zip(qs[:5], truth[:5], strict=True):
        h = store.query(q, k=10, filter={"g": "h"})
        assert h.ids() == t.tolist() and h.tiers["cold"].details["rows"] == 0

    # the same answers promoted out of cold: their cold rows stay (no compaction) and are ignored
    other = open_store(**{**cfg, "cold": {**cfg["cold"], "segment_size": n}})
    other.upsert(list(range(n)), v, tier="cold")
    other.move(near.tolist(), "hot")
    moved = [ask(other, q) for q in qs]
    assert [ids for ids, _ in moved] == [t.tolist() for t in truth]
    assert sum(det["stopped_early"] for _, det in moved) >= 25

    # a query whose nearest row is in cold goes on, and finds it
    for r in cold_ids[:5].tolist():
        ids, det = ask(store, v[r] * 1.0001)
        assert ids[0] == r and not det["stopped_early"], (r, ids, det)

    # early_stop = 0: every query scans its whole budget
    full = open_store(**{**cfg, "path": None, "cold": {**cfg["cold"], "early_stop": 0}})
    full.upsert(cold_ids.tolist(), v[cold_ids], [{"g": "c"}] * len(cold_ids), tier="cold")
    full.upsert(near.tolist(), v[near], [{"g": "h"}] * len(near), tier="hot")
    for q, t, r in zip(qs[:5], truth[:5], rows[:5], strict=True):
        ids, det = ask(full, q)
        assert ids == t.tolist() and not det["stopped_early"] and det["rows"] >= max(r, det["budget_rows"]), det


def test_segments_the_store_writes_are_served_from_the_local_cache_from_their_first_query(open_store, tmp_path):
    """Write-through: the blocks and exact-vector pages of a segment the store wrote (an ingest, a
    demotion, a merge) go to the block cache, so its first queries need no GET; a block damaged
    on local disk is caught by its checksum and fetched from S3 instead; a merged-away segment's
    blocks leave the cache."""
    cfg = {"path": tmp_path / "wt", "dim": 16, "cold": {"segment_size": 4000, "auto_compact_segments": 0}}
    store = open_store(**cfg)
    v = vectors(1500, seed=9)
    store.upsert(list(range(1000)), v[:1000], tier="warm")
    store.upsert(list(range(1000, 1500)), v[1000:], tier="cold")
    store.move(list(range(500)), "cold")  # a demotion: the second segment
    store.cold.settle()
    total = store.stats()["tiers"]["cold"]["partitions"]
    for qi in (3, 777, 1499):
        det = store.query(v[qi], k=5, nprobe=total, tiers=["cold"]).tiers["cold"].details
        if qi < 500 or qi >= 1000:
            assert store.query(v[qi], k=1).ids() == [qi]
        assert det["gets"] == 0 and det["cache_hits"] == det["probed"] > 0 and det["reranked"] > 0, det
    cache = tmp_path / "wt" / "cold" / "cache"
    blocks = sorted(cache.glob("*.blk"))
    assert any("-g" in b.name for b in blocks) and any("-g" not in b.name for b in blocks)
    for b in blocks:  # flip a byte of every cached block and group of pages
        raw = bytearray(b.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        b.write_bytes(bytes(raw))
    rep = store.verify(deep=True)  # (the store's mappings of the old bytes are its own: a fresh check)
    group = next(b.name for b in blocks if "-g" in b.name)
    assert not rep["ok"] and any(group in p and "group" in p and "dropped" in p for p in rep["problems"]), rep
    for b in blocks:  # damaged again (verify dropped them), for the reads below
        if not b.exists():
            b.write_bytes(b"\0" * 64)
    store.close()
    store = open_store(**cfg)  # (the blocks are mapped afresh)
    hits = store.query(v[1234], k=5, nprobe=total)
    assert hits.ids()[0] == 1234 and not hits.partial and hits.tiers["cold"].details["gets"] > 0
    assert store.compact()["cold"]["segments"] == 2
    store.cold.settle()
    sids = {int(b.name.split("-")[0]) for b in cache.glob("*.blk")}
    assert len(sids) == 1, sids  # only the merged segment's blocks are left


def test_large_reads_hold_a_bounded_number_of_cached_files_and_return_exact_vectors(open_store, monkeypatch):
    """A move (or a big batch's rerank) reads its partitions and pages a bounded number at a time
    (each cached one is a mapped file holding a descriptor): the vectors are exactly those stored."""
    from tierstore.tiers.cold import reads

    monkeypatch.setattr(reads, "_PAGES_AT_ONCE", 3)
    monkeypatch.setattr(reads, "_PARTS_AT_ONCE", 2)
    store = open_store(dim=16, cold={"segment_size": 4000})
    v = vectors(1200, seed=4)
    store.upsert(list(range(1200)), v, tier="cold")
    got = {r.id: r.vector for r in store.get(list(range(0, 1200, 3)))}
    np.testing.assert_array_equal(np.stack([got[i] for i in range(0, 1200, 3)]), v[::3])
    res = store.query_batch(v[:40], k=3, nprobe=10_000)
    assert [h.ids()[0] for h in res] == list(range(40))
    store.move(list(range(0, 1200, 2)), "warm")
    assert store.stats()["tiers"]["warm"]["count"] == 600
    assert [store.query(v[i], k=1).ids() for i in (0, 1, 598, 599)] == [[0], [1], [598], [599]]
    # a batch is searched in slices whose partitions fit the mapping budget: same answers
    single = [store.query(q, k=5, tiers=["cold"]).ids() for q in v[1:120:2]]
    store.cold.cache.max_mapped = 16
    assert [h.ids() for h in store.query_batch(v[1:120:2], k=5, tiers=["cold"])] == single


def test_small_segments_are_merged_by_compact(open_store):
    store = open_store(dim=16, cold={"segment_size": 2000, "auto_compact_segments": 0})
    v = vectors(600, seed=6)
    for s in range(0, 600, 100):
        store.upsert(list(range(s, s + 100)), v[s : s + 100], tier="cold")
    assert store.stats()["tiers"]["cold"]["segments"] == 6
    out = store.compact()["cold"]
    assert out["segments"] == 6 and out["rows_kept"] == 600
    assert store.stats()["tiers"]["cold"]["segments"] == 1
    assert sorted(r.id for b in store.scan() for r in b) == list(range(600))


def test_pruning_skips_cold_only_when_no_cold_vector_can_enter(open_store):
    """A skewed mix: queries whose neighbours are all hot prune the cold tier (no GET); the
    results always equal those of an exhaustive, unpruned search."""
    store = open_store(dim=16, metric="l2", cold={"segment_size": 2000})
    rng = np.random.default_rng(7)
    far = (rng.standard_normal((1500, 16)) + 25).astype(np.float32)  # a distant cluster: cold
    near = rng.standard_normal((500, 16)).astype(np.float32)  # hot
    store.upsert(list(range(1500)), far, tier="cold")
    store.upsert(list(range(1500, 2000)), near, tier="hot")
    total = store.stats()["tiers"]["cold"]["partitions"]
    qs = np.concatenate([near[:20] + 0.01, far[:10] + 0.01]).astype(np.float32)
    for q in qs:
        hits = store.query(q, k=10, nprobe=total)
        det = hits.tiers["cold"].details
        exact = store.query(q, k=10, nprobe=total, tiers=["cold"])
        everything = sorted([(h.distance, h.id) for h in exact] +
                            [(h.distance, h.id) for h in store.query(q, k=10, tiers=["hot"])])[:10]
        assert hits.ids() == [i for _, i in everything]
        if q[0] < 10:  # near queries: ten hot neighbours, every cold partition provably too far
            assert det["pruned_all"] and det["gets"] == 0 and det["cache_hits"] == 0
    assert store.query(qs[25], k=10).tiers["cold"].details["probed"] > 0


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_rerank_skips_only_candidates_that_cannot_enter_the_answer(open_store, monkeypatch, metric):
    """Format 2 reranks its int8 candidates on exact vectors, but not those whose estimate minus
    its error bound is beyond what k other candidates (or the other tiers) already guarantee:
    the answers equal those of reranking every candidate, with fewer pages read."""
    from tierstore.tiers.cold import search

    store = open_store(dim=32, metric=metric, cold={"segment_size": 3000, "auto_compact_segments": 0})
    v = vectors(3000, dim=32, seed=11)
    if metric != "cosine":  # norms that differ, so ip and l2 are not cosine in disguise
        v *= np.random.default_rng(2).uniform(0.5, 2.0, (3000, 1)).astype(np.float32)
    store.upsert(list(range(2500)), v[:2500], tier="cold")
    store.upsert(list(range(2500, 3000)), v[2500:], tier="hot")
    qs = (v[np.random.default_rng(3).choice(3000, 60, replace=False)]
          + 0.3 * np.random.default_rng(4).standard_normal((60, 32))).astype(np.float32)
    for k in (1, 10):
        pruned = [store.query(q, k=k, nprobe=1000) for q in qs]
        cold_only = [store.query(q, k=k, nprobe=1000, tiers=["cold"]) for q in qs]
        with monkeypatch.context() as mp:  # an infinite error bound: every candidate is reranked
            mp.setattr(search, "_code_error", lambda qs, metric: [np.inf] * len(qs))
            full = [store.query(q, k=k, nprobe=1000) for q in qs]
            full_cold = [store.query(q, k=k, nprobe=1000, tiers=["cold"]) for q in qs]
        for a, b in zip(pruned + cold_only, full + full_cold, strict=True):
            assert a.ids() == b.ids()
            assert np.allclose([h.distance for h in a], [h.distance for h in b], rtol=1e-5, atol=1e-6)
        skipped = sum(h.tiers["cold"].details.get("rerank_skipped", 0) for h in pruned + cold_only)
        reranked = sum(h.tiers["cold"].details.get("reranked", 0) for h in pruned + cold_only)
        assert sum(h.tiers["cold"].details.get("rerank_skipped", 0) for h in full + full_cold) == 0
        assert skipped > reranked / 4, (skipped, reranked)  # it does skip a good share


def test_concurrent_queries_see_each_vector_once_while_it_moves_to_and_from_cold(open_store):
    store = open_store(dim=16, cold={"segment_size": 1000})
    v = vectors(400, seed=8)
    store.upsert(list(range(400)), v, tier="warm")
    movers = list(range(0, 400, 5))
    stop = threading.Event()
    errors: list[str] = []

    def query_loop():
        rng = np.random.default_rng(0)
        while not stop.is_set():
            i = int(rng.choice(movers))
            ids = store.query(v[i], k=5, ef=400, nprobe=1000).ids()
            if len(set(ids)) != len(ids):
                errors.append(f"duplicate in {ids}")
            if ids[:1] != [i]:
                errors.append(f"vector {i} missing from its own query: {ids}")

    threads = [threading.Thread(target=query_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for round_ in range(6):
            store.move(movers, ["cold", "hot", "cold", "warm", "cold", "warm"][round_])
            if round_ == 2:
                store.compact(0.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert store.verify()["ok"]


# --- faults ---------------------------------------------------------------------------------------


def _corrupt_every_block(store, s3: S3Server) -> None:
    client = s3.client()
    seg = next(iter(store.cold.segs.values()))
    key, bucket = seg.info["key"], store.cold.bucket
    raw = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    for off in seg.footer.offsets[:-1].tolist():
        raw[int(off) + 5] ^= 0x10  # inside each partition's ids
    client.put_object(Bucket=bucket, Key=key, Body=bytes(raw))
    store.cold.drop_cache()


def test_flipped_byte_raises_integrity_error_and_other_tiers_still_answer(open_store, s3_server):
    store = open_store(dim=16, cold={"segment_size": 1000})
    v = vectors(600, seed=9)
    store.upsert(list(range(300)), v[:300], tier="cold")
    store.upsert(list(range(300, 600)), v[300:], tier="hot")
    _corrupt_every_block(store, s3_server)
    total = store.stats()["tiers"]["cold"]["partitions"]
    hits = store.query(v[400], k=5, nprobe=total)
    assert hits.partial and not hits.tiers["cold"].ok and "IntegrityError" in hits.tiers["cold"].error
    assert hits.ids()[0] == 400 and all(h.tier == "hot" for h in hits)
    with pytest.raises(tierstore.IntegrityError, match="checksum"):
        store.query(v[400], k=5, nprobe=total, strict=True)
    with pytest.raises(tierstore.IntegrityError):
        store.query(v[10], k=5, nprobe=total, tiers=["cold"])
    rep = store.verify()
    assert not rep["ok"] and any("checksum" in p for p in rep["problems"])
    assert store.cold.cache.bytes == 0  # nothing corrupt was cached


def test_s3_down_mid_session_gives_partial_answers_then_recovers(open_store, tmp_path, cold_section):
    s3 = S3Server(tmp_path / "own-s3").start()
    try:
        store = open_store(dim=16, cold={**cold_section(s3), "max_attempts": 1, "timeout": "2s"})
        v = vectors(600, seed=10)
        store.upsert(list(range(300)), v[:300], tier="cold")
        store.upsert(list(range(300, 600)), v[300:], tier="warm")
        store.cold.drop_cache()
        s3.stop()
        hits = store.query(v[450], k=5, nprobe=8)
        assert hits.partial and not hits.tiers["cold"].ok and hits.ids()[0] == 450
        with pytest.raises(tierstore.TierUnavailableError):
            store.query(v[10], k=5, tiers=["cold"])
        with pytest.raises(tierstore.TierUnavailableError):
            store.query(v[450], k=5, strict=True)
        with pytest.raises(tierstore.TierUnavailableError):  # a move needs S3: nothing moves
            store.move(list(range(300, 310)), "cold")
        assert store.get([305])[0].tier == "warm"
        s3.start()  # same data directory and ports
        deadline = time.monotonic() + 15  # the restarted server may need a moment to serve reads
        while (hits := store.query(v[10], k=5, nprobe=1000)).partial and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not hits.partial and hits.ids()[0] == 10
        assert store.verify()["ok"]
    finally:
        s3.stop()


def test_bad_bucket_credentials_or_endpoint_fail_at_open(tmp_path, redis_server, s3_server, monkeypatch, cold_section):
    def opening(**cold):
        return tierstore.open(path=str(tmp_path / f"s{len(os.listdir(tmp_path))}"), dim=4, env={},
                              hot={"redis_url": redis_server.url}, cold={**cold_section(s3_server), **cold})

    with pytest.raises(tierstore.ConfigError, match="bucket 'nope' does not exist"):
        opening(url="s3://nope/x")
    with pytest.raises(tierstore.ConfigError, match="cold.url"):
        opening(url="http://bucket/x")
    with pytest.raises(tierstore.TierUnavailableError, match="cold tier"):
        opening(endpoint_url="http://127.0.0.1:9", max_attempts=1, timeout="1s")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(tierstore.ConfigError, match="denied"):
        opening()


def test_two_stores_cannot_share_a_prefix(tmp_path, redis_server, s3_server, cold_section):
    cold = cold_section(s3_server)
    with tierstore.open(path=str(tmp_path / "a"), dim=4, env={}, hot={"redis_url": redis_server.url}, cold=cold) as a:
        a.upsert(["x"], [[1, 0, 0, 0]], tier="cold")
    with pytest.raises(tierstore.ConfigError, match="another store"):
        tierstore.open(path=str(tmp_path / "b"), dim=4, env={}, hot={"redis_url": redis_server.url}, cold=cold)


def test_manifest_publish_survives_a_racing_writer(open_store, s3_server):
    """Manifests are written once each (conditional put): a writer that lost the race re-reads
    the winner's manifest and publishes on top of it, so nobody's segments are lost."""
    import json

    store = open_store(dim=4)
    store.upsert(["a"], [[1, 0, 0, 0]], tier="cold")
    cold = store.cold
    seq = cold.manifest_seq
    theirs = {"format": 1, "store": store.catalog.uuid, "seq": seq + 1,
              "segments": {**{str(s): i for s, i in cold.manifest.items()},
                           "999": {"key": "x", "rows": 1, "bytes": 1, "parts": 1, "footer": [0, 0, 0]}}}
    s3_server.client().put_object(Bucket=cold.bucket, Key=cold._mkey(seq + 1), Body=json.dumps(theirs).encode())
    store.upsert(["b"], [[0, 1, 0, 0]], tier="cold")
    assert cold.manifest_seq == seq + 2 and 999 in cold.manifest and len(cold.manifest) == 3


CRASH = textwrap.dedent("""
    import os, signal, sys, numpy as np, tierstore
    from tierstore.tiers import cold as coldmod
    path, redis_url, endpoint, url, point = sys.argv[1:6]
    v = np.random.default_rng(0).standard_normal((900, 16)).astype(np.float32)
    store = tierstore.open(path=path, dim=16, env={}, hot={"redis_url": redis_url},
                           cold={"url": url, "endpoint_url": endpoint, "segment_size": 400})
    store.upsert(list(range(300)), v[:300], tier="hot")
    store.upsert(list(range(300, 900)), v[300:], tier="warm")
    store.move(list(range(600, 900)), "cold")  # one segment that completes
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "before-manifest":  # object uploaded, manifest not yet written
        coldmod.ColdTier._publish = die
    elif point == "before-flip":  # object and manifest in S3, catalog not flipped
        coldmod.ColdTier.commit = die
    else:  # catalog flipped, old copies not yet removed
        store._engine.retire = die
    print("ready", flush=True)
    store.move(list(range(0, 100)) + list(range(300, 400)), "cold")
""")


@pytest.mark.parametrize("point", ["before-manifest", "before-flip", "before-removal"])
def test_kill_9_while_demoting_to_cold_loses_and_duplicates_nothing(tmp_path, redis_server, s3_server, point, cold_section):
    path = str(tmp_path / "crash")
    cold = cold_section(s3_server, segment_size=400)
    proc = subprocess.run([sys.executable, "-c", CRASH, path, redis_server.url, s3_server.endpoint_url,
                           cold["url"], point], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with tierstore.open(path=path, dim=16, env={}, hot={"redis_url": redis_server.url}, cold=cold) as store:
        ids = [r.id for b in store.scan() for r in b]
        assert sorted(ids) == list(range(900))  # each once
        v = np.random.default_rng(0).standard_normal((900, 16)).astype(np.float32)
        for i in range(0, 900, 31):
            hits = store.query(v[i], k=3, ef=200, nprobe=1000)
            assert hits.ids()[0] == i and len(set(hits.ids())) == 3
        moved = store.get([0, 350])
        if point == "before-removal":
            assert moved[0].tier == moved[1].tier == "cold"
        else:  # rolled back: still where they were
            assert (moved[0].tier, moved[1].tier) == ("hot", "warm")
        rep = store.verify()
        assert rep["ok"], rep["problems"]
        if point == "before-manifest":
            assert rep["cold"]["orphan_objects"] == 1
        out = store.compact()["cold"]
        assert store.verify()["cold"]["orphan_objects"] == 0
        if point != "before-removal":
            assert out["orphans_deleted"] == 1
        st = store.stats()
        assert st["tiers"]["hot"]["num_docs"] == st["tiers"]["hot"]["count"]


def test_large_segments_upload_multipart(open_store, monkeypatch):
    from tierstore.tiers.cold import writer as coldmod

    monkeypatch.setattr(coldmod, "_MULTIPART", 64 * 1024)  # this ~0.5 MiB segment goes multipart
    store = open_store(dim=64)
    v = np.random.default_rng(11).standard_normal((2000, 64)).astype(np.float32)
    store.upsert(list(range(2000)), v, tier="cold")
    assert store.stats()["tiers"]["cold"]["s3_bytes"] > 64 * 1024
    rep = store.verify()
    assert rep["ok"] and rep["cold"]["checked_bytes"] == store.stats()["tiers"]["cold"]["s3_bytes"]
    assert store.query(v[123], k=1, nprobe=1000).ids() == [123]


def test_filter_on_a_field_added_after_the_segment_was_written(tmp_path, redis_server, s3_server, cold_section):
    cold = cold_section(s3_server)
    kw = dict(path=str(tmp_path / "s"), dim=8, env={}, hot={"redis_url": redis_server.url}, cold=cold)
    v = vectors(100, dim=8, seed=12)
    with tierstore.open(**kw) as store:
        store.upsert(list(range(100)), v, metadata=[{"color": "red" if i % 2 else "blue"} for i in range(100)],
                     tier="cold")
    with tierstore.open(schema={"color": "tag"}, **kw) as store:  # color becomes filterable now
        hits = store.query(v[3], k=10, filter={"color": "red"}, nprobe=1000)
        assert len(hits) == 10 and all(h.id % 2 == 1 for h in hits) and not hits.partial


def test_queries_during_cold_compaction_never_fail_or_go_partial(open_store):
    store = open_store(dim=16, cold={"segment_size": 300})
    v = vectors(900, seed=13)
    errors: list[str] = []
    stop = threading.Event()
    for s in range(0, 900, 300):
        store.upsert(list(range(s, s + 300)), v[s : s + 300], tier="cold")

    def loop():
        rng = np.random.default_rng(1)
        while not stop.is_set():
            i = int(rng.integers(450, 900))
            try:
                h = store.query(v[i], k=3, nprobe=1000)
                if h.partial or h.ids()[:1] != [i]:
                    errors.append(f"{i}: {h.ids()} partial={h.partial}")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for r in range(3):  # delete some rows, compact them away, repeatedly
            store.delete(list(range(r * 150, r * 150 + 150)))
            store.compact(0.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert store.verify()["ok"]
