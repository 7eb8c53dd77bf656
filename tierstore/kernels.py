"""numba kernels on plain numpy arrays. Nothing else lives here.

Every kernel is ``cache=True`` (compiled once per machine, then loaded from ``__pycache__``) and
``nogil=True`` where it does real work, so query threads and the policy thread run in parallel.
Each has a numpy reference in ``tests/unit/test_kernels.py``.

Access statistics use *epoch-scaled* decayed counts: an access at time ``t`` adds
``w = 2 ** ((t - t0) / half_life)`` to the slot's count, and the decayed count at time ``T`` is
``count * 2 ** (-(T - t0) / half_life)``. That equals the usual "decay then add one" recurrence
exactly, but an update is a single add of a per-batch constant (no per-slot exp), which is what
makes tens of millions of updates per second possible. ``t0`` is rebased before the weights can
overflow (see policy.AccessStats).

>>> import numpy as np
>>> counts = np.zeros(4); last = np.zeros(4, np.float32)
>>> access_add(counts, last, np.array([1, 1, 3]), 2.0, np.float32(7.0))
>>> counts.tolist(), last.tolist()
([0.0, 4.0, 0.0, 2.0], [0.0, 7.0, 0.0, 7.0])
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .distance import L2  # the metric codes (numba compiles these globals in as constants)


@nb.njit(cache=True, nogil=True)
def access_add(counts: np.ndarray, last: np.ndarray, slots: np.ndarray, w: float, t: np.float32) -> None:
    """counts[s] += w and last[s] = t for every s in slots (slots may repeat)."""
    n = counts.shape[0]
    for i in range(slots.shape[0]):
        s = slots[i]
        if 0 <= s < n:
            counts[s] += w
            last[s] = t


@nb.njit(cache=True, nogil=True)
def access_add_each(counts: np.ndarray, last: np.ndarray, slots: np.ndarray, w: np.ndarray, t: np.ndarray) -> None:
    """counts[slots[i]] += w[i] and last[slots[i]] = t[i] for every i (accesses of many
    queries at their own times, applied in one call)."""
    n = counts.shape[0]
    for i in range(slots.shape[0]):
        s = slots[i]
        if 0 <= s < n:
            counts[s] += w[i]
            last[s] = t[i]


@nb.njit(cache=True, nogil=True)
def access_logical(counts: np.ndarray, last: np.ndarray, slots: np.ndarray, x0: float, inv_h: float,
                   t: np.float32, shadow: np.ndarray, inv_hs: np.ndarray, rate: int, block: int,
                   hot: np.ndarray, thr: float, cand: np.ndarray, dthr: np.ndarray, dyn: np.ndarray) -> None:
    """Accesses in *logical* time (``half_life = "auto"``): access ``i`` of the batch happens at
    ``x = x0 + i`` accesses since the epoch and adds ``2 ** (x * inv_h)`` to ``counts[s]``
    (weights recomputed every ``block`` accesses, a small fraction of the shortest half-life).

    Shadow scores (a miniature simulation on the sampled slots ``s % rate == 0``, row
    ``s // rate`` of ``shadow``; ``rate`` a power of two, so both are a mask and a shift, not
    divisions): column j adds ``2 ** (x * inv_hs[j])``, the last column counts the accesses
    since the last cycle. Each shadow also scores itself as a cache that admits on access: an
    access to a sampled slot is a hit for shadow j (``dyn[j] += 1``) when the slot's shadow score,
    decayed to now, is above the shadow's decayed hot threshold ``dthr[j]`` (set at the last
    cycle; in epoch-scaled terms ``shadow[r, j] > dthr[j] * 2 ** (x * inv_hs[j])``), before the
    access is added. Promote-on-access: a slot not ``hot`` whose count passes ``thr`` is flagged
    in ``cand``."""
    n = counts.shape[0]
    m = shadow.shape[0]
    k = inv_hs.shape[0]
    ws = np.empty(k)
    w = 0.0
    mask = rate - 1
    shift = 0
    while (1 << shift) < rate:
        shift += 1
    left = 0  # accesses until the weights are recomputed (a countdown: no division per access)
    for i in range(slots.shape[0]):
        if left == 0:
            left = block
            x = x0 + i
            w = 2.0 ** (x * inv_h)
            for j in range(k):
                ws[j] = 2.0 ** (x * inv_hs[j])
        left -= 1
        s = slots[i]
        if 0 <= s < n:
            c = counts[s] + w
            counts[s] = c
            last[s] = t
            if c > thr and not hot[s]:
                cand[s] = True
            if k > 0 and (s & mask) == 0:
                r = s >> shift
                if r < m:
                    for j in range(k):
                        if shadow[r, j] > dthr[j] * ws[j]:
                            dyn[j] += 1.0
                        shadow[r, j] += ws[j]
                    shadow[r, k] += 1.0


@nb.njit(cache=True, nogil=True)
def flag_candidates(counts: np.ndarray, slots: np.ndarray, hot: np.ndarray, thr: float, cand: np.ndarray) -> None:
    """Promote-on-access for a fixed (wall-time) half-life: flag accessed slots not ``hot``
    whose count passes ``thr``."""
    n = counts.shape[0]
    for i in range(slots.shape[0]):
        s = slots[i]
        if 0 <= s < n and counts[s] > thr and not hot[s]:
            cand[s] = True


@nb.njit(cache=True, nogil=True)
def scale_inplace(counts: np.ndarray, factor: float) -> None:
    """Rebase epoch-scaled counts: counts *= factor."""
    for i in range(counts.shape[0]):
        counts[i] *= factor


# --- policy: scoring and budget selection -------------------------------------------------------
#
# A policy cycle works on compacted per-vector columns (one row per live vector): its epoch-scaled
# count, current tier (0 hot, 1 warm, 2 cold), pin (-1 none, else the tier it is pinned to) and
# its grace-period floor (-1, or the tier ingest / an explicit move placed it in). For one tier it derives a *class* per row
# (2 = must be in the tier, 1 = may be, 0 = may not) and a *priority* (the count, times
# 1 + hysteresis, plus policy.min_gain accesses, for rows already at or above the tier: an
# incumbent keeps its place until a challenger is clearly more popular), then selects the budget's
# best rows.


@nb.njit(cache=True, nogil=True)
def tier_priorities(counts: np.ndarray, cur: np.ndarray, pin: np.ndarray, floor: np.ndarray, tier: int,
                    bonus: float, margin: float, taken: np.ndarray, cls: np.ndarray, prio: np.ndarray) -> None:
    """Class and priority of every row for membership of ``tier`` (0 hot, 1 warm).

    ``floor`` (int8): -1, or the tier a young row (in its grace period) was *placed* in by
    ingest or an explicit move -- it may not go below it. Rows already ``taken`` by a higher tier
    get class 0. A row pinned to ``tier`` -- or whose floor is ``tier`` while it is at or above
    ``tier`` -- must be in it (class 2); a row pinned elsewhere
    may not enter (0); a row never accessed does not move up for nothing (0 unless it is at or
    above ``tier`` already). A class-2 row already in ``tier`` gets priority +inf: if more rows
    are pinned to a tier than fit, those already there keep their places (no churn). A row
    already at or above ``tier`` competes with ``count * bonus + margin`` (``+ 0`` if it was never
    accessed: a vector nobody asked for holds its place by nothing)."""
    for i in range(counts.shape[0]):
        c = counts[i]
        t = cur[i]
        p = pin[i]
        if taken[i]:
            cls[i] = 0
        elif p == tier or (floor[i] == tier and t <= tier):
            cls[i] = 2
        elif p >= 0:
            cls[i] = 0
        elif t <= tier or c > 0.0:
            cls[i] = 1
        else:
            cls[i] = 0
        if cls[i] == 2 and t == tier:
            prio[i] = np.inf  # already there and must stay: first in line whatever the budget
        else:
            prio[i] = (c * bonus + (margin if c > 0.0 else 0.0)) if t <= tier else c


@nb.njit(cache=True, nogil=True)
def _class_values(cls: np.ndarray, prio: np.ndarray, c: int) -> np.ndarray:
    """Priorities of the rows of class ``c``, in row order."""
    m = 0
    for i in range(cls.shape[0]):
        if cls[i] == c:
            m += 1
    vals = np.empty(m, np.float64)
    j = 0
    for i in range(cls.shape[0]):
        if cls[i] == c:
            vals[j] = prio[i]
            j += 1
    return vals


@nb.njit(cache=True, nogil=True)
def _mark_class(cls: np.ndarray, prio: np.ndarray, c: int, thr: float, ties: int, out: np.ndarray) -> None:
    """Mark rows of class ``c`` above ``thr``, plus the first ``ties`` rows equal to it."""
    for i in range(cls.shape[0]):
        if cls[i] == c:
            if prio[i] > thr:
                out[i] = True
            elif prio[i] == thr and ties > 0:
                out[i] = True
                ties -= 1


def select_top(cls: np.ndarray, prio: np.ndarray, k: int, out: np.ndarray) -> int:
    """Mark in ``out`` the best ``k`` rows by (class desc, priority desc, row asc), never a
    class-0 row. Returns how many were selected (< k when fewer rows may enter).

    O(n): the k-th best priority comes from numpy's ``np.partition`` (SIMD; about 8x numba's on
    10M values), the passes over the rows are numba kernels."""
    out[:] = False
    chosen = 0
    for c in (2, 1):
        room = k - chosen
        if room <= 0:
            break
        vals = _class_values(cls, prio, c)
        m = vals.shape[0]
        if m == 0:
            continue
        if m <= room:
            _mark_class(cls, prio, c, -np.inf, m, out)
            chosen += m
            continue
        thr = float(np.partition(vals, m - room)[m - room])
        above = int(np.count_nonzero(vals > thr))
        _mark_class(cls, prio, c, thr, room - above, out)
        chosen += room
    return chosen


# --- HNSW search over memory-mapped segment arrays (warm tier) ----------------------------------
#
# Segment arrays (see tiers/warm/segment.py): links0 (n, m0) int32 level-0 neighbours, -1 padded; levels (n)
# int8; upper (total,) int32 with upper_off (n + 1) int64: node i's links for level l >= 1 are
# upper[upper_off[i] + (l - 1) * m : ... + m]; codes (n, dim) int8 with per-dimension scales;
# vectors (n, dim) float32 (exact, unit length under cosine); sqnorms (n) float32.
#
# metric: a distance.METRIC_CODES code. L2: |x|^2 - 2<q, x> + |q|^2; cosine (on unit vectors) and ip:
# the dot distance 1 - <q, x>.
# The traversal reads only the int8 codes; the exact vectors are read for the final rerank.


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _code_dist(qs: np.ndarray, codes: np.ndarray, row: int, metric: int, sqnorms: np.ndarray, qq: float) -> float:
    acc = np.float32(0.0)
    for j in range(qs.shape[0]):
        acc += qs[j] * np.float32(codes[row, j])
    if metric != L2:
        return 1.0 - acc
    return sqnorms[row] - 2.0 * acc + qq


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _exact_dist(q: np.ndarray, vectors: np.ndarray, row: int, metric: int, qq: float) -> float:
    acc = np.float32(0.0)
    if metric != L2:
        for j in range(q.shape[0]):
            acc += q[j] * vectors[row, j]
        return 1.0 - acc
    for j in range(q.shape[0]):
        d = q[j] - vectors[row, j]
        acc += d * d
    return acc


@nb.njit(cache=True, nogil=True, inline="always")
def _insert_sorted(dist: np.ndarray, ids: np.ndarray, flag: np.ndarray, size: int, cap: int, d: float,
                   node: int) -> int:
    """Insert (d, node) into the ascending list of ``size`` (capacity ``cap``); returns the
    position, or -1 when the list is full and d is not better than its worst entry."""
    if size == cap and d >= dist[size - 1]:
        return -1
    pos = size if size < cap else cap - 1
    while pos > 0 and dist[pos - 1] > d:
        if pos < cap:
            dist[pos] = dist[pos - 1]
            ids[pos] = ids[pos - 1]
            flag[pos] = flag[pos - 1]
        pos -= 1
    dist[pos] = d
    ids[pos] = node
    flag[pos] = 0
    return pos


@nb.njit(cache=True, nogil=True, fastmath=True)
def hnsw_search(
    q: np.ndarray, links0: np.ndarray, levels: np.ndarray, upper: np.ndarray, upper_off: np.ndarray,
    m: int, entry: int, max_level: int, codes: np.ndarray, scales: np.ndarray, vectors: np.ndarray,
    sqnorms: np.ndarray, metric: int, ok: np.ndarray, ef: int, rerank: int, k: int,
    visited: np.ndarray, tag: int,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest segment rows to ``q`` among rows with ``ok[row]`` (``ok`` empty = all rows).

    Greedy descent through the upper layers, then a best-first beam of width ``ef`` on layer 0
    over the int8 codes; rows that are not ok (deleted, moved out, filtered away) are traversed
    for navigation but never returned. The best ``max(rerank, k)`` ok rows are re-scored
    exactly on the float32 vectors. ``visited`` holds per-row tags; ``tag`` must be new for
    every call that shares the array. Returns (rows, distances) ascending, possibly fewer than k.
    """
    n = links0.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    qs = (q * scales).astype(np.float32)
    qq = np.float32(0.0)
    for j in range(q.shape[0]):
        qq += q[j] * q[j]
    use_ok = ok.shape[0] == n
    # 1. greedy descent on the upper layers
    cur = entry
    cur_d = _code_dist(qs, codes, cur, metric, sqnorms, qq)
    for level in range(max_level, 0, -1):
        changed = True
        while changed:
            changed = False
            if levels[cur] < level:
                break
            base = upper_off[cur] + (level - 1) * m
            for t in range(m):
                nb = upper[base + t]
                if nb < 0:
                    break
                d = _code_dist(qs, codes, nb, metric, sqnorms, qq)
                if d < cur_d:
                    cur, cur_d, changed = nb, d, True
    # 2. beam search on layer 0: L = navigation list (any row), R = best ok rows seen
    cap_r = max(rerank, k)  # (only these are reranked: a wider list would only cost shifts)
    l_dist = np.empty(ef, np.float32)
    l_ids = np.empty(ef, np.int64)
    l_done = np.zeros(ef, np.uint8)
    r_dist = np.empty(cap_r, np.float32)
    r_ids = np.empty(cap_r, np.int64)
    r_flag = np.zeros(cap_r, np.uint8)
    size_l = 1
    size_r = 0
    l_dist[0], l_ids[0], l_done[0] = cur_d, cur, 0
    visited[cur] = tag
    if not use_ok or ok[cur]:
        r_dist[0], r_ids[0] = cur_d, cur
        size_r = 1
    nxt = 0
    m0 = links0.shape[1]
    while nxt < size_l:
        node = l_ids[nxt]
        l_done[nxt] = 1
        for t in range(m0):
            nb = links0[node, t]
            if nb < 0:
                break
            if visited[nb] == tag:
                continue
            visited[nb] = tag
            d = _code_dist(qs, codes, nb, metric, sqnorms, qq)
            pos = _insert_sorted(l_dist, l_ids, l_done, size_l, ef, d, nb)
            if pos >= 0:
                if size_l < ef:
                    size_l += 1
                if pos < nxt:
                    nxt = pos
            eligible = not use_ok or ok[nb]
            if eligible and _insert_sorted(r_dist, r_ids, r_flag, size_r, cap_r, d, nb) >= 0 and size_r < cap_r:
                size_r += 1
        while nxt < size_l and l_done[nxt]:
            nxt += 1
    # 3. exact rerank of the best ok rows
    take = min(size_r, max(rerank, k))
    ex = np.empty(take, np.float32)
    for i in range(take):
        ex[i] = _exact_dist(q, vectors, r_ids[i], metric, qq)
    order = np.argsort(ex, kind="mergesort")[:k]
    return r_ids[:take][order].copy(), ex[order].copy()


@nb.njit(cache=True, nogil=True, parallel=True)
def hnsw_search_batch(
    qs: np.ndarray, links0: np.ndarray, levels: np.ndarray, upper: np.ndarray, upper_off: np.ndarray,
    m: int, entry: int, max_level: int, codes: np.ndarray, scales: np.ndarray, vectors: np.ndarray,
    sqnorms: np.ndarray, metric: int, ok: np.ndarray, ef: int, rerank: int, k: int, threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hnsw_search` for every row of ``qs`` in parallel (prange over ``threads`` chunks
    of queries, one visited array per chunk). Returns (rows, distances), each (len(qs), k),
    -1 / inf padded."""
    nq = qs.shape[0]
    n = links0.shape[0]
    out_rows = np.full((nq, k), -1, np.int64)
    out_dist = np.full((nq, k), np.inf, np.float32)
    chunks = max(1, min(nq, threads))
    per = (nq + chunks - 1) // max(chunks, 1)
    for c in nb.prange(chunks):
        visited = np.zeros(max(n, 1), np.uint32)
        for i in range(c * per, min(nq, (c + 1) * per)):
            rows, dist = hnsw_search(qs[i], links0, levels, upper, upper_off, m, entry, max_level, codes, scales,
                                     vectors, sqnorms, metric, ok, ef, rerank, k, visited, i - c * per + 1)
            out_rows[i, : rows.shape[0]] = rows
            out_dist[i, : rows.shape[0]] = dist
    return out_rows, out_dist


@nb.njit(cache=True, nogil=True, fastmath=True)
def exact_scan(q: np.ndarray, vectors: np.ndarray, rows: np.ndarray, metric: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest among ``rows`` (a selective filter: cheaper and exact vs the graph), ties
    in the order of ``rows``. Up to k = 64 the best are kept as they come (no sort of all the
    rows: a filter can allow tens of thousands); beyond, one stable sort."""
    qq = np.float32(0.0)
    for j in range(q.shape[0]):
        qq += q[j] * q[j]
    n = rows.shape[0]
    if k <= 64:
        best_d = np.empty(max(k, 1), np.float32)
        best_r = np.empty(max(k, 1), np.int64)
        size = 0
        for i in range(n):
            d = _exact_dist(q, vectors, rows[i], metric, qq)
            if size < k or d < best_d[size - 1]:
                pos = size if size < k else k - 1
                while pos > 0 and best_d[pos - 1] > d:  # (strict: an equal earlier row stays first)
                    best_d[pos] = best_d[pos - 1]
                    best_r[pos] = best_r[pos - 1]
                    pos -= 1
                best_d[pos] = d
                best_r[pos] = rows[i]
                if size < k:
                    size += 1
        return best_r[:size].copy(), best_d[:size].copy()
    dist = np.empty(n, np.float32)
    for i in range(n):
        dist[i] = _exact_dist(q, vectors, rows[i], metric, qq)
    order = np.argsort(dist, kind="mergesort")[:k]
    return rows[order].copy(), dist[order].copy()


# --- k-means (cold-tier partitions) ------------------------------------------------------------------
# The matrix product x @ c.T is left to numpy's BLAS (numba's np.dot needs SciPy); these kernels do the
# per-row and per-cluster loops that numpy can only express with slow scatter operations.


@nb.njit(cache=True, nogil=True, parallel=True)
def nearest_centroid(dots: np.ndarray, x_sqnorm: np.ndarray, c_sqnorm: np.ndarray,
                     labels: np.ndarray, dist: np.ndarray, offset: int) -> None:
    """For the rows ``offset .. offset + len(dots)``: labels = argmin_j ||x - c_j||^2 and dist = that
    squared distance, from dots = x @ c.T and the squared norms."""
    n, k = dots.shape
    for i in nb.prange(n):
        best = np.inf
        bj = 0
        for j in range(k):
            v = c_sqnorm[j] - 2.0 * dots[i, j]
            if v < best:
                best = v
                bj = j
        labels[offset + i] = bj
        dist[offset + i] = max(best + x_sqnorm[offset + i], 0.0)


@nb.njit(cache=True, nogil=True)
def cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of the rows (float64) and member counts."""
    sums = np.zeros((k, x.shape[1]), np.float64)
    counts = np.zeros(k, np.int64)
    for i in range(x.shape[0]):
        c = labels[i]
        counts[c] += 1
        for d in range(x.shape[1]):
            sums[c, d] += x[i, d]
    return sums, counts


@nb.njit(cache=True, nogil=True, fastmath=False)
def cluster_radii(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per cluster, the largest Euclidean distance from its centroid to a member (float64 sums:
    the pruning bound must never be smaller than the truth)."""
    k = centroids.shape[0]
    r2 = np.zeros(k, np.float64)
    for i in range(x.shape[0]):
        c = labels[i]
        s = 0.0
        for d in range(x.shape[1]):
            t = np.float64(x[i, d]) - np.float64(centroids[c, d])
            s += t * t
        if s > r2[c]:
            r2[c] = s
    return np.sqrt(r2)


__all__ = ["access_add", "cluster_radii", "cluster_sums", "exact_scan", "hnsw_search", "hnsw_search_batch",
           "nearest_centroid", "scale_inplace"]
