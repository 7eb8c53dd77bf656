"""Cold segment format, k-means kernels (vs numpy) and the pruning bound (property test)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierstore import filters, kernels
from tierstore.errors import IntegrityError
from tierstore.tiers.cold import format as coldseg


def test_nearest_centroid_equals_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 12)).astype(np.float32)
    c = rng.normal(size=(17, 12)).astype(np.float32)
    labels = np.empty(500, np.int32)
    dist = np.empty(500, np.float32)
    x_sq = np.einsum("ij,ij->i", x, x).astype(np.float32)
    c_sq = np.einsum("ij,ij->i", c, c).astype(np.float32)
    kernels.nearest_centroid(x[100:] @ c.T, x_sq, c_sq, labels, dist, 100)
    kernels.nearest_centroid(x[:100] @ c.T, x_sq, c_sq, labels, dist, 0)
    ref = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    assert (labels == ref.argmin(1)).all()
    np.testing.assert_allclose(dist, ref.min(1), rtol=1e-4, atol=1e-4)


def test_cluster_sums_and_radii_equal_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    labels = rng.integers(0, 7, 300).astype(np.int32)
    sums, counts = kernels.cluster_sums(x, labels, 7)
    for j in range(7):
        np.testing.assert_allclose(sums[j], x[labels == j].astype(np.float64).sum(0), rtol=1e-9, atol=1e-9)
        assert counts[j] == (labels == j).sum()
    c = (sums / counts[:, None]).astype(np.float32)
    radii = kernels.cluster_radii(x, labels, c)
    for j in range(7):
        ref = np.sqrt(((x[labels == j].astype(np.float64) - c[j]) ** 2).sum(1)).max()
        assert radii[j] == pytest.approx(ref, rel=1e-12)


def test_kmeans_finds_separated_clusters_and_drops_empty_ones():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 8)) * 20
    truth = rng.integers(0, 6, 3000)
    x = (centres[truth] + rng.normal(size=(3000, 8))).astype(np.float32)
    c, labels = coldseg.kmeans(x, 6, seed=1)
    # every found cluster is pure: one true cluster per label
    for j in range(len(c)):
        assert len(set(truth[labels == j].tolist())) == 1
    c2, labels2 = coldseg.kmeans(x[:3], 10)  # more clusters asked than rows
    assert len(c2) <= 3 and labels2.max() < len(c2)


def _segment(metric="l2", dtype="float32", n=400, dim=8, seed=0, fields=("color",), version=coldseg.FORMAT):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    metas = [{"color": ["red", "blue", "green"][i % 3], "n": i} for i in range(n)]
    buf = io.BytesIO()
    b = coldseg.build(buf, np.arange(1000, 1000 + n, dtype=np.uint64), x, metas, [f"u{i}" for i in range(n)],
                      metric=metric, dtype=dtype, fields=list(fields), segment_id=7, store="s", version=version)
    return x, metas, buf.getvalue(), b


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_build_and_read_back_every_row(dtype, version):
    x, metas, raw, b = _segment(dtype=dtype, version=version)
    off, length, sumv = coldseg.parse_trailer(raw, "t")
    assert (off, length, sumv) == (b.footer_offset, b.footer_length, b.footer_checksum) and len(raw) == b.size
    f = coldseg.parse_footer(raw[off : off + length], sumv)
    assert f.rows == 400 and f.parts == b.parts and int(f.counts.sum()) == 400 and f.dtype == dtype
    assert f.format == version
    assert coldseg.check_object(raw, (off, length, sumv), "t")[0] == []
    if version == 2:  # exact vectors in checked pages, row order
        assert f.pages == 50 and f.page_rows == 8
        pages = []
        for g in range(f.pages):
            a, e = f.page_range(g)
            coldseg.verify_page(raw[a:e], f, g, "t")
            pages.append(coldseg.decode_page(raw[a:e], f))
        exact = np.concatenate(pages)
    seen = np.zeros(400, bool)
    for p in range(f.parts):
        blk_raw = raw[int(f.offsets[p]) : int(f.offsets[p + 1])]
        coldseg.verify_block(blk_raw, f, p, "t")
        blk = coldseg.Block(blk_raw, int(f.counts[p]), 8, dtype, f.format)
        for r, iid in enumerate(blk.iids.tolist()):
            i = iid - 1000
            seen[i] = True
            want = x[i].astype(np.float16).astype(np.float32) if dtype == "float16" else x[i]
            if version == 1:
                np.testing.assert_array_equal(blk.vectors[r], want)
            else:  # codes: within half a step of the row; the page holds it exactly
                assert blk.vectors is None
                np.testing.assert_allclose(blk.codes[r] * blk.scales[r], want, atol=blk.scales[r] * 0.51)
                np.testing.assert_array_equal(exact[int(f.row_starts[p]) + r], want)
            assert blk.sqnorms[r] == np.float32(want @ want) or abs(blk.sqnorms[r] - want @ want) < 1e-4
            assert b.order[int(f.row_starts[p]) + r] == i  # the object row <-> input row map
        red = blk.mask(filters.compile_filter({"color": "red"}, {"color": "tag"}), {"color": "tag"})
        assert red.tolist() == [metas[i - 1000]["color"] == "red" for i in blk.iids.tolist()]
    assert seen.all()


def test_flipped_byte_is_detected():
    _x, _m, raw, b = _segment()
    off, length, sumv = coldseg.parse_trailer(raw, "t")
    f = coldseg.parse_footer(raw[off : off + length], sumv)
    blk = bytearray(raw[int(f.offsets[0]) : int(f.offsets[1])])
    blk[20] ^= 0x01
    with pytest.raises(IntegrityError, match="partition 0 checksum"):
        coldseg.verify_block(bytes(blk), f, 0, "t")
    bad_footer = bytearray(raw[off : off + length])
    bad_footer[-3] ^= 0xFF
    with pytest.raises(IntegrityError, match="footer checksum"):
        coldseg.parse_footer(bytes(bad_footer), sumv)
    a, e = f.page_range(3)
    page = bytearray(raw[a:e])
    page[5] ^= 0x10
    with pytest.raises(IntegrityError, match="vectors page 3 checksum"):
        coldseg.verify_page(bytes(page), f, 3, "t")
    bad = bytearray(raw)
    bad[a + 5] ^= 0x10
    assert coldseg.check_object(bytes(bad), (off, length, sumv), "t")[0] == ["t: vectors of rows 24..31 checksum mismatch"]


def _true_min_per_partition(x, q, f, order, metric):
    xs = x[order]
    xs, q = xs.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        d = 1 - (xs / np.linalg.norm(xs, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    elif metric == "ip":
        d = 1 - xs @ q
    else:
        d = ((xs - q) ** 2).sum(1)
    return np.array([d[int(f.row_starts[p]) : int(f.row_starts[p + 1])].min() for p in range(f.parts)])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), metric=st.sampled_from(["cosine", "ip", "l2"]),
       dtype=st.sampled_from(["float32", "float16"]), scale=st.sampled_from([0.01, 1.0, 30.0]),
       offset=st.sampled_from([0.0, 80.0]), dim=st.sampled_from([6, 384]),
       cdtype=st.sampled_from([np.float32, np.float64]))
def test_lower_bound_never_exceeds_a_partitions_true_best(seed, metric, dtype, scale, offset, dim, cdtype):
    """The pruning rule skips a partition only when its bound exceeds the current k-th best; it
    is safe iff the bound never exceeds the distance of the partition's closest member. The
    cold tier passes float32 centroids (float32 products, their rounding inside the bound) and
    float32 queries; float64 is the reference path."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(300, dim)) * scale + offset).astype(np.float32)  # offset: large norms, small spread
    if dtype == "float16":
        x = x.astype(np.float16).astype(np.float32)
    buf = io.BytesIO()
    b = coldseg.build(buf, np.arange(300, dtype=np.uint64), x, [{}] * 300, list(range(300)), metric=metric,
                      dtype=dtype, fields=[], parts=int(rng.integers(1, 30)), segment_id=1, store="s")
    raw = buf.getvalue()
    f = coldseg.parse_footer(raw[b.footer_offset : b.footer_offset + b.footer_length])
    qs = np.concatenate([(rng.normal(size=(3, dim)) * scale + offset), x[rng.integers(0, 300, 2)]]).astype(np.float32)
    qn = qs / np.linalg.norm(qs, axis=1, keepdims=True) if metric == "cosine" else qs
    c = f.centroids.astype(cdtype)
    c64 = c.astype(np.float64)
    _rank, lb = coldseg.rank_and_bound(qn.astype(cdtype), c, np.einsum("ij,ij->i", c64, c64),
                                       f.radii.astype(np.float64), metric)
    for i, q in enumerate(qs):
        true_min = _true_min_per_partition(x, q, f, b.order, metric)
        assert (lb[i] <= true_min + 1e-6 * (1 + np.abs(true_min))).all(), (lb[i] - true_min).max()


def test_float16_falls_back_to_float32_for_values_out_of_range():
    x = np.ones((20, 4), np.float32)
    x[3, 1] = 1e6  # beyond float16's 65504
    buf = io.BytesIO()
    b = coldseg.build(buf, np.arange(20, dtype=np.uint64), x, [{}] * 20, list(range(20)), metric="l2",
                      dtype="float16", fields=[], parts=2, segment_id=1, store="s")
    raw = buf.getvalue()
    f = coldseg.parse_footer(raw[b.footer_offset : b.footer_offset + b.footer_length])
    assert f.dtype == "float32"


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_metadata_summary_never_rules_out_a_matching_partition(seed):
    """may_match(filter, summaries, p) is False only when no row of partition p matches."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    x = rng.normal(size=(n, 4)).astype(np.float32)
    colors = ["red", "blue", "green", "gold"]
    metas = []
    for i in range(n):
        m = {}
        if rng.random() < 0.9:
            m["color"] = colors[int(x[i, 0] > 0) * 2 + int(rng.random() < 0.1)]  # follows the vectors
        if rng.random() < 0.8:
            m["n"] = float(np.round(x[i, 1] * 10))
        metas.append(m)
    schema = {"color": "tag", "n": "numeric"}
    buf = io.BytesIO()
    b = coldseg.build(buf, np.arange(n, dtype=np.uint64), x, metas, list(range(n)), metric="l2", dtype="float32",
                      fields=sorted(schema), parts=int(rng.integers(1, 12)), segment_id=1, store="s", kinds=schema)
    raw = buf.getvalue()
    f = coldseg.parse_footer(raw[b.footer_offset : b.footer_offset + b.footer_length])
    specs = [{"color": "red"}, {"color": {"$in": ["blue", "gold"]}}, {"color": {"$ne": "red"}},
             {"n": {"$gte": float(rng.integers(-20, 20))}}, {"n": {"$lt": float(rng.integers(-20, 20))}},
             {"n": float(rng.integers(-5, 5))}, {"$or": [{"color": "gold"}, {"n": {"$gt": 15}}]},
             {"$and": [{"color": "green"}, {"n": {"$lte": 0}}]}]
    for spec in specs:
        node = filters.compile_filter(spec, schema)
        for p in range(f.parts):
            rows = b.order[int(f.row_starts[p]) : int(f.row_starts[p + 1])]
            if not coldseg.may_match(node, f.summaries, p):
                assert not any(filters.matches(node, metas[r]) for r in rows.tolist()), (spec, p)


def test_a_block_keeps_the_masks_of_recent_filters_and_rebuilds_them_when_the_schema_changes():
    """Block.mask memoises per filter (a filtered query masks dozens of blocks, and filters repeat):
    the kept mask is the one filters.mask computes, read-only, and a schema that gained a field
    (read through the catalog's metadata) gets masks built from the new columns."""
    x = np.random.default_rng(3).normal(size=(40, 4)).astype(np.float32)
    metas = [{"cat": f"c{i % 3}", "n": i} for i in range(40)]
    buf = io.BytesIO()
    b = coldseg.build(buf, np.arange(40, dtype=np.uint64), x, metas, list(range(40)), metric="l2",
                      dtype="float32", fields=["cat"], parts=1, segment_id=1, store="s", version=2)
    raw = buf.getvalue()
    f = coldseg.parse_footer(raw[b.footer_offset : b.footer_offset + b.footer_length])
    blk = coldseg.Block(memoryview(raw)[int(f.offsets[0]) : int(f.offsets[1])], int(f.counts[0]), 4, "float32", 2)
    order = np.asarray(blk.iids, np.int64)
    schema = {"cat": "tag"}
    node = filters.compile_filter({"cat": {"$in": ["c1", "c2"]}}, schema)
    first = blk.mask(node, schema)
    assert first.tolist() == [metas[i]["cat"] in ("c1", "c2") for i in order]
    assert blk.mask(node, schema) is first and not first.flags.writeable
    for i in range(12):  # more filters than a block keeps: still right, and the first one recomputed
        other = filters.compile_filter({"cat": f"c{i}"}, schema)
        assert blk.mask(other, schema).tolist() == [metas[j]["cat"] == f"c{i}" for j in order]
    assert blk.mask(node, schema).tolist() == first.tolist()
    wider = {"cat": "tag", "n": "numeric"}  # a field declared after the segment was written
    by_n = filters.compile_filter({"n": {"$in": [3, 7]}, "cat": "c1"}, wider)
    got = blk.mask(by_n, wider, lambda iids: [metas[int(i)] for i in iids])
    assert got.tolist() == [metas[i]["n"] in (3, 7) and metas[i]["cat"] == "c1" for i in order]
