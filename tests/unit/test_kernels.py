"""numba kernels (tierstore.kernels) against numpy references, and policy.AccessStats against a
direct exponential-decay reference."""

from __future__ import annotations

import numpy as np
import pytest

from tierstore import coldkernels, kernels
from tierstore.policy import AccessStats
from tierstore.policy import access as policy

# --- kernels --------------------------------------------------------------------------------------


def _ref_access_add(counts, last, slots, w, t):
    counts, last = counts.copy(), last.copy()
    ok = slots[(slots >= 0) & (slots < counts.shape[0])]
    np.add.at(counts, ok, w)
    last[ok] = t
    return counts, last


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("seed", range(5))
def test_access_add_matches_numpy(seed, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    counts = rng.random(n) * 10
    last = rng.random(n).astype(np.float32)
    # many repeats, plus negative and out-of-range slots that must be ignored
    slots = rng.integers(-20, n + 20, size=int(rng.integers(0, 500))).astype(dtype)
    w = float(rng.random() * 3 + 0.1)
    t = np.float32(rng.random() * 100)
    want_counts, want_last = _ref_access_add(counts, last, slots, w, t)
    kernels.access_add(counts, last, slots, w, t)
    np.testing.assert_allclose(counts, want_counts, rtol=1e-12)
    np.testing.assert_array_equal(last, want_last)


def test_access_add_repeats_and_ignored():
    counts = np.zeros(3)
    last = np.full(3, -1.0, np.float32)
    kernels.access_add(counts, last, np.array([2, 2, 2, -1, 3, 99, -99]), 0.5, np.float32(4.0))
    assert counts.tolist() == [0.0, 0.0, 1.5]
    assert last.tolist() == [-1.0, -1.0, 4.0]  # untouched slots keep their last time


def test_access_add_empty():
    counts, last = np.ones(4), np.ones(4, np.float32)
    kernels.access_add(counts, last, np.zeros(0, np.int64), 5.0, np.float32(9.0))
    assert counts.tolist() == [1.0] * 4 and last.tolist() == [1.0] * 4


@pytest.mark.parametrize("factor", [0.0, 0.5, 2.0**-600, 3.0, 1.0])
def test_scale_inplace(factor):
    rng = np.random.default_rng(0)
    counts = rng.random(257) * 1e10
    want = counts * factor
    kernels.scale_inplace(counts, factor)
    np.testing.assert_array_equal(counts, want)
    empty = np.zeros(0)
    kernels.scale_inplace(empty, factor)
    assert empty.shape == (0,)


# --- AccessStats: reference ---------------------------------------------------------------------


def _reference(events, half_life, n_slots, now):
    """Decayed count of each slot at `now`: sum over its accesses of 2**(-(now - t)/H)."""
    ref = np.zeros(n_slots)
    last = np.full(n_slots, np.nan)
    for slot, t in events:
        ref[slot] += 2.0 ** (-(now - t) / half_life)
        last[slot] = t if np.isnan(last[slot]) else max(last[slot], t)
    return ref, last


def _random_events(rng, n_batches, n_slots, t_max):
    times = np.sort(rng.random(n_batches) * t_max)
    batches = []
    for t in times:
        batches.append((rng.integers(0, n_slots, size=int(rng.integers(1, 8))), float(t)))
    return batches


@pytest.mark.parametrize("seed", range(4))
def test_decayed_matches_reference(seed):
    rng = np.random.default_rng(seed)
    H, n_slots = 30.0, 40
    batches = _random_events(rng, 60, n_slots, t_max=200.0)
    st = AccessStats(half_life=H, t0=0.0)
    for slots, t in batches:
        st.record(slots, now=t)
    st.apply()
    events = [(int(s), t) for slots, t in batches for s in slots]
    for now in (batches[-1][1], batches[-1][1] + 17.0, 1000.0):
        ref, _ = _reference(events, H, n_slots, now)
        got = st.decayed(np.arange(n_slots), now=now)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-300)
    assert st.total_accesses == len(events)


def test_decayed_across_rebase():
    """A tiny half-life makes (now - t0) / half_life exceed the rebase threshold many times."""
    rng = np.random.default_rng(42)
    H, n_slots = 0.05, 25
    t_max = 100.0  # exponent up to 2000 >> 600
    batches = _random_events(rng, 400, n_slots, t_max)
    st = AccessStats(half_life=H, t0=0.0)
    for slots, t in batches:
        st.record(slots, now=t)
        if rng.random() < 0.3:
            st.apply()  # interleave applies so rebases happen mid-stream
    st.apply()
    assert st.t0 > 0.0, "expected at least one rebase"
    assert (st.t0 - 0.0) / H > policy._REBASE_EXP
    assert np.isfinite(st.counts).all()
    events = [(int(s), t) for slots, t in batches for s in slots]
    now = batches[-1][1]
    for at in (now, now + 0.1, now + 1.0):
        ref, last_ref = _reference(events, H, n_slots, at)
        got = st.decayed(np.arange(n_slots), now=at)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-290)
    # last access times (stored as float32 seconds since t0) survive the rebases
    seen = ~np.isnan(last_ref)
    np.testing.assert_allclose(st.last[:n_slots][seen] + st.t0, last_ref[seen], atol=1e-3)


def test_decayed_out_of_order_batches_across_rebase():
    """Query threads may enqueue batches whose timestamps are slightly out of order."""
    H = 0.1
    st = AccessStats(half_life=H, t0=0.0)
    st.record(np.array([1]), now=70.0)  # exponent 700: rebase to t0 = 70
    st.record(np.array([1, 2]), now=69.95)  # earlier than the new t0
    st.apply()
    ref, _ = _reference([(1, 70.0), (1, 69.95), (2, 69.95)], H, 3, 70.0)
    np.testing.assert_allclose(st.decayed(np.arange(3), now=70.0), ref, rtol=1e-12)


def test_docstring_example_values():
    st = AccessStats(half_life=60.0, t0=0.0)
    st.record(np.array([3, 3, 5]), now=0.0)
    st.record(np.array([3]), now=60.0)
    st.apply()
    assert st.decayed(np.array([3, 5, 7, 10**9]), now=60.0).tolist() == [2.0, 0.5, 0.0, 0.0]


def test_record_is_lazy_until_apply():
    st = AccessStats(half_life=10.0, t0=0.0)
    st.record(np.array([1, 2]), now=0.0)
    st.record(np.array([], dtype=np.int64), now=0.0)  # empty batches are dropped
    assert st.decayed(np.array([1, 2]), now=0.0).tolist() == [0.0, 0.0]
    assert st.total_accesses == 0
    st.apply()
    assert st.decayed(np.array([1, 2]), now=0.0).tolist() == [1.0, 1.0]
    assert st.total_accesses == 2


def test_record_applies_itself_when_queue_is_long():
    st = AccessStats(half_life=10.0, t0=0.0)
    calls = [[i % 100, (i + 1) % 100] for i in range(policy._APPLY_AT_ENTRIES)]
    for c in calls:
        st.record(c, now=0.0)
    assert st.total_accesses == 2 * policy._APPLY_AT_ENTRIES  # applied without an explicit apply()
    assert not st._queue
    want = np.bincount(np.asarray(calls).ravel(), minlength=100)
    np.testing.assert_allclose(st.decayed(np.arange(100), now=0.0), want)


def test_arrays_grow_when_slots_exceed_size():
    st = AccessStats(half_life=10.0, t0=0.0, size=4)
    assert st.counts.shape[0] == 1024  # minimum size
    st.record(np.array([3, 1023]), now=0.0)
    st.apply()
    st.record(np.array([1024, 5000]), now=10.0)
    st.apply()
    assert st.counts.shape[0] >= 5001
    assert st.last.shape == st.counts.shape
    assert st.last.dtype == np.float32 and st.counts.dtype == np.float64
    got = st.decayed(np.array([3, 1023, 1024, 5000, 4999]), now=10.0)
    np.testing.assert_allclose(got, [0.5, 0.5, 1.0, 1.0, 0.0])
    assert st.last[5000] == 10.0 and st.last[3] == 0.0
    # doubling: one more slot past the end at least doubles the array
    size = st.counts.shape[0]
    st.record(np.array([size]), now=10.0)
    st.apply()
    assert st.counts.shape[0] == 2 * size


def test_large_initial_size():
    st = AccessStats(half_life=10.0, t0=0.0, size=5000)
    assert st.counts.shape[0] == 5000


def test_forget():
    st = AccessStats(half_life=10.0, t0=0.0)
    st.record(np.array([1, 2, 3, 3]), now=1.0)
    st.apply()
    st.record(np.array([2]), now=2.0)  # still queued: forget() must apply it first, then reset
    st.forget(np.array([2, 3, 10**6]))  # out-of-range slots are ignored
    got = st.decayed(np.array([1, 2, 3]), now=1.0)
    assert got.tolist() == [1.0, 0.0, 0.0]
    assert st.last[2] == 0.0 and st.last[3] == 0.0 and st.last[1] == 1.0
    # a reused slot starts cold
    st.record(np.array([2]), now=1.0)
    st.apply()
    assert st.decayed(np.array([2]), now=1.0).tolist() == [1.0]


def test_dumps_loads_roundtrip():
    rng = np.random.default_rng(3)
    st = AccessStats(half_life=5.0, t0=100.0)
    for t in np.sort(rng.random(50)) * 5000 + 100:  # spans several rebases (exp up to 1000)
        st.record(rng.integers(0, 3000, size=5), now=float(t))
    st.record(np.array([7]), now=5200.0)  # left queued: dumps() applies it
    raw = st.dumps()
    assert isinstance(raw, bytes)
    back = AccessStats.loads(raw, half_life=5.0)
    assert back.t0 == st.t0
    assert back.total_accesses == st.total_accesses == 251
    np.testing.assert_array_equal(back.counts, st.counts)
    np.testing.assert_array_equal(back.last, st.last)
    assert back.counts.dtype == np.float64 and back.last.dtype == np.float32
    slots = np.arange(3000)
    np.testing.assert_array_equal(back.decayed(slots, now=5300.0), st.decayed(slots, now=5300.0))
    # the loaded copy is independent and keeps working
    back.record(np.array([7]), now=5300.0)
    back.apply()
    assert back.decayed(np.array([7]), now=5300.0)[0] > st.decayed(np.array([7]), now=5300.0)[0]
    assert back.counts.flags.writeable


def test_loads_uses_given_half_life():
    st = AccessStats(half_life=10.0, t0=0.0)
    st.record(np.array([0]), now=0.0)
    back = AccessStats.loads(st.dumps(), half_life=20.0)
    assert back.half_life == 20.0
    assert back.decayed(np.array([0]), now=20.0).tolist() == [0.5]


@pytest.mark.parametrize("seed", range(4))
def test_access_add_each_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    counts = rng.random(n)
    last = rng.random(n).astype(np.float32)
    slots = rng.integers(-5, n + 5, size=int(rng.integers(0, 800)))
    w = rng.random(len(slots)) * 3
    t = np.sort(rng.random(len(slots)).astype(np.float32) * 100)  # in time order: the last one wins
    want_counts, want_last = counts.copy(), last.copy()
    ok = (slots >= 0) & (slots < n)
    np.add.at(want_counts, slots[ok], w[ok])
    for s, ti in zip(slots[ok], t[ok], strict=True):
        want_last[s] = ti
    kernels.access_add_each(counts, last, slots, w, t)
    np.testing.assert_allclose(counts, want_counts, rtol=1e-12)
    np.testing.assert_array_equal(last, want_last)


def test_many_small_records_equal_one_reference():
    """Per-query lists at their own times, drained in one apply, equal the exact decay sum."""
    rng = np.random.default_rng(3)
    st = AccessStats(half_life=50.0, t0=0.0)
    want = np.zeros(40)
    for i in range(500):
        slots = rng.integers(0, 40, size=10).tolist()
        now = i * 0.7
        st.record(slots, now=now)
        np.add.at(want, slots, 2.0 ** (-(400.0 - now) / 50.0))
    st.record(np.array([1, 2]), now=400.0)
    want[[1, 2]] += 1.0
    st.apply()
    np.testing.assert_allclose(st.decayed(np.arange(40), now=400.0), want, rtol=1e-9)


# --- issue 18: logical time, shadow scores, promote on access --------------------------------------


@pytest.mark.parametrize("dthr", [(1.0, 1.5, 2.5), (0.0, np.inf, 1.0)])
def test_access_logical_matches_numpy(dthr):
    rng = np.random.default_rng(3)
    n, k, rate = 300, 3, 4
    slots = rng.integers(0, n, 5000)
    inv_h, inv_hs = 1 / 700.0, 1 / np.array([50.0, 400.0, 3000.0])
    counts, last = np.zeros(n), np.zeros(n, np.float32)
    shadow = np.zeros((n // rate + 1, k + 1))
    hot = rng.random(n) < 0.2
    cand = np.zeros(n, bool)
    shadow[:, :k] = rng.random((n // rate + 1, k)) * 2.0  # scores from before, for the hit test
    before = shadow.copy()
    dthr, dyn = np.array(dthr), np.zeros(k)
    kernels.access_logical(counts, last, slots, 10.0, inv_h, np.float32(5.0), shadow, inv_hs, rate, 1, hot, 3.0, cand,
                           dthr, dyn)
    x = 10.0 + np.arange(len(slots))
    ref = np.zeros(n)
    np.add.at(ref, slots, 2.0 ** (x * inv_h))
    np.testing.assert_allclose(counts, ref)
    s = slots % rate == 0
    for j in range(k):
        col = before[:, j].copy()
        hits = 0
        for r, xi in zip(slots[s] // rate, x[s], strict=True):  # one access after the other
            hits += col[r] > dthr[j] * 2.0 ** (xi * inv_hs[j])
            col[r] += 2.0 ** (xi * inv_hs[j])
        np.testing.assert_allclose(shadow[:, j], col)
        assert dyn[j] == hits  # (threshold inf: no hit; 0: every slot that scored before hits)
        assert hits == {np.inf: 0, 0.0: s.sum()}.get(dthr[j], hits) and (0 < hits <= s.sum() or np.isinf(dthr[j]))
    np.testing.assert_array_equal(shadow[:, k], np.bincount(slots[s] // rate, minlength=n // rate + 1))
    # a candidate: not hot, and its count passed the threshold (monotone, so the final count says it)
    np.testing.assert_array_equal(cand, (counts > 3.0) & ~hot)


def test_auto_half_life_follows_the_traffic():
    """Recency-heavy traffic (a new working set every cycle) picks the shortest shadow
    half-life, static traffic a long one; the counts decay in accesses, not seconds."""
    def run(shift):
        st = AccessStats(half_life="auto", t0=0.0, size=4096)
        rng = np.random.default_rng(0)
        slots = np.arange(4096)
        for c in range(12):
            base = c * 60 if shift else 0  # the working set slides
            st.record(base + rng.zipf(1.3, 4000).clip(1, 200) - 1, now=float(c))  # wall time is ignored
            st.tune(slots, 200)
        return st

    fast, slow = run(True), run(False)
    assert fast.half_life == fast.grid[0] and slow.half_life > slow.grid[1]
    assert fast.tuning[-1]["shadows"] is not None
    back = AccessStats.loads(fast.dumps(), "auto")
    assert back.half_life == fast.half_life and back.clock == fast.clock
    np.testing.assert_allclose(back.decayed(np.arange(10)), fast.decayed(np.arange(10)))


def test_a_batch_spanning_many_shadow_half_lives_stays_finite_and_exact():
    """A cycle of 64 accesses makes the shortest shadow half-life 4 accesses; a touch() of
    50k ids then spans ~12,000 of them: one kernel call overflowed its weights to inf (and the
    next rebase made inf x 0 = NaN scores). Applied in rebased chunks, every score stays finite
    and equals the decayed count computed directly."""
    import warnings
    st = AccessStats(half_life="auto", t0=0.0, size=1000)
    first = np.arange(64) % 50
    st.record(first)
    st.tune(np.arange(1000), 10)
    assert st.grid[0] == 4.0 and st.half_life == 256.0
    batch = np.random.default_rng(0).integers(0, 1000, 50000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st.record(batch)
        st.apply()
        st.record(np.arange(10))
        st.apply()
    assert np.isfinite(st.counts).all() and np.isfinite(st.shadow).all()
    after = np.concatenate([batch, np.arange(10)])
    end = 64 + len(after)
    ref = np.bincount(first, minlength=1000) * 2.0 ** (-(end - 64) / 256.0)
    np.add.at(ref, after, 2.0 ** (-(end - (64 + np.arange(len(after)))) / 256.0))
    np.testing.assert_allclose(st.decayed(np.arange(1000)), ref, rtol=1e-9, atol=1e-300)


def test_admit_fills_room_then_replaces_weaker_incumbents():
    from tierstore.policy import admit
    counts = np.array([0.0, 10.0, 1.0, 9.0, 2.0, 3.0])
    up, down = admit(counts, np.array([1, 3, 5]), np.array([2, 4]), room=1, budget=9, hysteresis=0.2)
    assert up.tolist() == [1, 3, 5] and down.tolist() == [2, 4]
    up, down = admit(counts, np.array([1, 3, 5]), np.array([2, 4]), room=0, budget=1, hysteresis=0.2)
    assert up.tolist() == [1] and down.tolist() == [2]
    up, down = admit(counts, np.array([5]), np.array([4]), room=0, budget=9, hysteresis=1.0)
    assert len(up) == 0 and len(down) == 0  # 3 does not beat 2 x 2


# --- cold tier: the one scan over every probed partition -------------------------------------------


def _addr(a):
    return a.ctypes.data if a.size else 0


def _cold_blocks(rng, nblocks, dim):
    blocks = []
    for _ in range(nblocks):
        n = int(rng.integers(0, 40))
        v = (rng.standard_normal((n, dim)) * rng.uniform(0.1, 5)).astype(np.float32)
        sq = np.einsum("ij,ij->i", v, v).astype(np.float32)
        mask = (rng.random(n) < 0.6).astype(np.uint8) if rng.random() < 0.5 else None
        blocks.append((v, sq, mask))
    return blocks


def _ref_cold(q, blocks, items, metric, codes, cap):
    out = []
    for b in items:
        v, sq, mask, c, s = blocks[b]
        for r in range(len(v)):
            if mask is not None and not mask[r]:
                continue
            if codes:
                est = s[r] * (c[r].astype(np.float64) @ q)
                d = sq[r] - 2 * est + q @ q if metric == 2 else 1 - est
            elif metric == 2:
                d = ((v[r].astype(np.float64) - q) ** 2).sum()
            elif metric == 0:
                d = 1 - (v[r].astype(np.float64) @ q) / np.sqrt(sq[r])
            else:
                d = 1 - v[r].astype(np.float64) @ q
            out.append((d, b, r))
    return sorted(out)[:cap]


@pytest.mark.parametrize("many", [False, True])  # one query over many blocks: split over threads
@pytest.mark.parametrize("codes", [False, True])
@pytest.mark.parametrize("metric", [0, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_cold_scan_matches_numpy(seed, metric, codes, many):
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(1, 70))
    raw = _cold_blocks(rng, int(rng.integers(40, 60)) if many else int(rng.integers(1, 12)), dim)
    blocks = []
    for v, sq, mask in raw:
        if codes:  # codes of the unit vectors under cosine, of the raw ones otherwise
            base = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30) if metric == 0 else v
            c, s = coldkernels.quantize_rows(np.ascontiguousarray(base, np.float32))
        else:
            c, s = v, np.zeros(0, np.float32)
        blocks.append((v, sq, mask, c, s))
    m = 1 if many else int(rng.integers(1, 5))
    qs = rng.standard_normal((m, dim)).astype(np.float32)
    if metric == 0:
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    lists = [rng.choice(len(blocks), int(rng.integers(20 if many else 0, len(blocks) + 1)), replace=False)
             for _ in range(m)]
    qptr = np.zeros(m + 1, np.int64)
    qptr[1:] = np.cumsum([len(x) for x in lists])
    items = np.concatenate([np.asarray(x, np.int64) for x in lists]) if qptr[-1] else np.zeros(0, np.int64)
    cap = int(rng.integers(1, 30))
    vec = np.array([_addr(b[3]) for b in blocks], np.intp)
    sqn = np.array([_addr(b[1]) for b in blocks], np.intp)
    scale = np.array([_addr(b[4]) if codes else 0 for b in blocks], np.intp)
    if codes:  # a block of all-zero rows has scales but no code-free marker: keep them non-null
        scale[scale == 0] = _addr(np.ones(1, np.float32))
    mask = np.array([_addr(b[2]) if b[2] is not None else 0 for b in blocks], np.intp)
    nrows = np.array([len(b[0]) for b in blocks], np.int64)
    d, bl, rw = coldkernels.cold_scan(qs, metric, qptr, items, vec, sqn, scale, mask, nrows, cap)
    for i in range(m):
        want = _ref_cold(qs[i].astype(np.float64), blocks, lists[i].tolist(), metric, codes, cap)
        got = [(float(d[i, t]), int(bl[i, t]), int(rw[i, t])) for t in range(cap) if bl[i, t] >= 0]
        assert len(got) == len(want)
        np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-4, atol=1e-4)
        # the same rows (ties aside): each returned row's reference distance matches
        ref = {(b, r): dd for dd, b, r in _ref_cold(qs[i].astype(np.float64), blocks, lists[i].tolist(), metric,
                                                    codes, 10**9)}
        for dd, b, r in got:
            assert abs(ref[(b, r)] - dd) <= 1e-4 * max(1.0, abs(dd))
        assert np.all(np.isinf(d[i, len(got):])) and np.all(bl[i, len(got):] == -1)


@pytest.mark.parametrize("seed", range(3))
def test_quantize_rows_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((50, 33)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    x[3] = 0
    codes, scales = coldkernels.quantize_rows(x)
    m = np.abs(x).max(1)
    np.testing.assert_allclose(scales, m / 127, rtol=1e-6)
    safe = np.where(scales > 0, scales, 1)[:, None]
    want = np.clip(np.round(x / safe), -127, 127).astype(np.int8)
    assert (np.abs(codes.astype(int) - want.astype(int)) <= 1).all() and (codes[3] == 0).all()
    np.testing.assert_allclose(codes * scales[:, None], x, atol=(scales[:, None] * 0.5 + 1e-7).max())


@pytest.mark.parametrize("metric", [0, 1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_cold_code_estimates_stay_within_the_rerank_error_bound(seed, metric):
    """The rerank drops a candidate whose estimate minus its bound is beyond the answer: every
    estimate the scan makes is within that bound of the exact distance."""
    from tierstore.tiers.cold.search import _code_error, _slack

    name = {0: "cosine", 1: "ip", 2: "l2"}[metric]
    rng = np.random.default_rng(seed)
    dim, n = int(rng.integers(8, 400)), 300
    v = (rng.standard_normal((n, dim)) * rng.uniform(0.01, 50, (n, 1))).astype(np.float32)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    c, s = coldkernels.quantize_rows(np.ascontiguousarray(unit if metric == 0 else v, np.float32))
    sq = np.einsum("ij,ij->i", v, v).astype(np.float32)
    qs = (rng.standard_normal((4, dim)) * (1 if metric == 0 else rng.uniform(0.1, 20))).astype(np.float32)
    if metric == 0:
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    qptr, items = np.arange(5, dtype=np.int64), np.zeros(4, np.int64)  # each query: block 0
    d, bl, rw = coldkernels.cold_scan(qs, metric, qptr, items, np.array([_addr(c)], np.intp),
                                  np.array([_addr(sq)], np.intp), np.array([_addr(s)], np.intp),
                                  np.zeros(1, np.intp), np.array([n], np.int64), n)
    per = _code_error(qs, name)
    for i in range(4):
        q = qs[i].astype(np.float64)
        exact = {0: 1 - unit.astype(np.float64) @ q, 1: 1 - v.astype(np.float64) @ q,
                 2: ((v.astype(np.float64) - q) ** 2).sum(1)}[metric]
        for t in range(n):
            r = int(rw[i, t])
            bound = _slack(float(d[i, t]), float(s[r]) * per[i], float(sq[r]))
            assert abs(float(d[i, t]) - exact[r]) <= bound, (t, r, float(d[i, t]), exact[r], bound)
