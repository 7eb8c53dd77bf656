"""tierstore.distance against plain numpy references, one test per function and metric, plus the
places that must agree with it (config's metric names, the kernels' codes, the catalog re-score)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from tierstore import config, distance, kernels
from tierstore.catalog import TIER_HOT, Catalog, Entry, iid_of

METRICS = ["cosine", "ip", "l2"]


def _ref(metric: str, x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The store's convention, written out on float64 (lower is closer)."""
    x, q = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        return np.array([float(np.sum((row - q) ** 2)) for row in x])
    dots = np.array([float(np.dot(row, q)) for row in x])
    if metric == "ip":
        return 1.0 - dots
    return 1.0 - dots / (np.sqrt((x * x).sum(axis=1)) * np.sqrt(q @ q))


def _data(seed: int = 0, n: int = 50, dim: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, dim)) * rng.uniform(0.1, 10.0, (n, 1))).astype(np.float32)
    return x, rng.standard_normal(dim).astype(np.float32) * 3


def test_doctests():
    result = doctest.testmod(distance, report=True, verbose=False)
    assert result.failed == 0 and result.attempted > 0


def test_metric_names_match_config():
    assert tuple(config.METRICS) == distance.METRICS
    assert sorted(distance.METRIC_CODES.values()) == list(range(len(distance.METRICS)))
    assert [distance.code(m) for m in ("cosine", "ip", "l2")] == [distance.COSINE, distance.IP, distance.L2]
    with pytest.raises(KeyError):
        distance.code("hamming")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_matches_numpy(metric, dtype):
    x, q = _data(1)
    got = distance.exact(metric, x.astype(dtype), q.astype(dtype))
    assert got.dtype == dtype and got.shape == (len(x),)
    np.testing.assert_allclose(got, _ref(metric, x, q), rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("metric", METRICS)
def test_prepare(metric):
    x, _ = _data(2)
    x[3] = 0.0
    p = distance.prepare(metric, x.astype(np.float64))
    assert p.dtype == np.float32 and p.flags.c_contiguous
    if metric == "cosine":
        norms = np.linalg.norm(p, axis=1)
        np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-6)
        assert not p[3].any()  # a zero row stays zero, never NaN
    else:
        np.testing.assert_array_equal(p, x)
    y = x.copy()
    assert distance.prepare_inplace(metric, y) is y
    np.testing.assert_array_equal(y, p)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_prepared_matches_numpy(metric):
    x, q = _data(3)
    want = _ref(metric, x, q)
    qp = distance.prepare(metric, q[None, :])[0]
    np.testing.assert_allclose(distance.exact_prepared(metric, distance.prepare(metric, x), qp), want,
                               rtol=1e-4, atol=1e-4)
    # rows as stored with their squared norms (the cold tier): the same distances
    sq = np.einsum("ij,ij->i", x, x).astype(np.float32)
    np.testing.assert_allclose(distance.exact_prepared(metric, x, qp, sq) if metric == "cosine"
                               else distance.exact_prepared(metric, x, qp), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_matches_numpy(metric):
    x, _ = _data(4)
    qs, _ = _data(5, n=3)
    rows = distance.prepare(metric, x)
    got = distance.pairwise(metric, distance.prepare(metric, qs), rows, np.einsum("ij,ij->i", rows, rows))
    assert got.shape == (3, len(x))
    for i in range(3):
        np.testing.assert_allclose(got[i], _ref(metric, x, qs[i]), rtol=1e-3, atol=1e-3)


def test_pairwise_l2_needs_the_squared_norms():
    with pytest.raises(ValueError):
        distance.pairwise("l2", np.ones((1, 2), np.float32), np.ones((3, 2), np.float32))


@pytest.mark.parametrize("metric", METRICS)
def test_kernels_use_the_same_codes(metric):
    """The numba exact scan, given distance.code(metric), ranks and scores like numpy."""
    x, q = _data(6, n=200)
    rows = distance.prepare(metric, x)
    qp = np.ascontiguousarray(distance.prepare(metric, q[None, :])[0])
    got_rows, got_d = kernels.exact_scan(qp, rows, np.arange(len(x), dtype=np.int64), distance.code(metric), 10)
    want = _ref(metric, x, q)
    np.testing.assert_allclose(got_d, np.sort(want)[:10], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(want[got_rows], np.sort(want)[:10], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_rerank_on_catalog(tmp_path, metric):
    x, q = _data(7, n=6, dim=4)
    cat = Catalog(tmp_path / "cat", dim=4, metric=metric, schema={})
    try:
        iids = [iid_of(f"v{i}") for i in range(6)]
        with cat.write() as txn:
            for i, iid in enumerate(iids[:5]):  # the last has no record: it keeps its estimate
                cat.put_entry(txn, Entry(iid, TIER_HOT, 0, i, 0, 0, 1, f"v{i}"))
                cat.put_vector(txn, iid, x[i].tobytes())
        approx = [9.0, 9.0, 9.0, 9.0, 9.0, -1e6]
        got_ids, got_d = distance.rerank_on_catalog(cat, metric, q, iids, approx, 4)
        want = _ref(metric, x[:5], q)
        order = sorted(range(5), key=lambda j: (want[j], iids[j]))
        assert got_ids == [iids[5]] + [iids[j] for j in order[:3]]
        np.testing.assert_allclose(got_d, [-1e6] + [want[j] for j in order[:3]], rtol=1e-12, atol=1e-12)
        assert distance.rerank_on_catalog(cat, metric, q, [], [], 4) == ([], [])
    finally:
        cat.close()
