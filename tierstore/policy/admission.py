"""Promote on access: between cycles, the vectors whose accesses lifted them past the last
cycle's hot threshold go to hot (:func:`admit`), within a budget that follows what such
promotions measurably earned (:class:`Admission`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .access import AccessStats

ADMIT_PER_ACCESS = 0.01  # promotions on access allowed per access of the last cycle (the floor)
ADMIT_MAX_PER_ACCESS = 0.25  # ... and the ceiling the budget may grow to while promotions pay
ADMIT_YIELD_UP = 0.5  # net hits per promotion (since it) that double the budget when it was used up
ADMIT_YIELD_DOWN = 0.25  # ... below which the budget halves


def admit_budget(traffic: float, max_moves: int, rate: float = ADMIT_PER_ACCESS) -> int:
    """Promotions on access allowed until the next cycle: ``rate`` per access of the last
    cycle (1 per 100 unless :class:`Admission` measured that more pay), within the cycle's move
    limit (each promotion into a full hot tier is two moves)."""
    return int(min(max(1.0, traffic * rate), max_moves // 2))


class Admission:
    """The promote-on-access budget, steered by what promotions measurably earned.

    Every promotion on access is one move into hot (plus one out of it); LRU pays one per
    miss. The budget starts at :data:`ADMIT_PER_ACCESS` per access and, at each cycle, looks
    at the last cycle's promotions: the accesses the promoted vectors got since their
    promotion (hits hot gained) minus those the vectors they evicted got since (hits it lost),
    per promotion. When that net yield is >= :data:`ADMIT_YIELD_UP` and the budget was used up
    (recency-heavy traffic: new vectors are the hot ones), the rate doubles, up to
    :data:`ADMIT_MAX_PER_ACCESS`; below :data:`ADMIT_YIELD_DOWN` (noise: the promoted were no
    better than the evicted) it halves, down to the floor. Stable popularity thus keeps the
    migration traffic at the floor; sessions and popularity shifts get promotions while they pay.
    The yields are access counts recovered from the decayed ones
    (:meth:`AccessStats.gained_accesses`: exact for accesses spread evenly over the time since the
    promotion; a short half-life would otherwise hide what a promotion earned)."""

    def __init__(self) -> None:
        self.rate = ADMIT_PER_ACCESS
        self.budget = 0
        self.granted = 0
        self.last_yield: float | None = None
        self._up: list[tuple[np.ndarray, np.ndarray, float]] = []
        self._down: list[tuple[np.ndarray, np.ndarray, float]] = []

    def promoted(self, access: AccessStats, up: np.ndarray, down: np.ndarray, fills: int = 0) -> None:
        """Promotions just made (``up`` into hot, the first ``fills`` of them into free room,
        the rest each in place of one of ``down``): remember the replacements' counts. Fills
        evict nothing, so they neither use the budget nor count in its yield."""
        up = up[fills:]
        self.budget -= len(up)
        if len(up):
            self._up.append((up, *access.snapshot(up)))
        if len(down):
            self._down.append((down, *access.snapshot(down)))

    def cycle(self, access: AccessStats, traffic: float, max_moves: int) -> int:
        """At a cycle: judge the last cycle's promotions, set and return the next budget."""
        n_up = sum(len(u) for u, _, _ in self._up)
        if n_up:
            gain = sum(access.gained_accesses(s, v, t) for s, v, t in self._up)
            loss = sum(access.gained_accesses(s, v, t) for s, v, t in self._down)
            self.last_yield = (gain - loss) / n_up
            if self.last_yield >= ADMIT_YIELD_UP and self.budget <= 0.1 * self.granted:
                self.rate = min(2 * self.rate, ADMIT_MAX_PER_ACCESS)
            elif self.last_yield < ADMIT_YIELD_DOWN:
                self.rate = max(self.rate / 2, ADMIT_PER_ACCESS)
        self._up, self._down = [], []
        self.budget = self.granted = admit_budget(traffic, max_moves, self.rate)
        return self.budget

    def info(self) -> dict[str, Any]:
        return {"per_access": self.rate, "budget": self.granted,
                "net_hits_per_promotion": None if self.last_yield is None else round(self.last_yield, 3)}


def defended(counts: np.ndarray | float, hysteresis: float, margin: float) -> np.ndarray | float:
    """What an entrant must beat to displace incumbents with these ``counts``: ``count x (1 +
    hysteresis) + margin``, no margin for one never accessed (``kernels.tier_priorities`` scores
    incumbents the same way at cycles)."""
    out = np.asarray(counts) * (1.0 + hysteresis) + np.where(np.asarray(counts) > 0, margin, 0.0)
    return float(out) if out.ndim == 0 else out


def admit(counts: np.ndarray, cand: np.ndarray, evictable: np.ndarray, room: int, budget: int,
          hysteresis: float, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Promote on access (W-TinyLFU-style admission): of the candidate slots ``cand`` (not hot,
    accessed past the last cycle's hot threshold), the best fill hot's free ``room`` (they evict
    nothing: an empty or part-filled hot tier fills as it is accessed, like a cache, whatever the
    budget), then each next best replaces the lowest-scored ``evictable`` hot slot if its count
    beats that one's times ``1 + hysteresis`` plus ``margin`` (if it was ever accessed); at most ``budget`` such replacements. ``counts``
    by slot (epoch-scaled). Returns (slots to promote, the fills first; slots to demote).

    >>> admit(np.array([0., 5., 1., 9., 2.]), np.array([1, 3]), np.array([2, 4]), room=0, budget=9,
    ...       hysteresis=0.2)
    (array([3, 1]), array([2, 4]))
    >>> admit(np.array([0., 5., 1., 9., 2.]), np.array([1, 3]), np.array([2, 4]), room=1, budget=0,
    ...       hysteresis=0.2)
    (array([3]), array([], dtype=int64))
    """
    cand = cand[np.argsort(-counts[cand], kind="stable")]
    fill = min(max(room, 0), len(cand))
    rest = cand[fill:][: max(budget, 0)]
    ev = evictable[np.argsort(counts[evictable], kind="stable")][: len(rest)]
    k = len(ev)
    ok = counts[rest[:k]] > defended(counts[ev], hysteresis, margin)
    n = int(np.argmin(ok)) if not ok.all() else k  # pairs stay sorted: stop at the first that fails
    return np.concatenate([cand[:fill], rest[:n]]), ev[:n]

