"""Policy kernels and planning (tierstore.kernels.tier_priorities / select_top, policy.place /
limit_moves) against plain numpy references, plus the properties a plan must have: budgets
hold, pins are kept, young vectors are not demoted, hysteresis stops oscillation."""

from __future__ import annotations

import numpy as np
import pytest

from tierstore import kernels
from tierstore.policy import COLD, HOT, WARM, AccessStats, directions, limit_moves, place

# --- numpy references -----------------------------------------------------------------------------


def as_floor(young, cur):
    """A bool ``young`` (may not be demoted from where it is) as grace floors (int8)."""
    return np.where(young, cur, -1).astype(np.int8) if young.dtype == bool else young


def ref_priorities(counts, cur, pin, young, tier, bonus, taken, margin=0.0):
    floor = as_floor(young, cur)
    cls = np.where(counts > 0, 1, 0).astype(np.int8)
    cls[cur <= tier] = 1
    cls[pin >= 0] = 0
    cls[(pin == tier) | ((floor == tier) & (cur <= tier))] = 2
    cls[taken] = 0
    prio = np.where(cur <= tier, counts * bonus + np.where(counts > 0, margin, 0.0), counts)
    prio[(cls == 2) & (cur == tier)] = np.inf
    return cls, prio


def ref_select(cls, prio, k):
    """Best k by (class desc, priority desc, row asc), class 0 never."""
    order = np.lexsort((np.arange(len(cls)), -prio, -cls.astype(np.int64)))
    order = order[cls[order] > 0][:max(k, 0)]
    out = np.zeros(len(cls), bool)
    out[order] = True
    return out


def ref_place(counts, cur, pin, young, cap_hot, cap_warm, h, cold_enabled=True, margin=0.0):
    n = len(counts)
    cls, prio = ref_priorities(counts, cur, pin, young, HOT, 1 + h, np.zeros(n, bool), margin)
    hot = ref_select(cls, prio, cap_hot)
    target = np.full(n, COLD if cold_enabled else WARM, np.int8)
    target[hot] = HOT
    if cold_enabled:
        cls, prio = ref_priorities(counts, cur, pin, young, WARM, 1 + h, hot, margin)
        target[ref_select(cls, prio, cap_warm)] = WARM
    p = pin >= 0
    target[p] = pin[p]
    over = p & (pin == HOT) & ~hot
    target[over] = np.where(cur[over] == HOT, WARM, cur[over])
    if not cold_enabled:
        target[target == COLD] = WARM
    target[(as_floor(young, cur) == WARM) & ~p & (target == COLD)] = WARM
    return target


def random_case(rng, n, ties=False):
    counts = rng.exponential(1.0, n) * (rng.random(n) < 0.7)
    if ties:
        counts = np.round(counts)  # many equal counts: tie-breaking by row must match
    cur = rng.integers(0, 3, n).astype(np.int8)
    pin = np.where(rng.random(n) < 0.05, rng.integers(0, 3, n), -1).astype(np.int8)
    young = rng.random(n) < 0.05
    return counts, cur, pin, young


# --- kernels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tier", [HOT, WARM])
def test_tier_priorities_matches_numpy(seed, tier):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    counts, cur, pin, young = random_case(rng, n)
    young = np.where(young, rng.integers(0, 3, n), -1).astype(np.int8)  # grace floors, any tier
    taken = rng.random(n) < 0.1
    cls, prio = np.empty(n, np.int8), np.empty(n)
    margin = 0.0 if seed % 2 else 0.7
    kernels.tier_priorities(counts, cur, pin, young, tier, 1.2, margin, taken, cls, prio)
    want_cls, want_prio = ref_priorities(counts, cur, pin, young, tier, 1.2, taken, margin)
    np.testing.assert_array_equal(cls, want_cls)
    np.testing.assert_allclose(prio, want_prio)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("ties", [False, True])
def test_select_top_matches_numpy(seed, ties):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    cls = rng.integers(0, 3, n).astype(np.int8)
    prio = rng.random(n) if not ties else rng.integers(0, 4, n).astype(np.float64)
    for k in (0, 1, n // 3, n // 2, n, n + 5):
        out = np.zeros(n, bool)
        chosen = kernels.select_top(cls, prio, k, out)
        want = ref_select(cls, prio, k)
        np.testing.assert_array_equal(out, want)
        assert chosen == want.sum()


def test_select_top_empty():
    out = np.zeros(0, bool)
    assert kernels.select_top(np.zeros(0, np.int8), np.zeros(0), 5, out) == 0


# --- placement ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cold_enabled", [True, False])
def test_place_matches_numpy_and_respects_budgets(seed, cold_enabled):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    counts, cur, pin, young = random_case(rng, n, ties=seed % 2 == 1)
    pin[pin == HOT] = -1  # hot pins within budget are checked below; here budgets must be exact
    if not cold_enabled:  # no cold tier: nothing lives there
        cur[cur == COLD] = WARM
        pin[pin == COLD] = WARM
    young &= cur != HOT
    cap_hot, cap_warm = int(rng.integers(0, n // 4 + 1)), int(rng.integers(0, n // 2 + 1))
    margin = 0.0 if seed % 4 < 2 else 0.5
    target = place(counts, cur, pin, young, cap_hot, cap_warm, 0.2, cold_enabled, margin)
    np.testing.assert_array_equal(target, ref_place(counts, cur, pin, young, cap_hot, cap_warm, 0.2, cold_enabled,
                                                    margin))
    assert (target == HOT).sum() <= cap_hot
    pinned = pin >= 0
    expect_pin = pin[pinned].copy()
    if not cold_enabled:
        expect_pin[expect_pin == COLD] = WARM
    np.testing.assert_array_equal(target[pinned], expect_pin)
    # young vectors are never demoted
    assert (target[young & ~pinned] <= cur[young & ~pinned]).all()
    # never-accessed vectors are never promoted (unless pinned)
    idle = (counts == 0) & ~pinned
    assert (target[idle] >= cur[idle]).all()
    if cold_enabled:
        free_warm = ((target == WARM) & ~pinned & ~(young & (cur == WARM))).sum()
        assert free_warm <= cap_warm


def test_place_takes_the_most_used_and_hysteresis_protects_incumbents():
    counts = np.array([10.0, 9.0, 1.0, 0.5, 0.0])
    cur = np.array([COLD, COLD, HOT, COLD, HOT], np.int8)
    none = np.full(5, -1, np.int8)
    young = np.zeros(5, bool)
    assert place(counts, cur, none, young, 2, 1, 0.2).tolist() == [HOT, HOT, WARM, COLD, COLD]
    # a challenger within the hysteresis band does not evict the incumbent
    counts = np.array([1.1, 1.0])
    cur = np.array([COLD, HOT], np.int8)
    assert place(counts, cur, none[:2], young[:2], 1, 0, 0.2).tolist() == [COLD, HOT]
    assert place(counts, cur, none[:2], young[:2], 1, 0, 0.0).tolist() == [HOT, COLD]
    counts = np.array([1.3, 1.0])  # clearly more popular: it wins
    assert place(counts, cur, none[:2], young[:2], 1, 0, 0.2).tolist() == [HOT, COLD]


def test_hot_pins_beyond_capacity_stay_where_they_are():
    counts = np.array([5.0, 4.0, 3.0, 2.0])
    cur = np.array([WARM, COLD, HOT, COLD], np.int8)
    pin = np.full(4, HOT, np.int8)
    target = place(counts, cur, pin, np.zeros(4, bool), 2, 10, 0.2)
    assert (target == HOT).sum() == 2
    assert target.tolist() == [HOT, COLD, HOT, COLD]  # best two by count (incumbent bonus), rest unmoved


def test_min_gain_stops_swaps_a_single_access_would_pay_for():
    """policy.min_gain: an entrant must beat an incumbent's count x (1 + hysteresis) plus the
    margin -- unless the incumbent was never accessed. At cycles (place) and on access (admit)."""
    from tierstore.policy import admit
    cur, none = np.array([HOT, WARM], np.int8), np.full(2, -1, np.int8)

    def hot_after(counts, margin=1.0):
        return place(np.array(counts), cur, none, none, cap_hot=1, cap_warm=2, hysteresis=0.2, margin=margin)[0] == HOT

    assert hot_after([0.7, 1.0])  # seen once a while ago vs once just now: no swap
    assert not hot_after([0.7, 1.0], margin=0.0)  # (without the margin: a swap)
    assert not hot_after([0.7, 2.0])  # seen twice: 2.0 > 0.7 x 1.2 + 1
    assert not hot_after([0.0, 1.0])  # never accessed: holds its place by nothing
    assert not hot_after([0.0, 0.5])  # (even against an entrant whose access has half decayed)
    counts = np.array([0.7, 1.0, 0.0, 1.0])
    up, down = admit(counts, np.array([1, 3]), np.array([0, 2]), room=0, budget=9, hysteresis=0.2, margin=1.0)
    assert up.tolist() == [1] and down.tolist() == [2]  # only the never-accessed place is taken


def test_hysteresis_prevents_oscillation_on_alternating_workload():
    """Two groups take turns being slightly more popular; with hysteresis the hot set settles,
    without it the policy swaps them every cycle."""
    n, cap = 200, 100
    a, b = np.arange(0, 100), np.arange(100, 200)

    def simulate(h):
        st = AccessStats(half_life=10.0, t0=0.0)
        cur = np.full(n, COLD, np.int8)
        moves = []
        slots = np.arange(n)
        for cycle in range(20):
            now = float(cycle)
            lead, lag = (a, b) if cycle % 2 == 0 else (b, a)
            st.record(np.repeat(lead, 11), now=now)
            st.record(np.repeat(lag, 10), now=now)
            counts, young = st.columns(slots, now, grace=0.0)
            target = place(counts, cur, np.full(n, -1, np.int8), young, cap, n, h)
            assert (target == HOT).sum() <= cap
            moves.append(int((target != cur).sum()))
            cur = target
        return moves

    assert sum(simulate(0.2)[2:]) == 0
    assert all(m > 0 for m in simulate(0.0)[2:])


@pytest.mark.parametrize("seed", range(8))
def test_limit_moves_keeps_hot_within_capacity(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(100, 1500))
    counts, cur, _, _ = random_case(rng, n)
    cap_hot = int((cur == HOT).sum() + rng.integers(-20, 20))
    cap_hot = max(cap_hot, 0)
    cap_warm = int(rng.integers(n // 4, n))
    target = place(counts, cur, np.full(n, -1, np.int8), np.zeros(n, bool), cap_hot, cap_warm, 0.2)
    full_moves = int((target != cur).sum())
    for limit in (0, 1, 7, full_moves // 3, full_moves, full_moves + 10):
        out = limit_moves(target, cur, counts, cap_hot, cap_warm, limit)
        moved = out != cur
        assert moved.sum() <= max(limit, 0) or moved.sum() == full_moves <= limit
        assert (out[moved] == target[moved]).all()  # only planned moves, never new ones
        n_hot_before = (cur == HOT).sum()
        # never past capacity -- or, if it started over, never more over than before
        assert (out == HOT).sum() <= max(cap_hot, n_hot_before - min(limit, n_hot_before))
        if (cur == HOT).sum() <= cap_hot:
            assert (out == HOT).sum() <= cap_hot
    assert (limit_moves(target, cur, counts, cap_hot, cap_warm, full_moves) == target).all()


def test_limit_moves_prefers_the_best_promotions():
    counts = np.array([1.0, 9.0, 5.0, 7.0])
    cur = np.array([COLD, COLD, COLD, COLD], np.int8)
    target = np.array([HOT, HOT, HOT, HOT], np.int8)
    out = limit_moves(target, cur, counts, 4, 4, 2)
    assert out.tolist() == [COLD, HOT, COLD, HOT]


def test_directions_groups_moves():
    cur = np.array([HOT, WARM, COLD, COLD, HOT], np.int8)
    target = np.array([WARM, HOT, HOT, COLD, HOT], np.int8)
    d = directions(cur, target)
    assert d["hot->warm"].tolist() == [0]
    assert d["warm->hot"].tolist() == [1]
    assert d["cold->hot"].tolist() == [2]
    assert sum(len(v) for v in d.values()) == 3


# --- grace protects placement, not the policy's own promotions (issue 18) -----------------------


def test_grace_floor_lets_the_policy_take_back_its_own_promotions():
    """Rows ingested to warm, promoted to hot by the policy, still young: they may go back to
    warm when others get hotter (the floor is warm), never below it to cold."""
    counts = np.array([1.0, 1.0, 50.0, 40.0, 0.0, 0.0])
    cur = np.array([HOT, HOT, WARM, WARM, WARM, WARM], np.int8)
    floor = np.array([WARM, WARM, WARM, WARM, WARM, -1], np.int8)
    pin = np.full(6, -1, np.int8)
    target = place(counts, cur, pin, floor, cap_hot=2, cap_warm=1, hysteresis=0.2)
    assert target.tolist() == [WARM, WARM, HOT, HOT, WARM, COLD]  # young: not below warm
    # the old rule (young = never demoted from where it is) froze hot on its first picks
    frozen = place(counts, cur, pin, floor >= 0, cap_hot=2, cap_warm=1, hysteresis=0.2)
    assert frozen[:2].tolist() == [HOT, HOT]


def test_access_stats_grace_floor_and_hold():
    st = AccessStats(half_life=10.0, t0=0.0)
    st.mark_placed(np.array([0, 1]), WARM, now=100.0)  # ingest to warm
    st.mark_placed(np.array([2]), COLD, explicit=True, now=100.0)  # the user moved it to cold
    st.mark_placed(np.array([3]), HOT, now=0.0)  # ingested long ago
    floor, hold = st.grace(np.array([0, 1, 2, 3, 4]), now=150.0, grace=60.0)
    assert floor.tolist() == [WARM, WARM, -1, -1, -1]
    assert hold.tolist() == [-1, -1, COLD, -1, -1]
    floor, hold = st.grace(np.array([0, 2]), now=200.0, grace=60.0)  # grace over
    assert floor.tolist() == [-1, -1] and hold.tolist() == [-1, -1]
    back = AccessStats.loads(st.dumps(), half_life=10.0)
    assert back.grace(np.array([0, 2]), now=150.0, grace=60.0)[1].tolist() == [-1, COLD]


def _admission_round(adm, st, up, down, hits_up, hits_down, clock):
    """One cycle of promote-on-access: promote ``up`` (evicting ``down``), then the accesses."""
    adm.promoted(st, up, down)
    acc = np.concatenate([np.repeat(up, hits_up), np.repeat(down, hits_down)])
    st.record(acc if len(acc) else np.array([0]), now=clock)
    st.apply()
    return adm.cycle(st, 1000, 50_000)


def test_admission_budget_grows_while_promotions_pay_and_falls_back_on_noise():
    """Issue 18: the promote-on-access budget doubles while the promoted vectors earn more hits
    than the ones they evicted (and the budget was used up), up to its ceiling; it halves back
    to the floor when promotions earn nothing (noise)."""
    from tierstore import policy as pm

    st = AccessStats(half_life=1e9, t0=0.0, size=100)
    adm = pm.Admission()
    assert adm.cycle(st, 1000, 50_000) == 10  # 1 per 100 accesses to start with
    rates = []
    for i in range(8):  # each promoted vector gets 5 hits, each evicted one none
        up = np.arange(adm.budget) % 50
        rates.append(adm.rate)
        _admission_round(adm, st, up, up + 50, 5, 0, float(i))
    assert adm.last_yield >= pm.ADMIT_YIELD_UP
    assert adm.rate == pm.ADMIT_MAX_PER_ACCESS and rates[0] < rates[1] < rates[2]
    for i in range(8):  # the promoted are no better than the evicted: back to the floor
        up = np.arange(adm.budget) % 50
        _admission_round(adm, st, up, up + 50, 1, 1, 10.0 + i)
    assert adm.rate == pm.ADMIT_PER_ACCESS
    assert adm.info()["budget"] == 10
    # an unused budget does not grow, however well the few promotions did
    _admission_round(adm, st, np.array([1]), np.array([60]), 9, 0, 20.0)
    assert adm.rate == pm.ADMIT_PER_ACCESS


def test_access_stats_gained_counts_accesses_since_a_snapshot():
    st = AccessStats(half_life=10.0, t0=0.0)
    st.record(np.array([1, 1, 2]), now=0.0)
    snap, at = st.snapshot(np.array([1, 2]))
    st.record(np.array([1]), now=10.0)
    st.apply()
    assert st.gained(np.array([1, 2]), snap, at).round(6).tolist() == [1.0, 0.0]
    auto = AccessStats(half_life="auto", t0=0.0)
    auto.record(np.array([3, 3]), now=0.0)
    snap, at = auto.snapshot(np.array([3, 4]))
    auto.record(np.array([4, 4, 4]), now=1.0)
    auto.apply()
    assert auto.gained(np.array([3, 4]), snap, at).round(6).tolist() == [0.0, 3.0]


def test_gained_accesses_does_not_depend_on_the_half_life():
    """Admission judges promotions by the accesses they earned: recovered from the decayed
    counts, 1,000 accesses spread evenly read as ~1,000 whether the half-life is 50 accesses or
    a million (the decayed sum alone would be ~72 with 50)."""
    for h in (50.0, 1e6):
        st = AccessStats(half_life="auto", t0=0.0, size=10)
        st.half_life = h
        st.record(np.array([1, 2]))
        snap, at = st.snapshot(np.array([1]))
        st.record(np.tile(np.array([1, 2, 3, 4, 5]), 1000))
        assert st.gained_accesses(np.array([1]), snap, at) == pytest.approx(1000.0, rel=0.05)  # (discrete: -3.4% at 50)
    # a half-life switch between the snapshot and the look (a cycle's tune) gains nothing by itself
    st = AccessStats(half_life="auto", t0=0.0, size=10)
    st.half_life = 4000.0
    st.record(np.repeat(np.array([1, 2]), 500))
    snap, at = st.snapshot(np.array([1, 2]))
    st.record(np.full(1000, 3))
    st.set_half_life(50.0)
    st.record(np.full(1000, 3))
    assert st.gained_accesses(np.array([1, 2]), snap, at) == pytest.approx(0.0, abs=1e-9)


def test_cli_explains_the_half_life_choice():
    """Issue 18: `tierstore policy --dry-run` prints the half-life and the shadow hit ratios."""
    from tierstore.cli.maintenance import half_life_line as _half_life_line

    assert _half_life_line({"mode": "fixed", "seconds": 3600.0}) == "fixed, 3600 s (wall time)"
    assert "not chosen yet" in _half_life_line({"mode": "auto", "accesses": None})
    line = _half_life_line({"mode": "auto", "accesses": 12000.0, "candidates": [750.0, 3000.0, 12000.0],
                            "shadow_hit_ratios": {"750": 0.4, "3000": 0.5, "12000": 0.55},
                            "smoothed": {"750": 0.41, "3000": 0.52, "12000": 0.56}})
    assert line.startswith("auto (logical time): 12,000 accesses") and "12,000: 0.560 *" in line
    assert "shadows not scored yet" in _half_life_line({"mode": "auto", "accesses": 3000.0, "candidates": [750.0]})


def _auto_run(st: AccessStats, rng: np.random.Generator, cycles: int, slots: np.ndarray) -> list:
    out = []
    for _ in range(cycles):
        st.record(rng.zipf(1.3, 4000) % len(slots), now=0.0)
        out.append(st.tune(slots, 50))
    return out


def test_auto_shadow_state_survives_a_checkpoint():
    """Issue 18: the shadow scores, their thresholds and the hits counted since the last cycle
    are checkpointed with the counts: a store reopened from a checkpoint (taken mid-cycle) tunes
    exactly as one that never stopped."""
    slots = np.arange(5000, dtype=np.int64)
    a = AccessStats(half_life="auto", t0=0.0, size=5000)
    _auto_run(a, np.random.default_rng(1), 4, slots)
    a.record(np.random.default_rng(5).zipf(1.3, 3000) % 5000, now=0.0)
    a.apply()
    assert a.dyn.sum() > 0
    b = AccessStats.loads(a.dumps(), half_life="auto")
    np.testing.assert_array_equal(b.dyn, a.dyn)
    ra = _auto_run(a, np.random.default_rng(2), 3, slots)
    rb = _auto_run(b, np.random.default_rng(2), 3, slots)
    assert rb[0]["shadows"] is not None  # scored at the first cycle after the reopen
    assert ra == rb
    assert np.array_equal(a.counts, b.counts) and a.half_life == b.half_life


def test_a_checkpoint_with_other_shadow_half_lives_starts_the_grid_again(monkeypatch):
    """Stats saved by a version with 5 shadows (1/4x-64x) load into one with another grid: the
    counts and half-life go on, the next cycle sets the grid and the cycle after scores it."""
    from tierstore.policy import access as access_mod
    slots = np.arange(5000, dtype=np.int64)
    with monkeypatch.context() as m:
        m.setattr(access_mod, "SHADOW_MULTS", (0.25, 1.0, 4.0, 16.0, 64.0))
        m.setattr(access_mod, "_START", 2)
        old = AccessStats(half_life="auto", t0=0.0, size=5000)
        _auto_run(old, np.random.default_rng(1), 4, slots)
        raw = old.dumps()
    st = AccessStats.loads(raw, half_life="auto")
    assert st.grid is None and st.half_life == old.half_life and st.clock == old.clock
    np.testing.assert_allclose(st.decayed(slots[:50]), old.decayed(slots[:50]))
    out = _auto_run(st, np.random.default_rng(2), 3, slots)
    assert len(st.grid) == len(access_mod.SHADOW_MULTS) and st.shadow.shape[1] == len(st.grid) + 1
    assert out[0]["shadows"] is None and out[2]["shadows"] is not None
    assert np.isfinite(st.counts).all()


def test_promote_candidates_are_the_slots_accessed_past_the_threshold():
    """Promote on access: take_candidates returns each flagged slot once, not those known hot,
    nor those flagged before the last cycle's watch() or reset by forget()."""
    st = AccessStats(half_life="auto", t0=0.0, size=1000)
    st.watch(np.array([7], np.int64), 1.5)  # slot 7 is hot; two accesses pass the threshold
    st.record(np.array([1, 1, 2, 7, 7, 3, 3, 3]), now=0.0)
    st.record(np.array([1]), now=0.0)
    assert st.take_candidates().tolist() == [1, 3]
    assert st.take_candidates().tolist() == []
    st.record(np.array([4, 4, 5, 5]), now=0.0)
    st.apply()
    st.forget(np.array([5]))
    assert st.take_candidates().tolist() == [4]
    st.record(np.array([6, 6]), now=0.0)
    st.apply()
    st.watch(np.array([7], np.int64), 1.5)  # a new cycle: earlier flags are stale
    assert st.take_candidates().tolist() == []
    for _ in range(70_000):  # never taken: the remembered flags stay bounded by the slots
        st.record([8, 9], now=0.0)
    st.apply()
    assert st._n_flagged <= 2 * (1 << 16) and st.take_candidates().tolist() == [8, 9]


def test_auto_shadows_follow_a_growing_store():
    """The shadow sample is sized at the first cycle; a store that outgrows it gets shadows at
    its new size (else they would keep sampling only the first slots), checkpoint or not."""
    st = AccessStats(half_life="auto", t0=0.0, size=1024)
    rng = np.random.default_rng(3)
    _auto_run(st, rng, 3, np.arange(1000, dtype=np.int64))
    big = np.arange(200_000, dtype=np.int64)
    st = AccessStats.loads(st.dumps(), half_life="auto")
    for _ in range(3):
        st.record(rng.integers(0, 200_000, 20_000), now=0.0)
        info = st.tune(big, 5000)
    assert info["shadows"] is not None
    assert st.shadow.shape[0] * st.rate > 200_000 and st.rate > 1
