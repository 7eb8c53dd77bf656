"""numba kernels of the cold tier: the scan over every probed partition of every segment, and
the int8 row codes it scans (format 2). Like :mod:`tierstore.kernels`: ``cache=True``, ``nogil``,
each with a numpy reference in ``tests/unit/test_kernels.py``.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types as _nbt
from numba.extending import intrinsic as _intrinsic

from .distance import COSINE, L2  # the metric codes (numba compiles these globals in as constants)

# --- cold tier: one scan over every probed partition of every segment ------------------------------
#
# A query's probed partitions live in separate buffers (memory-mapped cache files, slices of fetched
# GET bodies): concatenating them would copy megabytes per query. The scan takes their *addresses*
# instead (``arr.ctypes.data``; the caller keeps the arrays alive for the call) and views each one
# as an array inside the kernel.


def _pointer_intrinsic(ty):  # an int address -> a typed pointer for nb.carray
    @_intrinsic
    def as_pointer(typingctx, addr):
        sig = _nbt.CPointer(ty)(_nbt.intp)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(_nbt.CPointer(ty)))

        return sig, codegen

    return as_pointer


_f32_at = _pointer_intrinsic(_nbt.float32)
_i8_at = _pointer_intrinsic(_nbt.int8)
_u8_at = _pointer_intrinsic(_nbt.uint8)


@nb.njit(cache=True, nogil=True, inline="always")
def _keep(out_d: np.ndarray, out_b: np.ndarray, out_r: np.ndarray, size: int, cap: int, d: float, b: int,
          r: int) -> int:
    """Insert (d, b, r) into the ascending list of ``size`` entries (capacity ``cap``); returns the new size."""
    pos = size if size < cap else cap - 1
    while pos > 0 and out_d[pos - 1] > d:
        out_d[pos] = out_d[pos - 1]
        out_b[pos] = out_b[pos - 1]
        out_r[pos] = out_r[pos - 1]
        pos -= 1
    out_d[pos] = d
    out_b[pos] = b
    out_r[pos] = r
    return size + 1 if size < cap else cap


@nb.njit(cache=True, nogil=True, fastmath=True)
def _cold_scan_one(q: np.ndarray, metric: int, items: np.ndarray, vec: np.ndarray, sqn: np.ndarray,
                   scale: np.ndarray, mask: np.ndarray, nrows: np.ndarray, dim: int, out_d: np.ndarray,
                   out_b: np.ndarray, out_r: np.ndarray) -> None:
    cap = out_d.shape[0]
    qq = np.float32(0.0)
    for j in range(dim):
        qq += q[j] * q[j]
    size = 0
    for t in range(items.shape[0]):
        b = items[t]
        n = nrows[b]
        if n == 0:
            continue
        norms = nb.carray(_f32_at(sqn[b]), n)
        has_mask = mask[b] != 0
        ok = nb.carray(_u8_at(mask[b] if has_mask else sqn[b]), n)
        # flat views: the inner loops vectorise (2-D indexing measured 4x slower)
        if scale[b] == 0:  # exact float32 vectors (format 1)
            v = nb.carray(_f32_at(vec[b]), n * dim)
            for r in range(n):
                if has_mask and ok[r] == 0:
                    continue
                acc = np.float32(0.0)
                base = r * dim
                if metric == L2:
                    for j in range(dim):
                        x = v[base + j] - q[j]
                        acc += x * x
                    d = acc
                else:
                    for j in range(dim):
                        acc += v[base + j] * q[j]
                    d = 1.0 - acc
                    if metric == COSINE:
                        d = 1.0 - acc / np.sqrt(norms[r]) if norms[r] > 0 else 1.0
                if size < cap or d < out_d[cap - 1]:
                    size = _keep(out_d, out_b, out_r, size, cap, d, b, r)
        else:  # int8 codes with a scale per row (format 2): an estimate, reranked exactly later
            c = nb.carray(_i8_at(vec[b]), n * dim)
            s = nb.carray(_f32_at(scale[b]), n)
            for r in range(n):
                if has_mask and ok[r] == 0:
                    continue
                acc = np.float32(0.0)
                base = r * dim
                for j in range(dim):
                    acc += q[j] * np.float32(c[base + j])
                acc *= s[r]
                d = norms[r] - 2.0 * acc + qq if metric == L2 else 1.0 - acc
                if size < cap or d < out_d[cap - 1]:
                    size = _keep(out_d, out_b, out_r, size, cap, d, b, r)


@nb.njit(cache=True, nogil=True, parallel=True)
def cold_scan(qs: np.ndarray, metric: int, qptr: np.ndarray, qitems: np.ndarray, vec: np.ndarray,
              sqn: np.ndarray, scale: np.ndarray, mask: np.ndarray, nrows: np.ndarray, cap: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``cap`` rows per query over the blocks ``qitems[qptr[i]:qptr[i + 1]]`` of query i
    (indices into the block table; queries in parallel).

    Block b has ``nrows[b]`` rows; ``vec[b]`` is the address of its float32 vectors (n, dim) when
    ``scale[b] == 0``, else of int8 codes (n, dim) whose per-row float32 scales are at ``scale[b]``;
    ``sqn[b]``: float32 squared norms of the stored vectors; ``mask[b]``: uint8 per row (0 = no
    mask: every row). ``metric``: a distance.METRIC_CODES code: COSINE (``qs`` unit; vectors as
    stored: ``1 - q.v / |v|``; codes of the unit vectors: ``1 - s q.c``), IP (``1 - q.v``), L2
    (vectors ``|v - q|^2``, codes ``|v|^2 - 2 s q.c + |q|^2``). Returns (distances, blocks, rows), each (queries, cap),
    ascending, padded with inf / -1."""
    m, dim = qs.shape
    out_d = np.full((m, cap), np.inf, np.float32)
    out_b = np.full((m, cap), -1, np.int64)
    out_r = np.full((m, cap), -1, np.int64)
    if m == 1:  # no thread pool for one query. Splitting its blocks over the threads halved this
        # kernel alone (0.42 -> 0.25 ms for 17.9k rows, idle machine), but OpenMP's workers spin for
        # a while after every parallel region, on cores that Redis, S3 and the query's own Python
        # need; the one benchmark run with it was slower end to end (not isolated from other load)
        _cold_scan_one(qs[0], metric, qitems[qptr[0] : qptr[1]], vec, sqn, scale, mask, nrows, dim,
                       out_d[0], out_b[0], out_r[0])
        return out_d, out_b, out_r
    for i in nb.prange(m):
        _cold_scan_one(qs[i], metric, qitems[qptr[i] : qptr[i + 1]], vec, sqn, scale, mask, nrows, dim,
                       out_d[i], out_b[i], out_r[i])
    return out_d, out_b, out_r


@nb.njit(cache=True, nogil=True, parallel=True)
def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes with one max-abs scale per row: ``x[r] ~= scale[r] * codes[r]``."""
    n, dim = x.shape
    codes = np.zeros((n, dim), np.int8)
    scales = np.zeros(n, np.float32)
    for r in nb.prange(n):
        m = np.float32(0.0)
        for j in range(dim):
            a = abs(x[r, j])
            if a > m:
                m = a
        if m == 0:
            continue
        s = m / np.float32(127.0)
        scales[r] = s
        for j in range(dim):
            codes[r, j] = np.int8(min(127.0, max(-127.0, np.round(x[r, j] / s))))
    return codes, scales


__all__ = ["cold_scan", "quantize_rows"]
