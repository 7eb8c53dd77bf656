"""Access statistics: per-vector exponentially decayed access counts, in dense arrays by slot.

Query threads only *enqueue* the slots a query returned (a list append: no lock held while a
query runs, nothing computed); :meth:`AccessStats.apply` drains the queue in batches through
the numba kernel :func:`kernels.access_add`. The arrays are checkpointed into the catalog on
``flush()``/``close()`` so a restart does not forget what was hot.

Counts are *epoch-scaled* (see kernels.py): an access at time ``t`` adds ``2 ** ((t - t0) / H)``,
so the decayed count at time ``T`` is ``counts * 2 ** (-(T - t0) / H)``. ``t0`` is rebased
(all counts scaled down) before the weights get near float64's range.

>>> import numpy as np
>>> st = AccessStats(half_life=60.0, t0=0.0)
>>> st.record(np.array([3, 3, 5]), now=0.0); st.record(np.array([3]), now=60.0)
>>> st.apply()
>>> st.decayed(np.array([3, 5]), now=60.0).round(3).tolist()
[2.0, 0.5]
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from . import filters, kernels
from .catalog import FLAG_PINNED, TIER_CODES, TIER_NAMES
from .costs import bytes_per_vector  # noqa: F401  (kept: store.py and tests use policy.bytes_per_vector)
from .engine import moves
from .results import Move, PolicyReport

log = logging.getLogger("tierstore")

_REBASE_EXP = 600.0  # rebase when weights reach 2**600 (float64 overflows near 2**1024)
_APPLY_AT_ENTRIES = 8192  # queued record() calls that trigger an apply from the recording thread


# shadow half-lives of half_life = "auto", as multiples of the accesses per cycle (issue 18)
SHADOW_MULTS = (0.25, 1.0, 4.0, 16.0, 64.0)
_START = 2  # the half-life used until the shadows have been measured (4x a cycle's traffic)
_SWITCH_MARGIN = 0.005  # hit ratio a shadow must lead the current one by to be chosen
_SMOOTH = 0.5  # weight of the newest cycle in each shadow's smoothed hit ratio
_SAMPLE_ROWS = 16384  # shadows run on about this many sampled slots (a miniature simulation)


def _sample_rate(n: int) -> int:
    """Every rate-th slot is sampled for the shadows: a power of two (the kernel masks and
    shifts), so between _SAMPLE_ROWS and 2 x _SAMPLE_ROWS rows."""
    return 1 << max(0, (max(1, n // _SAMPLE_ROWS)).bit_length() - 1)


class AccessStats:
    """Decayed access counts and last-access times for every slot.

    ``half_life``: seconds (wall time), or ``"auto"``: decay in *logical* time (accesses), the
    half-life chosen each cycle among shadow half-lives (see :meth:`tune`)."""

    def __init__(self, half_life: float | str, t0: float | None = None, size: int = 0) -> None:
        self.auto = half_life == "auto"
        # auto: logical time; the half-life is in accesses and effectively infinite until the first cycle
        self.half_life = 1e12 if self.auto else float(half_life)
        self.wall0 = time.time() if t0 is None else float(t0)  # placement times are relative to it
        self.t0 = 0.0 if self.auto else self.wall0
        self.clock = 0.0  # auto: accesses applied (logical time)
        self.counts = np.zeros(max(size, 1024), dtype=np.float64)
        self.last = np.zeros(self.counts.shape[0], dtype=np.float32)  # seconds since t0 (auto: since wall0)
        # when each vector was last placed by ingest or an explicit move (seconds since wall0;
        # -inf = never), and where: the grace period protects that placement for a while
        self.placed = np.full(self.counts.shape[0], -np.inf, dtype=np.float32)
        # -1: none; 0..2: the tier ingest put it in (a floor); 3..5: the tier an explicit
        # move() put it in, + 3 (held there, up or down)
        self.placed_tier = np.full(self.counts.shape[0], -1, dtype=np.int8)
        # promote-on-access: slots known hot, the hot threshold of the last cycle (epoch-scaled),
        # and the slots that passed it since the last look
        self.hot = np.zeros(self.counts.shape[0], dtype=np.bool_)
        self.cand = np.zeros(self.counts.shape[0], dtype=np.bool_)
        self.admit_thr = np.inf
        # auto: shadow scores (see tune); none until the first cycle has measured the traffic
        self.grid: np.ndarray | None = None  # shadow half-lives in accesses
        self.rate = 1
        self.shadow = np.zeros((0, len(SHADOW_MULTS) + 1))
        self.chosen = _START
        self.smoothed: np.ndarray | None = None
        self._sets: list[np.ndarray] | None = None
        self._cycle_clock = 0.0
        self.tuning: list[dict[str, Any]] = []  # the last cycles' choices (stats()["policy"])
        self._queue: deque[tuple[np.ndarray | list[int], float]] = deque()
        self._lock = threading.Lock()  # guards apply/resize/rebase, never held by record()
        self.total_accesses = 0
        self.latest = -np.inf  # the time stamp of the latest access applied (wall seconds)

    # --- recording (query threads) ----------------------------------------------------------------

    def record(self, slots: np.ndarray | list[int], now: float | None = None) -> None:
        """Queue accesses to ``slots`` (converted to an array only when applied)."""
        if not len(slots):
            return
        self._queue.append((slots, time.time() if now is None else now))
        # (len() of a deque is atomic; a shared counter updated from many threads would drift)
        if len(self._queue) >= _APPLY_AT_ENTRIES and self._lock.acquire(blocking=False):
            try:
                self._apply_locked()
            finally:
                self._lock.release()

    # --- applying ---------------------------------------------------------------------------------

    def apply(self) -> None:
        with self._lock:
            self._apply_locked()

    def _apply_locked(self) -> None:
        # Drain everything queued at once: small lists (one per query) are concatenated and
        # applied by one kernel call with per-access weights, so the cost per query is a list
        # extend, not a kernel call; arrays (touch, large batches) go through as they are.
        flat: list[int] = []
        lens: list[int] = []
        nows: list[float] = []
        chunks: list[tuple[np.ndarray, np.ndarray | float]] = []
        while self._queue:
            slots, now = self._queue.popleft()
            if isinstance(slots, np.ndarray):
                chunks.append((slots.astype(np.int64, copy=False), now))
            else:
                flat.extend(slots)
                lens.append(len(slots))
                nows.append(now)
        if flat:
            chunks.append((np.asarray(flat, dtype=np.int64), np.repeat(np.asarray(nows), lens)))
        for slots, now in chunks:
            if not len(slots):
                continue
            self._ensure(int(slots.max()) + 1)
            latest = float(np.max(now))
            self.latest = max(self.latest, latest)
            if self.auto:
                self._apply_logical(slots, latest)
                continue
            if (latest - self.t0) / self.half_life > _REBASE_EXP:
                self._rebase(latest)
            if isinstance(now, np.ndarray):
                rel = now - self.t0
                kernels.access_add_each(self.counts, self.last, slots, np.exp2(rel / self.half_life),
                                        rel.astype(np.float32))
            else:
                kernels.access_add(self.counts, self.last, slots, 2.0 ** ((now - self.t0) / self.half_life),
                                   np.float32(now - self.t0))
            if self.admit_thr < np.inf:
                kernels.flag_candidates(self.counts, slots, self.hot, self.admit_thr, self.cand)
            self.total_accesses += len(slots)

    def _apply_logical(self, slots: np.ndarray, now: float) -> None:
        h_min = self.half_life if self.grid is None else min(self.half_life, float(self.grid[0]))
        if (self.clock + len(slots) - self.t0) / h_min > _REBASE_EXP:
            self._rebase(self.clock)
        inv_hs = (1.0 / self.grid) if self.grid is not None else np.zeros(0)
        block = int(max(1, min(4096, h_min // 64)))
        kernels.access_logical(self.counts, self.last, slots, self.clock - self.t0, 1.0 / self.half_life,
                               np.float32(now - self.wall0), self.shadow, inv_hs, self.rate, block,
                               self.hot, self.admit_thr, self.cand)
        self.clock += len(slots)
        self.total_accesses += len(slots)

    def _ensure(self, n: int) -> None:
        if n > self.counts.shape[0]:
            size = max(n, 2 * self.counts.shape[0])
            grow = size - self.counts.shape[0]
            self.counts = np.concatenate([self.counts, np.zeros(grow)])
            self.last = np.concatenate([self.last, np.zeros(grow, np.float32)])
            self.placed = np.concatenate([self.placed, np.full(grow, -np.inf, np.float32)])
            self.placed_tier = np.concatenate([self.placed_tier, np.full(grow, -1, np.int8)])
            self.hot = np.concatenate([self.hot, np.zeros(grow, np.bool_)])
            self.cand = np.concatenate([self.cand, np.zeros(grow, np.bool_)])

    def _rebase(self, now: float) -> None:
        """Move the epoch to ``now`` (wall seconds, or accesses when auto): every score scaled down."""
        shift = now - self.t0
        kernels.scale_inplace(self.counts, 2.0 ** (-shift / self.half_life))
        if self.admit_thr < np.inf:
            self.admit_thr *= 2.0 ** (-shift / self.half_life)
        if self.grid is not None and len(self.shadow):
            self.shadow[:, :-1] *= np.exp2(-shift / self.grid)
        if not self.auto:
            self.last -= np.float32(shift)
            self.placed -= np.float32(now - self.wall0)
            self.wall0 = now
        self.t0 = now

    def set_half_life(self, half_life: float) -> None:
        """Auto: continue with another half-life (the decayed counts carry over)."""
        with self._lock:
            self._apply_locked()
            self._rebase(self.clock)
            self.half_life = float(half_life)

    def forget(self, slots: np.ndarray) -> None:
        """Reset slots that were freed (deleted vectors), so a reused slot starts cold."""
        with self._lock:
            self._apply_locked()
            slots = slots[(slots >= 0) & (slots < self.counts.shape[0])]
            self.counts[slots] = 0.0
            self.last[slots] = 0.0
            self.placed[slots] = -np.inf
            self.placed_tier[slots] = -1
            self.cand[slots] = False
            rows = slots[slots % self.rate == 0] // self.rate
            rows = rows[rows < len(self.shadow)]
            self.shadow[rows] = 0.0

    def believe_hot(self, up: np.ndarray, down: np.ndarray) -> None:
        """Promote on access moved ``up`` into hot and ``down`` out of it (as far as it knows:
        a skipped move is put right by the next cycle)."""
        with self._lock:
            self.hot[up] = True
            self.hot[down] = False

    def mark_placed(self, slots: np.ndarray, tier: int | np.ndarray, explicit: bool = False,
                    now: float | None = None) -> None:
        """Start the grace period of ``slots``, placed in ``tier`` (0 hot, 1 warm, 2 cold) by
        ingest (``explicit=False``: the policy may promote them, but not demote them below
        ``tier``) or by the user's ``move()`` (``explicit=True``: the policy leaves them there)."""
        if not len(slots):
            return
        now = time.time() if now is None else now
        with self._lock:
            self._ensure(int(slots.max()) + 1)
            self.placed[slots] = np.float32(now - self.wall0)
            self.placed_tier[slots] = np.asarray(tier, np.int8) + (3 if explicit else 0)
            self.hot[slots] = np.asarray(tier) == 0

    def grace(self, slots: np.ndarray, now: float, grace: float) -> tuple[np.ndarray, np.ndarray]:
        """(floor, hold) of ``slots`` (int8, -1 = none): for a row in its grace period, the
        tier ingest placed it in (it may rise, not fall below it) or the tier an explicit move
        placed it in (it stays there)."""
        with self._lock:
            if len(slots):
                self._ensure(int(slots.max()) + 1)
            young = self.placed[slots] > np.float32(now - self.wall0 - grace)
            pt = self.placed_tier[slots]
            floor = np.where(young & (pt >= 0) & (pt < 3), pt, -1).astype(np.int8)
            hold = np.where(young & (pt >= 3), pt - 3, -1).astype(np.int8)
            return floor, hold

    def columns(self, slots: np.ndarray, now: float, grace: float) -> tuple[np.ndarray, np.ndarray]:
        """(epoch-scaled counts, in-grace flags) of ``slots``, after applying queued accesses.
        Scaled counts rank exactly like decayed ones (one common factor), so the policy
        compares them directly; :meth:`decayed` turns them into access counts for reports."""
        with self._lock:
            self._apply_locked()
            if len(slots):
                self._ensure(int(slots.max()) + 1)
            young = self.placed[slots] > np.float32(now - self.wall0 - grace)
            return self.counts[slots], young  # fancy indexing: already copies

    def scale(self, now: float) -> float:
        """Factor turning epoch-scaled counts into decayed counts at ``now`` (auto: at the
        current logical time)."""
        return 2.0 ** (-((self.clock if self.auto else now) - self.t0) / self.half_life)

    # --- promote on access ------------------------------------------------------------------------

    def _time(self) -> float:
        return self.clock if self.auto else (self.latest if np.isfinite(self.latest) else time.time())

    def snapshot(self, slots: np.ndarray) -> tuple[np.ndarray, float]:
        """(decayed counts of ``slots``, the time they hold at): see :meth:`gained`."""
        with self._lock:
            self._apply_locked()
            now = self._time()
            return self.counts[slots] * self.scale(now), now

    def gained(self, slots: np.ndarray, snap: np.ndarray, at: float) -> np.ndarray:
        """Decayed accesses of ``slots`` since :meth:`snapshot` returned (``snap``, ``at``) (each
        weighted by its decay since; the current half-life)."""
        with self._lock:
            self._apply_locked()
            now = self._time()
            return np.maximum(self.counts[slots] * self.scale(now) - snap * 2.0 ** (-(now - at) / self.half_life), 0.0)

    def watch(self, hot_slots: np.ndarray, thr: float) -> None:
        """After a cycle: which slots are hot, and the (epoch-scaled) count an access must lift
        a slot past to become a candidate for promotion before the next cycle."""
        with self._lock:
            self._apply_locked()
            if len(hot_slots):
                self._ensure(int(hot_slots.max()) + 1)
            self.hot[:] = False
            self.hot[hot_slots] = True
            self.cand[:] = False
            self.admit_thr = float(thr)

    def take_candidates(self) -> np.ndarray:
        """Slots flagged since the last call (cleared)."""
        with self._lock:
            self._apply_locked()
            out = np.flatnonzero(self.cand)
            self.cand[out] = False
            out = out[~self.hot[out]]
            return out

    # --- auto half-life ---------------------------------------------------------------------------

    def tune(self, slots: np.ndarray, cap_hot: int) -> dict[str, Any] | None:
        """Auto: score what each shadow half-life would have held hot (its top ``cap_hot`` at
        the last cycle, on the sampled slots) against the accesses since, move the policy's
        half-life to the best (smoothed over cycles, by a margin: no flapping), and take each
        shadow's hot set for the next cycle. ``slots``: the live vectors'. Returns the report."""
        if not self.auto:
            return None
        with self._lock:
            self._apply_locked()
            traffic = self.clock - self._cycle_clock
            self._cycle_clock = self.clock
            if self.grid is None:
                if traffic < 1:
                    return None
                # the first cycle sets the grid: multiples of one cycle's traffic
                self.grid = np.asarray(SHADOW_MULTS) * max(traffic, 64.0)
                n = max(int(self.counts.shape[0]), int(slots.max()) + 1 if len(slots) else 1)
                self.rate = _sample_rate(n)
                self.shadow = np.zeros((n // self.rate + 1, len(SHADOW_MULTS) + 1))
                self.t0 = self.clock  # shadows start at this epoch
                self._rebase_counts_to(self.clock, float(self.grid[self.chosen]))
                info = {"half_life": float(self.half_life), "traffic": traffic, "shadows": None}
                self._sets = None
            else:
                samp = slots[slots % self.rate == 0] // self.rate
                samp = samp[samp < len(self.shadow)]
                k = len(SHADOW_MULTS)
                win = self.shadow[:, k]
                total = float(win.sum())
                info = {"traffic": traffic, "sampled_accesses": total, "shadows": None}
                if self._sets is not None and total > 0:
                    ratios = np.array([win[s].sum() / total for s in self._sets])
                    self.smoothed = ratios if self.smoothed is None else (
                        _SMOOTH * ratios + (1 - _SMOOTH) * self.smoothed)
                    best = int(np.argmax(self.smoothed))
                    if self.smoothed[best] > self.smoothed[self.chosen] + _SWITCH_MARGIN:
                        self.chosen = best
                    info["shadows"] = {f"{h:g}": round(float(r), 4) for h, r in zip(self.grid, ratios, strict=True)}
                    info["smoothed"] = {f"{h:g}": round(float(r), 4) for h, r in zip(self.grid, self.smoothed, strict=True)}
                win[:] = 0.0
                b = int(round(cap_hot * len(samp) / max(len(slots), 1)))
                sets = []
                for j in range(k):
                    vals = self.shadow[samp, j]
                    top = samp[np.argpartition(-vals, b - 1)[:b]] if 0 < b < len(samp) else samp
                    sets.append(top[self.shadow[top, j] > 0])
                self._sets = sets
                if float(self.grid[self.chosen]) != self.half_life:
                    self._rebase_counts_to(self.clock, float(self.grid[self.chosen]))
                info["half_life"] = float(self.half_life)
            info["clock"] = self.clock
            self.tuning = (self.tuning + [info])[-20:]
            return info

    def _rebase_counts_to(self, now: float, half_life: float) -> None:
        """(lock held) Decay the primary counts to ``now``, then continue with ``half_life``."""
        self._rebase(now)  # shadows and counts at the epoch ``now``
        self.half_life = half_life

    # --- reading ----------------------------------------------------------------------------------

    def decayed(self, slots: np.ndarray, now: float | None = None) -> np.ndarray:
        """Decayed access counts of ``slots`` at time ``now`` (0 for never-seen slots)."""
        now = time.time() if now is None else now
        out = np.zeros(len(slots))
        inside = (slots >= 0) & (slots < self.counts.shape[0])
        out[inside] = self.counts[slots[inside]] * self.scale(now)
        return out

    # --- persistence ------------------------------------------------------------------------------

    def dumps(self) -> bytes:
        with self._lock:
            self._apply_locked()
            buf = io.BytesIO()
            state = {"auto": self.auto, "half_life": self.half_life, "clock": self.clock, "wall0": self.wall0,
                     "grid": None if self.grid is None else self.grid.tolist(), "chosen": self.chosen,
                     "cycle_clock": self._cycle_clock}
            np.savez(buf, counts=self.counts, last=self.last, placed=self.placed, placed_tier=self.placed_tier,
                     t0=np.float64(self.t0), total=np.int64(self.total_accesses),
                     state=np.frombuffer(json.dumps(state).encode(), np.uint8))
            return buf.getvalue()

    @classmethod
    def loads(cls, raw: bytes, half_life: float | str) -> AccessStats:
        with np.load(io.BytesIO(raw)) as z:
            has_state = "state" in z.files
            state = json.loads(z["state"].tobytes()) if has_state else {"auto": False, "half_life": 3600.0}
            t0 = float(z["t0"])
            st = cls(half_life, t0=state.get("wall0", t0), size=0)
            st.counts, st.last = z["counts"].copy(), z["last"].copy()
            n = st.counts.shape[0]
            st.placed = (z["placed"].copy() if "placed" in z.files
                         else np.full(n, -np.inf, dtype=np.float32))
            # (stats from before placement tiers were kept: no grace, the policy decides)
            st.placed_tier = (z["placed_tier"].copy() if "placed_tier" in z.files
                              else np.full(n, -1, dtype=np.int8))
            st.hot, st.cand = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
            st.total_accesses = int(z["total"])
        was_auto = bool(state.get("auto"))
        if st.auto and was_auto:
            st.t0, st.clock, st.half_life = t0, state["clock"], state["half_life"]
            st.chosen, st._cycle_clock = state["chosen"], state["cycle_clock"]
            if state["grid"] is not None:  # the shadows start again from here
                st.grid = np.asarray(state["grid"])
                st.rate = _sample_rate(n)
                st.shadow = np.zeros((n // st.rate + 1, len(SHADOW_MULTS) + 1))
                st._rebase(st.clock)
        elif not st.auto and not was_auto:
            st.t0 = t0
        else:  # the mode changed: the decayed counts, as plain counts at the new epoch
            old_now = state["clock"] if was_auto else time.time()
            st.counts *= 2.0 ** (-(old_now - t0) / float(state.get("half_life", 3600.0)))
            st.t0 = 0.0 if st.auto else time.time()
        return st


# --- placement: where every vector should live -------------------------------------------------

HOT, WARM, COLD = 0, 1, 2
DIRECTIONS = ("hot->warm", "hot->cold", "warm->cold", "cold->warm", "warm->hot", "cold->hot")
_DIR_CODE = {(HOT, WARM): 0, (HOT, COLD): 1, (WARM, COLD): 2, (COLD, WARM): 3, (WARM, HOT): 4, (COLD, HOT): 5}


def place(counts: np.ndarray, cur: np.ndarray, pin: np.ndarray, young: np.ndarray, cap_hot: int,
          cap_warm: int, hysteresis: float, cold_enabled: bool = True) -> np.ndarray:
    """The tier every vector should live in (int8 per row), before any per-cycle move limit.

    ``counts``: access counts (any common scale); ``cur``: current tier; ``pin``: -1 or the
    tier a row is pinned to; ``young``: the grace floor per row (int8: -1, or the tier the row
    was placed in and may not fall below; see :meth:`AccessStats.grace`), or a bool array of
    rows that may not be demoted from where they are now. The hot
    budget goes to the highest counts, the warm budget to the next, the rest is cold; a row
    already at or above a tier competes with its count times ``1 + hysteresis``. A row with no
    recorded access is never promoted. Pinned rows target their pin -- except that hot's
    capacity is hard: if more rows are pinned hot than fit, those already hot keep their places
    first, the others stay where they are, and if hot itself is over capacity (it was lowered)
    the excess goes to warm.

    >>> place(np.array([5., 1., 9., 0.]), np.array([1, 0, 2, 1], np.int8), np.full(4, -1, np.int8),
    ...       np.zeros(4, bool), cap_hot=1, cap_warm=2, hysteresis=0.2).tolist()
    [1, 1, 0, 2]
    """
    n = counts.shape[0]
    cur = cur.astype(np.int8, copy=False)
    pin = pin.astype(np.int8, copy=False)
    floor = (np.where(young, cur, -1).astype(np.int8) if young.dtype == np.bool_
             else young.astype(np.int8, copy=False))
    bonus = 1.0 + hysteresis
    cls = np.empty(n, np.int8)
    prio = np.empty(n, np.float64)
    taken = np.zeros(n, np.bool_)
    in_hot = np.zeros(n, np.bool_)
    kernels.tier_priorities(counts, cur, pin, floor, HOT, bonus, taken, cls, prio)
    kernels.select_top(cls, prio, cap_hot, in_hot)
    target = np.full(n, COLD if cold_enabled else WARM, np.int8)
    target[in_hot] = HOT
    if cold_enabled:
        in_warm = np.zeros(n, np.bool_)
        kernels.tier_priorities(counts, cur, pin, floor, WARM, bonus, in_hot, cls, prio)
        kernels.select_top(cls, prio, cap_warm, in_warm)
        target[in_warm] = WARM
    # a pin is kept even past a budget: hot-pinned rows that did not fit stay where they are
    pinned = pin >= 0
    target[pinned] = pin[pinned]
    over = pinned & (pin == HOT) & ~in_hot
    target[over] = np.where(cur[over] == HOT, WARM, cur[over])
    if not cold_enabled:
        target[pinned & (target == COLD)] = WARM
    # a young row never falls below its floor, even past warm's budget (hot's stays hard)
    keep = (floor == WARM) & ~pinned & (target == COLD)
    target[keep] = WARM
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
    n_hot = int((cur == HOT).sum())
    # boundary 1 (hot), then boundary 2 (warm/cold) with the counts boundary 1 left behind
    for upper, cap in ((HOT, cap_hot), (WARM, cap_warm)):
        if upper == WARM and not cold_enabled:
            break
        if upper == HOT:
            into = np.flatnonzero(moving & (target == HOT))
            outof = np.flatnonzero(moving & (cur == HOT))
            have = n_hot
        else:
            into = np.flatnonzero(moving & (target == WARM) & (cur == COLD))
            outof = np.flatnonzero(moving & (cur == WARM) & (target == COLD))
            have = int((out == WARM).sum())
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


ADMIT_PER_ACCESS = 0.01  # promotions on access allowed per access of the last cycle (the floor)
ADMIT_MAX_PER_ACCESS = 0.25  # ... and the ceiling the budget may grow to while promotions pay
ADMIT_YIELD_UP = 1.0  # net hits per promotion (since it) that double the budget when it was used up
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
    The yields are decayed access counts (:meth:`AccessStats.snapshot`/``gained``): exact up to the
    decay over one cycle, the same for both sides."""

    def __init__(self) -> None:
        self.rate = ADMIT_PER_ACCESS
        self.budget = 0
        self.granted = 0
        self.last_yield: float | None = None
        self._up: list[tuple[np.ndarray, np.ndarray, float]] = []
        self._down: list[tuple[np.ndarray, np.ndarray, float]] = []

    def promoted(self, access: AccessStats, up: np.ndarray, down: np.ndarray) -> None:
        """Promotions just made (``up`` into hot, ``down`` out of it): remember their counts."""
        self.budget -= len(up)
        if len(up):
            self._up.append((up, *access.snapshot(up)))
        if len(down):
            self._down.append((down, *access.snapshot(down)))

    def cycle(self, access: AccessStats, traffic: float, max_moves: int) -> int:
        """At a cycle: judge the last cycle's promotions, set and return the next budget."""
        n_up = sum(len(u) for u, _, _ in self._up)
        if n_up:
            gain = sum(float(access.gained(s, v, t).sum()) for s, v, t in self._up)
            loss = sum(float(access.gained(s, v, t).sum()) for s, v, t in self._down)
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


def admit(counts: np.ndarray, cand: np.ndarray, evictable: np.ndarray, room: int, budget: int,
          hysteresis: float) -> tuple[np.ndarray, np.ndarray]:
    """Promote on access (W-TinyLFU-style admission): of the candidate slots ``cand`` (not hot,
    accessed past the last cycle's hot threshold), the best fill hot's free ``room``, then each
    next best replaces the lowest-scored ``evictable`` hot slot if its count beats that one's
    times ``1 + hysteresis``; at most ``budget`` promotions. ``counts`` by slot (epoch-scaled).
    Returns (slots to promote, slots to demote).

    >>> admit(np.array([0., 5., 1., 9., 2.]), np.array([1, 3]), np.array([2, 4]), room=0, budget=9,
    ...       hysteresis=0.2)
    (array([3, 1]), array([2, 4]))
    """
    cand = cand[np.argsort(-counts[cand], kind="stable")][: max(budget, 0)]
    fill = min(max(room, 0), len(cand))
    rest = cand[fill:]
    ev = evictable[np.argsort(counts[evictable], kind="stable")][: len(rest)]
    k = len(ev)
    ok = counts[rest[:k]] > counts[ev] * (1.0 + hysteresis)
    n = int(np.argmin(ok)) if not ok.all() else k  # pairs stay sorted: stop at the first that fails
    return np.concatenate([cand[:fill], rest[:n]]), ev[:n]


def directions(cur: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices per move direction ("hot->warm", ...), in :data:`DIRECTIONS` order."""
    out = {}
    for (a, b), code in _DIR_CODE.items():
        out[DIRECTIONS[code]] = np.flatnonzero((cur == a) & (target == b))
    return out


# --- the cycle -----------------------------------------------------------------------------------


class HitWindow:
    """Which tier served the results of the last ``size`` queries (a ring of per-query counts)."""

    def __init__(self, size: int) -> None:
        self.rows = np.zeros((size, 3), dtype=np.int32)
        self.top1 = np.full(size, -1, dtype=np.int8)
        self.i = 0
        self.n = 0
        self._lock = threading.Lock()  # queries from many threads

    def add(self, hits_list: list) -> None:
        size = self.rows.shape[0]
        with self._lock:
            for hits in hits_list:
                row = self.rows[self.i]
                row[:] = 0
                for h in hits:
                    row[TIER_CODES[h.tier]] += 1
                self.top1[self.i] = TIER_CODES[hits[0].tier] if hits else -1
                self.i = (self.i + 1) % size
                self.n = min(self.n + 1, size)

    def ratios(self) -> dict[str, Any]:
        with self._lock:
            rows, top1 = self.rows[: self.n].copy(), self.top1[: self.n].copy()
        total, first = int(rows.sum()), int((top1 >= 0).sum())
        return {
            "queries": self.n,
            "results": {t: (float(rows[:, c].sum() / total) if total else None) for t, c in (("hot", 0), ("warm", 1), ("cold", 2))},
            "top1": {t: (float((top1 == c).sum() / first) if first else None) for t, c in (("hot", 0), ("warm", 1), ("cold", 2))},
        }


class PolicyEngine:
    """Plans and runs policy cycles for a store (on demand, or on a background thread)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine  # tierstore.engine.core.Engine
        self.cfg = engine.config.policy
        self.hits = HitWindow(self.cfg.hit_window)
        self.moves_total = dict.fromkeys(DIRECTIONS, 0)
        self.cycles = 0
        self.compactions = 0  # cold compactions run by the cycle (see _maybe_compact)
        self.last: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.interrupted: dict[str, Any] | None = None
        self._run_lock = threading.Lock()  # one cycle at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._promoter: threading.Thread | None = None
        # promote on access: from the last cycle, slot -> internal id, the hot slots it may
        # evict (not pinned, not young in hot) and what is left of its move budget
        self._slot_iid = np.zeros(0, np.uint64)  # internal ids are 64-bit unsigned
        self._slot_live = np.zeros(0, np.bool_)
        self._evictable = np.zeros(0, np.int64)
        self._room = 0
        self.admission = Admission()  # the promote-on-access budget (follows what promotions earn)
        self._last_total = 0
        self.promoted = 0
        self._pins = []
        for code, name in enumerate(("pin_hot", "pin_warm", "pin_cold")):
            spec = getattr(self.cfg, name)
            if spec is not None:
                self._pins.append((code, filters.compile_filter(spec, engine.schema)))

    # --- background ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.cfg.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tierstore-policy", daemon=True)
            self._thread.start()
            if self.cfg.promote_interval > 0:
                self._promoter = threading.Thread(target=self._promote_loop, name="tierstore-promote", daemon=True)
                self._promoter.start()

    def _promote_loop(self) -> None:
        while not self._stop.wait(self.cfg.promote_interval):
            try:
                with self.engine.operation():
                    self.promote()
            except Exception as exc:  # noqa: BLE001 -- statistics-driven: the next try comes soon
                if self._stop.is_set():
                    return
                log.warning("promote on access failed: %s: %s", type(exc).__name__, exc)

    def promote(self) -> int:
        """Promote on access (between cycles): the vectors whose accesses since the last cycle
        lifted them past its hot threshold go to hot now, each in place of the lowest-scored
        evictable hot vector it beats (with the hysteresis margin), within what is left of
        ``max_moves_per_cycle``. Batched: one call moves all current candidates. Returns #promoted."""
        st = self.engine
        if not self._run_lock.acquire(blocking=False):
            return 0  # a cycle is running: it places everything anyway
        try:
            cand = st.access.take_candidates()
            cand = cand[cand < len(self._slot_iid)]
            cand = cand[self._slot_live[cand]]
            if not len(cand) or self.admission.budget <= 0:
                return 0
            counts = st.access.counts
            up, down = admit(counts, cand, self._evictable, self._room, self.admission.budget, self.cfg.hysteresis)
            if not len(up):
                return 0
            plan: dict[str, list[tuple[int, int]]] = {}
            with st.catalog.read() as txn:
                for slots, dst in ((down, "warm"), (up, "hot")):
                    for s in slots.tolist():
                        e = st.catalog.entry(txn, int(self._slot_iid[s]))
                        if e is None or e.slot != s or e.flags & FLAG_PINNED:
                            continue
                        src = TIER_NAMES[e.tier]
                        if src != dst:
                            plan.setdefault(f"{src}->{dst}", []).append((e.iid, e.version))
            arrays = {d: (np.array([i for i, _ in v], np.uint64), np.array([x for _, x in v], np.int64))
                      for d, v in plan.items()}
            moved, _ = moves.execute(st, arrays, stop=self._stop.is_set)
            for d, n in moved.items():
                self.moves_total[d] += n
            n_up = sum(n for d, n in moved.items() if d.endswith("->hot"))
            self.promoted += n_up
            self.admission.promoted(st.access, up, down)
            # the hot set as now believed (a skipped move is put right by the next cycle)
            st.access.believe_hot(up, down)
            fill = min(max(self._room, 0), len(up))
            self._room -= fill
            self._evictable = np.concatenate([np.setdiff1d(self._evictable, down), up])
            return n_up
        finally:
            self._run_lock.release()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the thread (a running cycle stops after its current batch)."""
        self._stop.set()
        if self._promoter is not None:
            self._promoter.join(timeout)
            if not self._promoter.is_alive():
                self._promoter = None
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None
        if self._thread is None:
            # Only the thread's cycles were to stop: a later run_policy() (or start()) must run
            # whole, not return before its first batch because the event is still set.
            self._stop.clear()

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.interval):
            try:
                with self.engine.operation():  # counted: close() waits for it to finish
                    self.run()
            except Exception as exc:  # noqa: BLE001 -- the thread must survive a bad cycle
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("policy cycle failed (next try in %.0fs): %s", self.cfg.interval, self.last_error)

    # --- one cycle ----------------------------------------------------------------------------

    def run(self, dry_run: bool = False, examples: int = 20,
            progress: Callable[[str, int], None] | None = None) -> PolicyReport:
        """Plan (and unless ``dry_run``, carry out) one cycle; see TierStore.run_policy."""
        t0 = time.perf_counter()
        try:
            report = self._run(dry_run, examples, progress)
        except Exception as exc:
            if not dry_run:
                self.engine.metrics.policy_cycle(time.perf_counter() - t0, exc)
            raise
        if not dry_run:
            self.engine.metrics.policy_cycle(report.seconds, None)
        return report

    def _run(self, dry_run: bool, examples: int, progress: Callable[[str, int], None] | None) -> PolicyReport:
        with self._run_lock:
            report, plan = self.plan(dry_run, examples)
            watch = getattr(self, "_watch", None)
            if not dry_run and report.total_planned:
                moved, report.skipped = moves.execute(self.engine, plan, stop=self._stop.is_set, progress=progress)
                report.moved = {d: n for d, n in moved.items() if n}
                for d, n in moved.items():
                    self.moves_total[d] += n
                report.after = self.engine.catalog.counts()
            if not dry_run and not self._stop.is_set() and (self._maybe_compact()
                                                             or sum(report.moved.values()) >= 1000):
                self.engine.release_memory()
            report.seconds = time.time() - report.started
            if not dry_run and watch is not None:
                self._arm(*watch)
            if not dry_run:
                self.cycles += 1
                self.last = {"at": report.started, "seconds": report.seconds, "planned": report.total_planned,
                             "moved": report.moved, "skipped": report.skipped, "deferred": report.deferred}
                self.last_error = None
                self.engine.checkpoint()
            return report

    def _maybe_compact(self) -> bool:
        """Merge cold's small segments once ``cold.auto_compact_segments`` have piled up: each
        ingest batch spilled to cold and each cycle's demotions write one, and a query probes
        ``nprobe`` partitions over all segments, so many small ones cost recall."""
        st = self.engine
        limit = st.config.cold.auto_compact_segments
        if not limit or st.cold is None or not st.cold.connected or st.cold.small_segments() < limit:
            return False
        with st.write_lock:
            out = moves.compact_cold(st)
        self.compactions += 1
        log.info("policy: compacted cold: %s", out)
        return True

    def plan(self, dry_run: bool, examples: int = 20) -> tuple[PolicyReport, dict[str, tuple[np.ndarray, np.ndarray]]]:
        st = self.engine
        now = time.time()
        report = PolicyReport(dry_run=dry_run, started=now)
        snap = st.catalog.placement(with_meta=bool(self._pins))
        n = len(snap["iid"])
        report.vectors = n
        cur = snap["tier"]
        st.drain_shared_accesses()  # what read-only processes recorded since the last cycle
        cold = st.cold is not None
        caps = {"hot": st.capacity("hot"), "warm": st.capacity("warm") if cold else n}
        if not dry_run:  # half_life = "auto": score the shadows, maybe switch (the counts follow)
            st.access.tune(snap["slot"], caps["hot"])
        report.half_life = self.half_life_info()
        counts, _ = st.access.columns(snap["slot"], now, self.cfg.grace_period)
        # grace protects placement, not the policy's own promotions: an ingested row may not
        # fall below the tier ingest put it in, a row the user moved stays where it was put
        floor, hold = st.access.grace(snap["slot"], now, self.cfg.grace_period)
        pin = np.full(n, -1, np.int8)
        if self._pins:
            metas = [json.loads(m) if m else {} for m in snap["meta"]]  # decoded once for every filter
            for code, node in reversed(self._pins):  # pin_hot wins over pin_warm over pin_cold
                pin[np.fromiter((filters.matches(node, md) for md in metas), bool, n)] = code
        flagged = (snap["flags"] & FLAG_PINNED) != 0  # store.pin(): stays in its current tier
        pin[flagged] = cur[flagged]
        held = (hold >= 0) & (pin < 0)
        pin[held] = hold[held]
        report.budgets = dict(caps)
        report.before = {t: int((cur == c).sum()) for c, t in enumerate(TIER_NAMES) if t in st.tiers}
        report.pinned, report.in_grace = int((pin >= 0).sum() - held.sum()), int(((floor >= 0) | held).sum())
        full = place(counts, cur, pin, floor, caps["hot"], caps["warm"], self.cfg.hysteresis, cold)
        target = limit_moves(full, cur, counts, caps["hot"], caps["warm"], self.cfg.max_moves_per_cycle, cold)
        report.deferred = int((full != cur).sum() - (target != cur).sum())
        scale = st.access.scale(now)
        for c, t in ((HOT, "hot"), (WARM, "warm")):
            free = (full == c) & (pin < 0) & (floor != c)
            if free.any():
                report.thresholds[t] = float(counts[free].min() * scale)
        report.after = {t: int((target == c).sum()) for c, t in enumerate(TIER_NAMES) if t in st.tiers}
        # promote on access until the next cycle: against this plan's hot set and threshold
        hot_rows = target == HOT
        evict = hot_rows & (pin < 0) & (floor != HOT)
        room = caps["hot"] - int(hot_rows.sum())
        thr = 0.0 if room > 0 else (float(counts[evict].min()) * (1 + self.cfg.hysteresis) if evict.any() else np.inf)
        self._watch = (snap["slot"], snap["iid"], hot_rows, evict, room, thr)
        hot_over = int((pin == HOT).sum()) - caps["hot"]
        if hot_over > 0:
            report.warnings.append(f"{hot_over} vectors pinned to hot (policy.pin_hot / pin) do not fit hot.capacity "
                                   f"= {caps['hot']}; those not already hot stay where they are")
        plan: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for d, rows in directions(cur, target).items():
            if not len(rows):
                continue
            dst = TIER_CODES[d.split("->")[1]]
            order = np.argsort(-counts[rows] if dst < cur[rows[0]] else counts[rows], kind="stable")
            rows = rows[order]  # promotions best first, demotions least used first
            plan[d] = (snap["iid"][rows], snap["version"][rows])
            report.planned[d] = len(rows)
            if examples:
                report.moves += self._explain(d, rows[:examples], snap, counts * scale, pin, report.thresholds)
        return report, plan

    def _arm(self, slots: np.ndarray, iids: np.ndarray, hot_rows: np.ndarray, evict: np.ndarray, room: int,
             thr: float) -> None:
        """After a cycle: what promote-on-access works against until the next one."""
        if self.cfg.promote_interval <= 0:
            return
        size = int(slots.max()) + 1 if len(slots) else 0
        self._slot_iid = np.zeros(size, np.uint64)
        self._slot_iid[slots] = iids.astype(np.uint64)
        self._slot_live = np.zeros(size, np.bool_)
        self._slot_live[slots] = True
        self._evictable = slots[evict].astype(np.int64)
        self._room = room
        a = self.engine.access
        self.admission.cycle(a, a.total_accesses - self._last_total, self.cfg.max_moves_per_cycle)
        self._last_total = a.total_accesses
        self.engine.access.watch(slots[hot_rows].astype(np.int64), thr)

    def half_life_info(self) -> dict[str, Any]:
        """The half-life in use and, with ``half_life = "auto"``, the shadow hit ratios of the
        last cycles that chose it."""
        a = self.engine.access
        if not hasattr(a, "auto"):  # a read-only process records accesses for the writer's policy
            return {"mode": "writer's"}
        if not a.auto:
            return {"mode": "fixed", "seconds": a.half_life}
        last = a.tuning[-1] if a.tuning else {}
        return {"mode": "auto", "accesses": None if a.grid is None else a.half_life,
                "candidates": None if a.grid is None else [float(h) for h in a.grid],
                "shadow_hit_ratios": last.get("shadows"), "smoothed": last.get("smoothed"),
                "history": [{"half_life": t["half_life"], "traffic": t["traffic"]} for t in a.tuning[-10:]]}

    def _explain(self, d: str, rows: np.ndarray, snap: dict, decayed: np.ndarray, pin: np.ndarray,
                 thr: dict[str, float]) -> list[Move]:
        src, dst = d.split("->")
        uids = self.engine.catalog.user_ids(snap["iid"][rows].tolist())
        out = []
        h = self.cfg.hysteresis
        for r, uid in zip(rows.tolist(), uids, strict=True):
            c = float(decayed[r])
            if pin[r] == TIER_CODES[dst]:
                why = f"pinned to {dst}"
            elif TIER_CODES[dst] < TIER_CODES[src]:
                why = f"{c:.3g} accesses >= {dst} threshold {thr.get(dst, 0):.3g}"
                if dst == "hot" or src == "cold":
                    why += f" (incumbents get x{1 + h:g})"
            else:
                why = f"{c:.3g} accesses x{1 + h:g} < {src} threshold {thr.get(src, float('inf')):.3g}"
                if src not in thr:
                    why = f"{src} is over its budget"
            out.append(Move(uid, src, dst, c, why))
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "interval_s": self.cfg.interval, "running": self._thread is not None and self._thread.is_alive(),
            "cycles": self.cycles, "last_cycle": self.last, "last_error": self.last_error,
            "moves_total": dict(self.moves_total), "hit_ratio": self.hits.ratios(),
            "interrupted_at_open": self.interrupted, "cold_compactions": self.compactions,
            "half_life": self.half_life_info(), "promoted_on_access": self.promoted,
            "promote_budget": self.admission.info(),
        }


__all__ = ["DIRECTIONS", "AccessStats", "Admission", "admit", "HitWindow", "PolicyEngine", "bytes_per_vector", "directions",
           "limit_moves", "place"]
