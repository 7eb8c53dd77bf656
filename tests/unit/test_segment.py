"""Warm segments: hnswlib graph conversion, the numba HNSW search vs numpy and vs hnswlib."""

from __future__ import annotations

import json

import hnswlib
import numpy as np
import pytest

from tierstore import kernels
from tierstore.errors import IntegrityError
from tierstore.tiers.warm import segment


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(base: np.ndarray, q: np.ndarray, k: int, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
    rows = np.arange(len(base)) if rows is None else rows
    d = ((base[rows] - q) ** 2).sum(1) if metric == "l2" else 1.0 - base[rows] @ q
    return rows[np.argsort(d, kind="stable")[:k]]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 32))
    x = centres[rng.integers(0, 20, 3000)] + 0.5 * rng.standard_normal((3000, 32))
    qs = centres[rng.integers(0, 20, 50)] + 0.5 * rng.standard_normal((50, 32))
    return unit(x), unit(qs)


@pytest.fixture(scope="module")
def seg(tmp_path_factory, data):
    x, _ = data
    path = tmp_path_factory.mktemp("w") / "seg-00000001"
    return segment.Segment.open(segment.write_segment(path, np.arange(len(x), dtype=np.uint64) + 1000, x,
                                                      metric="cosine", m=8, ef_construction=100))


def test_converted_graph_is_well_formed(seg):
    n, m0 = seg.links0.shape
    assert m0 == 2 * seg.meta["m"] and n == 3000
    links = np.asarray(seg.links0)
    assert links.max() < n and links.min() >= -1
    assert not (links == np.arange(n)[:, None]).any()  # no self loops
    assert int(seg.levels[seg.meta["entry"]]) == seg.meta["max_level"]
    assert seg.upper_off[-1] == len(seg.upper) == int(np.asarray(seg.levels, np.int64).sum()) * seg.meta["m"]
    assert sorted(np.asarray(seg.iids).tolist()) == list(range(1000, 4000))


def test_exhaustive_search_equals_numpy(seg, data):
    x, qs = data
    vec = np.asarray(seg.vectors)
    for q in qs[:10]:
        rows, dist = seg.search(q, k=10, ef=3000, rerank=3000)
        assert rows.tolist() == brute(vec, q, 10, "cosine").tolist()
        np.testing.assert_allclose(dist, 1.0 - vec[rows] @ q, atol=1e-5)


def test_recall_close_to_hnswlib_on_the_same_data(seg, data):
    x, qs = data
    index = hnswlib.Index(space="ip", dim=32)
    index.init_index(max_elements=len(x), M=8, ef_construction=100, random_seed=100)
    index.add_items(x, np.arange(len(x)))
    index.set_ef(32)
    ours, theirs, truth = [], [], []
    for q in qs:
        rows, _ = seg.search(q, k=10, ef=32)
        ours.append(set((np.asarray(seg.iids)[rows] - 1000).tolist()))
        theirs.append(set(index.knn_query(q, k=10)[0][0].tolist()))
        truth.append(set(brute(x, q, 10, "cosine").tolist()))
    r_ours = np.mean([len(a & t) / 10 for a, t in zip(ours, truth, strict=True)])
    r_theirs = np.mean([len(a & t) / 10 for a, t in zip(theirs, truth, strict=True)])
    assert r_ours >= 0.9 and r_ours >= r_theirs - 0.03, (r_ours, r_theirs)


def test_mask_is_respected_and_exact_when_exhaustive(seg, data):
    _, qs = data
    vec = np.asarray(seg.vectors)
    rng = np.random.default_rng(1)
    for frac in (0.5, 0.05, 0.001):
        ok = rng.random(seg.n) < frac
        for q in qs[:5]:
            rows, _ = seg.search(q, k=10, ef=64, ok=ok)
            assert ok[rows].all()
            expect = brute(vec, q, 10, "cosine", np.flatnonzero(ok))
            if frac < 0.5:  # selective masks take the exact path
                assert rows.tolist() == expect.tolist()
            else:
                assert len(set(rows.tolist()) & set(expect.tolist())) >= 8
    assert seg.search(qs[0], k=5, ef=16, ok=np.zeros(seg.n, bool))[0].tolist() == []


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_other_metrics(tmp_path, metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((800, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    s = segment.Segment.open(segment.write_segment(tmp_path / "s", np.arange(800, dtype=np.uint64), x, metric=metric))
    rows, dist = s.search(q, k=5, ef=800, rerank=800)
    vec = np.asarray(s.vectors)
    assert rows.tolist() == brute(vec, q, 5, metric).tolist()
    expect = ((vec[rows] - q) ** 2).sum(1) if metric == "l2" else 1.0 - vec[rows] @ q
    np.testing.assert_allclose(dist, expect, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 10, 64, 65, 500])
def test_exact_scan_matches_numpy(data, k):
    """Both paths (the best k kept as they come up to k = 64, one stable sort beyond) give numpy's
    stable order, ties included (duplicated rows: the earlier one in ``rows`` first)."""
    x, qs = data
    rows = np.concatenate([np.arange(0, 3000, 7), np.arange(0, 3000, 7)[::-1]])  # every row twice
    got, dist = kernels.exact_scan(qs[0], x, rows, 0, k)
    d = (1.0 - x[rows] @ qs[0]).astype(np.float32)
    want = rows[np.argsort(d, kind="stable")[:k]]
    assert got.tolist() == want.tolist()
    np.testing.assert_allclose(dist, 1.0 - x[got] @ qs[0], atol=1e-5)


def test_quantization_error_is_bounded(data):
    x, _ = data
    codes, scales = segment.quantize(x)
    assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= 127
    assert (np.abs(codes * scales - x) <= scales / 2 + 1e-7).all()


def test_tiny_and_single_row_segments(tmp_path):
    one = segment.Segment.open(segment.write_segment(tmp_path / "a", np.array([5], np.uint64),
                                                     unit(np.ones((1, 4))), metric="cosine"))
    rows, dist = one.search(np.ones(4, np.float32) / 2, k=3, ef=8)
    assert rows.tolist() == [0] and abs(dist[0]) < 1e-6


def test_corrupt_or_foreign_segments_raise_integrity_error(tmp_path, data):
    x, _ = data
    p = segment.write_segment(tmp_path / "s", np.arange(100, dtype=np.uint64), x[:100], metric="cosine")
    (p / segment.CHECKSUMS).unlink()  # a segment from before checksums: the parsing checks still apply
    meta = json.loads((p / "meta.json").read_text())
    (p / "meta.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(IntegrityError, match="format 99"):
        segment.Segment.open(p)
    (p / "meta.json").write_text(json.dumps({**meta, "n": 101}))
    with pytest.raises(IntegrityError, match="shapes"):
        segment.Segment.open(p)
    (p / "meta.json").write_text(json.dumps(meta))
    (p / "links0.npy").write_bytes(b"garbage")
    with pytest.raises(IntegrityError, match="links0"):
        segment.Segment.open(p)


def test_write_is_atomic_and_replaces_a_stale_tmp(tmp_path, data):
    x, _ = data
    stale = tmp_path / "seg-00000002.tmp"
    stale.mkdir()
    (stale / "junk").write_text("left by a crash")
    p = segment.write_segment(tmp_path / "seg-00000002", np.arange(50, dtype=np.uint64), x[:50], metric="cosine")
    assert not stale.exists() and sorted(f.name for f in p.iterdir()) == sorted(
        [f"{a}.npy" for a in segment._ARRAYS] + ["meta.json", "checksums.txt"])


def test_checksums_catch_any_changed_byte_at_open_and_in_verify_files(tmp_path, data):
    x, _ = data
    p = segment.write_segment(tmp_path / "s", np.arange(300, dtype=np.uint64), x[:300], metric="cosine")
    seg = segment.Segment.open(p)
    assert seg.checksums is not None and set(seg.checksums) == set(segment.FILES)
    assert seg.verify_files() == ([], sum(f.stat().st_size for f in p.iterdir() if f.name != "checksums.txt"))
    rng = np.random.default_rng(1)
    for name in [*segment.FILES, segment.CHECKSUMS]:
        raw = bytearray((p / name).read_bytes())
        for off in {0, len(raw) - 1, int(rng.integers(len(raw)))}:
            good = raw[off]
            raw[off] ^= int(rng.integers(1, 256))
            (p / name).write_bytes(raw)
            problems, _ = seg.verify_files()
            assert problems and any(name in msg for msg in problems), (name, off, problems)
            with pytest.raises(IntegrityError, match=name.replace(".", r"\.")):
                segment.Segment.open(p)
            raw[off] = good
            (p / name).write_bytes(raw)
    assert seg.verify_files()[0] == []
    whole = (p / "vectors.npy").read_bytes()
    (p / "vectors.npy").write_bytes(whole[:-4])  # truncated: the quick check (sizes) sees it
    assert "vectors.npy: " in seg.verify_files(full=False)[0][0]
    (p / "vectors.npy").write_bytes(whole)
    (p / "meta.json").write_text(json.dumps({**json.loads((p / "meta.json").read_text()), "note": 1}))
    segment.write_checksums(p)  # the table follows the files again
    assert segment.Segment.open(p).verify_files()[0] == []
    (p / segment.CHECKSUMS).unlink()
    legacy = segment.Segment.open(p)  # no checksums: opens, nothing to compare
    assert legacy.checksums is None and legacy.verify_files() == ([], 0)


def test_batch_search_equals_single_queries(seg, data):
    _, qs = data
    rows, dist = seg.search_batch(qs, k=10, ef=48)
    for i, q in enumerate(qs):
        r1, d1 = seg.search(q, k=10, ef=48)
        assert rows[i].tolist() == r1.tolist()
        np.testing.assert_allclose(dist[i], d1, rtol=1e-6)
    ok = np.zeros(seg.n, bool)
    ok[::2] = True
    rows, _ = seg.search_batch(qs[:5], k=10, ef=48, ok=ok)
    assert ok[rows[rows >= 0]].all()


def test_exported_reads_the_same_graph_through_a_memory_map(tmp_path):
    """exported() (a file in the segment's directory, memory-mapped) gives export_graph()'s arrays,
    and leaves no file behind; a segment written from it serves the same rows."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = segment.new_index(24, "cosine", 3000, 16, 64)
    index.add_items(x, np.arange(3000))
    want = segment.export_graph(index, 24)
    with segment.exported(index, 24, tmp_path) as got:
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(value), err_msg=key)
        seg = segment.Segment.open(segment.write_graph(tmp_path / "seg", np.arange(3000, dtype=np.uint64)[got["labels"]],
                                                       got, metric="cosine"))
    assert [p.name for p in tmp_path.iterdir()] == ["seg"]
    for i in range(0, 3000, 97):
        rows, _ = seg.search(x[i], k=1, ef=64)
        assert int(seg.iids[rows[0]]) == i
    assert seg.verify_files()[0] == []


def test_a_filtered_search_keeps_its_recall_by_widening_the_beam_or_scanning(tmp_path):
    """The walk's beam of ef rows holds ~s*ef eligible ones under a mask keeping a share s: plain
    ef 64 found 0.70-0.87 of the filtered top 10 here (wordnet warm, 2.5-10% filters: 0.71-0.74).
    filtered_plan scans the allowed rows exactly while that is cheaper than the walk, and widens the
    beam to ef / s^1.5 past that; both are measured against the plain walk."""
    rng = np.random.default_rng(11)
    n = 30_000
    x = unit(rng.standard_normal((n, 32)))
    qs = unit(rng.standard_normal((25, 32)))
    s = segment.Segment.open(segment.write_segment(tmp_path / "seg-00000001", np.arange(n, dtype=np.uint64), x,
                                                   metric="cosine", m=16, ef_construction=100))
    for frac, path in ((0.05, "exact"), (0.15, "exact"), (0.3, "walk"), (0.5, "walk")):
        ok = rng.random(n) < frac
        allowed = np.flatnonzero(ok)
        plan = s.filtered_plan(len(allowed), 64, 10)
        assert (plan == 0) == (path == "exact") and (plan == 0 or plan > 64)
        got = plain = 0
        for q in qs:
            want = set(brute(x, q, 10, "cosine", allowed).tolist())
            rows, _ = s.search(q, 10, 64, ok=ok)
            got += len(set(rows.tolist()) & want)
            visited, tag = np.zeros(n, np.uint32), 1
            rows, _ = kernels.hnsw_search(q, s.links0, s.levels, s.upper, s.upper_off, int(s.meta["m"]),
                                          int(s.meta["entry"]), int(s.meta["max_level"]), s.codes, s.scales,
                                          s.vectors, s.sqnorms, s.metric_code, ok, 64, 64, 10, visited, tag)
            plain += len(set(rows.tolist()) & want)
        assert got / (10 * len(qs)) >= 0.95 and got > plain, (frac, got, plain)
