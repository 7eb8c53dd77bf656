"""Distance math for the store's metrics, in one place.

Every tier must rank by the *same* number, because the query merges their candidates by distance
(engine/query.py) and the policy and the repeat cache compare distances across tiers. The convention,
everywhere (Redis's, hnswlib's and the numba kernels' own as well): **lower is closer**, and

==========  =================================  ==================================
metric      distance                           on prepared vectors (see prepare)
==========  =================================  ==================================
``cosine``  ``1 - q.x / (|q| |x|)``            ``1 - q.x`` (both unit)
``ip``      ``1 - q.x``                        the same (nothing to prepare)
``l2``      ``|q - x|^2`` (squared: no sqrt)   the same
==========  =================================  ==================================

This module holds the numpy side of it: the metric codes (:data:`METRIC_CODES`, what the numba
kernels branch on; they live in kernels.py because they need a compiled per-row distance), the
preparation a tier applies before indexing or scanning (:func:`prepare`), exact distances of
raw vectors (:func:`exact`, float64 when the caller passes float64) and of prepared ones
(:func:`exact_prepared`, :func:`pairwise`), and the re-score on the catalog's float32 records that
every hot search without exact vectors of its own answers with (:func:`rerank_on_catalog`).

>>> x = np.array([[3.0, 4.0], [1.0, 0.0]]); q = np.array([1.0, 0.0])
>>> exact("cosine", x, q).tolist(), exact("ip", x, q).tolist(), exact("l2", x, q).tolist()
([0.4, 0.0], [-2.0, 0.0], [20.0, 0.0])
>>> exact_prepared("cosine", prepare("cosine", x), q).astype(float).round(6).tolist()  # float32
[0.4, 0.0]
>>> code("ip"), METRICS
(1, ('cosine', 'ip', 'l2'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # (the catalog is only used through its public methods)
    from .catalog import Catalog

# Metric codes: registered once, here. The numba kernels (warm HNSW search, exact scan, cold scan)
# take these ints because compiled code cannot branch on strings; kernels.py imports the names,
# so a kernel's ``metric == L2`` is the same L2 as here. Never persisted (segments record the name).
COSINE, IP, L2 = 0, 1, 2
METRIC_CODES: dict[str, int] = {"cosine": COSINE, "ip": IP, "l2": L2}
METRICS: tuple[str, ...] = tuple(METRIC_CODES)  # the same names as config.METRICS (a unit test checks)


def code(metric: str) -> int:
    """The kernels' code of ``metric`` (KeyError for a name that is not a metric)."""
    return METRIC_CODES[metric]


def prepare(metric: str, x: np.ndarray) -> np.ndarray:
    """Rows ``x`` (n, dim) as the tiers index and scan them: float32, C-contiguous, and unit
    length under cosine (so its distance becomes ``1 - q.x``, what hnswlib's "ip" space, the
    kernels' dot branch and Redis compute). A row of norm 0 is left as it is rather than turned
    into NaNs (inputs.py refuses all-zero vectors under cosine; this only guards a norm that
    underflows)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    return x


def prepare_inplace(metric: str, x: np.ndarray) -> np.ndarray:
    """:func:`prepare` on rows that are already float32 and C-contiguous, overwriting them: for a
    large matrix (the hot stand-in loads every hot vector), where a prepared copy would double
    the memory it needs."""
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.where(norms > 0, norms, 1.0)
    return x


def exact(metric: str, vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distances (n,) from ``q`` to each row of ``vectors``, both *as given* (nothing prepared),
    computed in their dtype: pass float64 for distances a query returns (the catalog re-score),
    float32 where an estimate will do (the repeat cache)."""
    if metric == "l2":
        diff = vectors - q
        return np.einsum("ij,ij->i", diff, diff)
    dot = vectors @ q
    if metric == "cosine":
        return 1.0 - dot / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    return 1.0 - dot


def exact_prepared(metric: str, vectors: np.ndarray, q: np.ndarray, sqnorms: np.ndarray | None = None) -> np.ndarray:
    """Distances (n,) from a prepared ``q`` (unit under cosine) to rows that are prepared too, or,
    under cosine, stored as given with their squared norms ``sqnorms`` (the cold tier keeps its
    vectors unnormalised): ``1 - q.x / |x|``. What the tiers scan exactly (the warm growing
    segment's selective filters, a read-only process's mirror of it, the cold rerank)."""
    if metric == "l2":
        diff = vectors - q
        return np.einsum("ij,ij->i", diff, diff)
    dot = vectors @ q
    if metric == "cosine" and sqnorms is not None:
        return 1.0 - dot / np.sqrt(sqnorms)
    return 1.0 - dot


def pairwise(metric: str, qs: np.ndarray, rows: np.ndarray, sqnorms: np.ndarray | None = None) -> np.ndarray:
    """Distances (m, n) of prepared queries ``qs`` (m, dim) to prepared ``rows`` (n, dim) in one
    matrix product: the expanded ``|x|^2 - 2 q.x + |q|^2`` for l2 (``sqnorms``: the rows' squared
    norms, required for l2), ``1 - q.x`` otherwise. A brute-force scan of a whole tier (the hot
    tier's catalog stand-in); the expansion loses a little precision, so its best candidates are
    re-scored (:func:`rerank_on_catalog`)."""
    prod = qs @ rows.T
    if metric == "l2":
        if sqnorms is None:
            raise ValueError("pairwise l2 needs the rows' squared norms")
        return sqnorms[None, :] - 2.0 * prod + (qs * qs).sum(axis=1, keepdims=True)
    return 1.0 - prod


def rerank_on_catalog(catalog: Catalog, metric: str, q: np.ndarray, iids: Sequence[int], approx: Sequence[float],
                      k: int) -> tuple[list[int], list[float]]:
    """The best ``k`` of ``iids`` (ids, distances ascending; ties by id) by exact distance in
    float64 on the catalog's float32 records: what every hot search that does not hold exact
    vectors itself (the catalog stand-in, RediSearch FLOAT16, quantised vector sets) answers with,
    so hot distances are as exact as the other tiers'. A candidate whose record is gone keeps its
    ``approx`` distance: it may be moving to cold (its record leaves LMDB at the flip while queries
    of an older snapshot still want it), and the query's catalog check decides whether it counts."""
    if not len(iids):
        return [], []
    d = [float(x) for x in approx]
    with catalog.read(buffers=True) as txn:
        raws = [catalog.vector_raw(txn, iid) for iid in iids]
        keep = [j for j, raw in enumerate(raws) if raw is not None]
        mat = (np.frombuffer(b"".join(raws[j] for j in keep), np.float32).reshape(len(keep), catalog.dim)
               if keep else None)
    if mat is not None:
        exact_d = exact(metric, mat.astype(np.float64), np.asarray(q, np.float64))
        for j, dj in zip(keep, exact_d.tolist(), strict=True):
            d[j] = dj
    order = sorted(range(len(iids)), key=lambda j: (d[j], iids[j]))[:k]
    return [iids[j] for j in order], [d[j] for j in order]


__all__ = ["COSINE", "IP", "L2", "METRICS", "METRIC_CODES", "code", "exact", "exact_prepared", "pairwise", "prepare",
           "prepare_inplace", "rerank_on_catalog"]
