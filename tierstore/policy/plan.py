"""Placement: where every vector should live, as pure functions of the counts.

The cycle (:class:`~tierstore.engine.cycle.PolicyEngine`) gathers the columns -- the
epoch-scaled access counts, each row's current tier, its pin and its grace floor -- and these
functions turn them into a target tier per row: :func:`place` gives the hot budget to the
highest counts and the warm budget to the next (with a hysteresis bonus for incumbents),
:func:`limit_moves` cuts that down to ``max_moves_per_cycle`` moves without overfilling hot,
and :func:`directions` groups the rows that move by direction.
"""

from __future__ import annotations

import numpy as np

from .. import kernels, tiers

HOT, WARM, COLD = (tiers.CODES[n] for n in ("hot", "warm", "cold"))


def _pairs() -> list[tuple[int, int]]:
    """Every (from, to) tier pair: demotions (by source, then destination), then promotions
    (into the deepest destination first) -- the registry's order, whatever its length."""
    n = len(tiers.ORDER)
    down = [(a, b) for a in range(n - 1) for b in range(a + 1, n)]
    up = [(a, b) for b in reversed(range(n - 1)) for a in range(b + 1, n)]
    return down + up


_PAIRS = _pairs()
DIRECTIONS = tuple(f"{tiers.NAMES[a]}->{tiers.NAMES[b]}" for a, b in _PAIRS)


def place(counts: np.ndarray, cur: np.ndarray, pin: np.ndarray, young: np.ndarray, cap_hot: int,
          cap_warm: int, hysteresis: float, cold_enabled: bool = True, margin: float = 0.0) -> np.ndarray:
    """The tier every vector should live in (int8 per row), before any per-cycle move limit.

    ``counts``: access counts (any common scale); ``cur``: current tier; ``pin``: -1 or the
    tier a row is pinned to; ``young``: the grace floor per row (int8: -1, or the tier the row
    was placed in and may not fall below; see :meth:`AccessStats.grace`), or a bool array of
    rows that may not be demoted from where they are now. The hot
    budget goes to the highest counts, the warm budget to the next, the rest is cold; a row
    already at or above a tier competes with its count times ``1 + hysteresis``, plus ``margin``
    (a count on the same scale: ``policy.min_gain`` accesses). A row with no
    recorded access is never promoted. Pinned rows target their pin -- except that hot's
    capacity is hard: if more rows are pinned hot than fit, those already hot keep their places
    first, the others stay where they are, and if hot itself is over capacity (it was lowered)
    the excess goes to warm.

    >>> place(np.array([5., 1., 9., 0.]), np.array([1, 0, 2, 1], np.int8), np.full(4, -1, np.int8),
    ...       np.zeros(4, bool), cap_hot=1, cap_warm=2, hysteresis=0.2).tolist()
    [1, 1, 0, 2]
    """
    caps = [cap_hot, cap_warm] if cold_enabled else [cap_hot]
    return place_tiers(counts, cur, pin, young, caps, hysteresis, margin)


def place_tiers(counts: np.ndarray, cur: np.ndarray, pin: np.ndarray, young: np.ndarray, caps: list[int],
                hysteresis: float, margin: float = 0.0) -> np.ndarray:
    """:func:`place` over any chain of tiers: ``caps[t]`` is the budget of tier ``t`` for every
    tier but the last (which takes the rest). Each boundary in turn: the tier's budget goes to
    the best rows the faster tiers did not take. The first tier is a hard limit; a row's grace
    floor holds in the others even past their budget."""
    n = counts.shape[0]
    last = len(caps)
    cur = cur.astype(np.int8, copy=False)
    pin = pin.astype(np.int8, copy=False)
    floor = (np.where(young, cur, -1).astype(np.int8) if young.dtype == np.bool_
             else young.astype(np.int8, copy=False))
    bonus = 1.0 + hysteresis
    cls = np.empty(n, np.int8)
    prio = np.empty(n, np.float64)
    taken = np.zeros(n, np.bool_)
    target = np.full(n, last, np.int8)
    chosen = []
    for tier, cap in enumerate(caps):
        inside = np.zeros(n, np.bool_)
        kernels.tier_priorities(counts, cur, pin, floor, tier, bonus, margin, taken, cls, prio)
        kernels.select_top(cls, prio, cap, inside)
        target[inside] = tier
        taken |= inside
        chosen.append(inside)
    # a pin is kept even past a budget: first-tier pins that did not fit stay where they are
    pinned = pin >= 0
    target[pinned] = np.minimum(pin[pinned], last)
    over = pinned & (pin == 0) & ~chosen[0]
    target[over] = np.where(cur[over] == 0, 1, cur[over])
    # a young row never falls below its floor, even past a later tier's budget (the first's stays hard)
    keep = (floor > 0) & ~pinned & (target > floor)
    target[keep] = floor[keep]
    return target


def limit_moves(target: np.ndarray, cur: np.ndarray, counts: np.ndarray, cap_hot: int, cap_warm: int,
                max_moves: int, cold_enabled: bool = True) -> np.ndarray:
    """Cut a placement down to ``max_moves`` moves without ever planning the hot tier past its
    capacity: promotions go best-first, each paired with a demotion when the tier is full;
    demotions of a tier over its budget come first. Rows whose move is cut keep their tier.

    >>> limit_moves(np.array([0, 1, 0, 1], np.int8), np.array([1, 0, 1, 0], np.int8),
    ...             np.array([9., 1., 3., 2.]), cap_hot=2, cap_warm=10, max_moves=2).tolist()
    [0, 1, 1, 0]
    """
    out = cur.astype(np.int8).copy()
    moving = target != cur
    total = int(moving.sum())
    if total <= max_moves:
        return target.astype(np.int8, copy=True)
    budget = max_moves
    caps = [cap_hot, cap_warm] if cold_enabled else [cap_hot]
    # boundary by boundary, each with the counts the faster boundaries left behind
    for upper, cap in enumerate(caps):
        into = np.flatnonzero(moving & (target == upper) & (cur > upper))
        outof = np.flatnonzero(moving & (cur == upper) & (target > upper))
        have = int((out == upper).sum())
        into = into[np.argsort(-counts[into], kind="stable")]
        outof = outof[np.argsort(counts[outof], kind="stable")]
        room = cap - have
        a = np.arange(len(into) + 1)
        d = np.maximum(np.maximum(0, -room), a - room)
        ok = (a + d <= budget) & (d <= len(outof))
        if ok.any():
            na = int(a[ok].max())
            nd = int(d[na])
        else:  # over budget by more than the move limit: demote what the limit allows
            na, nd = 0, min(budget, len(outof))
        # leftover moves: more demotions out of this tier (e.g. rows pinned elsewhere)
        nd = min(len(outof), nd + max(0, budget - na - nd))
        out[into[:na]] = target[into[:na]]
        out[outof[:nd]] = target[outof[:nd]]
        budget -= na + nd
    return out


def directions(cur: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices per move direction ("hot->warm", ...), in :data:`DIRECTIONS` order."""
    return {d: np.flatnonzero((cur == a) & (target == b)) for d, (a, b) in zip(DIRECTIONS, _PAIRS, strict=True)}
