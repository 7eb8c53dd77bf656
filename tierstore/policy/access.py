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
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from .. import kernels
from . import checkpoints

_REBASE_EXP = 600.0  # rebase when weights reach 2**600 (float64 overflows near 2**1024)
_CHUNK_EXP = 400.0  # auto: accesses applied between rebase checks, in shortest half-lives
_APPLY_AT_ENTRIES = 8192  # queued record() calls that trigger an apply from the recording thread


# shadow half-lives of half_life = "auto", as multiples of the accesses per cycle (issue 18)
SHADOW_MULTS = (0.0625, 0.25, 1.0, 4.0, 16.0, 64.0)
_START = 3  # the half-life used until the shadows have been measured (4x a cycle's traffic)
# A shadow is chosen once it leads the current one by this hit ratio on the last cycle (anti-flap).
# The newest cycle counts whole (_SMOOTH = 1): averaging with older cycles (0.5) delayed recovery
# after a popularity shift by 1-3 cycles (benchmarks.policy) and gained nothing on steady traces.
_SWITCH_MARGIN = 0.002
_SMOOTH = 1.0  # weight of the newest cycle in each shadow's (smoothed) hit ratio
_SAMPLE_ROWS = 16384  # shadows run on about this many sampled slots (a miniature simulation)
# log records kept before a checkpoint folds them into a snapshot (a reopen replays them all;
# many tiny ones, e.g. a flush() after every small write, would otherwise pile up by thousands)
_MAX_LOG_RECORDS = 64


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
        self._age0 = 0.0  # half-lives elapsed before the epoch t0 (see _age)
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
        # the flagged slots as they were flagged (the promoter polls often: it must not scan
        # every slot to find a few candidates)
        self._flagged: list[np.ndarray] = []
        self._n_flagged, self._flagged_cap = 0, 1 << 16
        self.admit_thr = np.inf
        # auto: shadow scores (see tune); none until the first cycle has measured the traffic
        self.grid: np.ndarray | None = None  # shadow half-lives in accesses
        self.rate = 1
        self.shadow = np.zeros((0, len(SHADOW_MULTS) + 1))
        self.chosen = _START
        self.smoothed: np.ndarray | None = None
        # each shadow's hot threshold (a decayed score, set at the last cycle: its B-th best
        # sampled score) and the sampled accesses since that scored above it (see tune)
        self.dthr = np.full(len(SHADOW_MULTS), np.inf)
        self.dyn = np.zeros(len(SHADOW_MULTS))
        self.armed = False  # the thresholds were set at a cycle: dyn measures something
        self._cycle_clock = 0.0
        self.tuning: list[dict[str, Any]] = []  # the last cycles' choices (stats()["policy"])
        self._queue: deque[tuple[np.ndarray | list[int], float]] = deque()
        self._lock = threading.Lock()  # guards apply/resize/rebase, never held by record()
        self.total_accesses = 0
        self.latest = -np.inf  # the time stamp of the latest access applied (wall seconds)
        # checkpoints (see checkpoint): the slots changed since the last one, whether the next
        # must write every slot, and the bytes of log records written since the last snapshot
        self._dirty: list[np.ndarray] = []
        self._dirty_n = 0  # slots in _dirty, repeats included
        self._dedupe_at = 0  # _dirty_n at which _dirty is deduplicated next (0: a quarter of the slots)
        self._full = True
        self._log_bytes = 0
        self._log_records = 0
        self.last_checkpoint: dict[str, Any] = {}

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
                self._collect_flagged(slots)
            self.total_accesses += len(slots)
            self._touch(slots)

    def _collect_flagged(self, slots: np.ndarray) -> None:
        """(lock held) Remember which of the just-applied ``slots`` are flagged: O(accesses), so
        :meth:`take_candidates` never scans the whole flag array."""
        ok = (slots >= 0) & (slots < self.cand.shape[0])
        hit = slots[ok][self.cand[slots[ok]]]
        if len(hit):
            self._flagged.append(hit)
            self._n_flagged += len(hit)
            if self._n_flagged > self._flagged_cap:  # nobody took them yet: keep each slot once
                merged = np.unique(np.concatenate(self._flagged))
                self._flagged, self._n_flagged = [merged], len(merged)
                self._flagged_cap = max(self._flagged_cap, 2 * len(merged))

    def _apply_logical(self, slots: np.ndarray, now: float) -> None:
        h_min = self.half_life if self.grid is None else min(self.half_life, float(self.grid[0]))
        # a batch spanning many half-lives would overflow the weights to inf (then NaN scores)
        step = int(max(1.0, _CHUNK_EXP * h_min))
        if len(slots) > step:
            for i in range(0, len(slots), step):
                self._apply_logical(slots[i:i + step], now)
            return
        if (self.clock + len(slots) - self.t0) / h_min > _REBASE_EXP:
            self._rebase(self.clock)
        k = 0 if self.grid is None else len(self.grid)
        inv_hs = (1.0 / self.grid) if self.grid is not None else np.zeros(0)
        block = int(max(1, min(4096, h_min // 64)))
        kernels.access_logical(self.counts, self.last, slots, self.clock - self.t0, 1.0 / self.half_life,
                               np.float32(now - self.wall0), self.shadow, inv_hs, self.rate, block,
                               self.hot, self.admit_thr, self.cand, self.dthr[:k], self.dyn[:k])
        if self.admit_thr < np.inf:
            self._collect_flagged(slots)
        self.clock += len(slots)
        self.total_accesses += len(slots)
        self._touch(slots)

    def _touch(self, slots: np.ndarray) -> None:
        """(lock held) ``slots`` changed: the next checkpoint's log record carries them. Past a
        quarter of all slots a snapshot is cheaper, and the list is dropped."""
        if self._full or not len(slots):
            return
        self._dirty.append(np.asarray(slots, np.int64))
        self._dirty_n += len(slots)
        quarter = self.counts.shape[0] // 4
        if self._dirty_n > max(quarter, self._dedupe_at):
            # repeats of the same slots count once; the next deduplication waits until the list
            # has doubled (amortised O(1) per access, whatever the store's size)
            merged = np.unique(np.concatenate(self._dirty))
            if len(merged) > quarter:
                self._all_changed()
                return
            self._dirty, self._dirty_n, self._dedupe_at = [merged], len(merged), 2 * len(merged)

    def _all_changed(self) -> None:
        """(lock held) Every slot may have changed (a rescale): the next checkpoint is a snapshot."""
        self._full, self._dirty, self._dirty_n, self._dedupe_at = True, [], 0, 0

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
        self._all_changed()
        shift = now - self.t0
        self._age0 += shift / self.half_life
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
            self.counts[slots], self.last[slots], self.cand[slots] = 0.0, 0.0, False
            self.placed[slots], self.placed_tier[slots] = -np.inf, -1
            self._touch(slots)
            rows = slots[slots % self.rate == 0] // self.rate
            rows = rows[rows < len(self.shadow)]
            self.shadow[rows, :-1] = 0.0  # (the accesses since the cycle stay counted, as dyn's hits do)

    def believe_hot(self, up: np.ndarray, down: np.ndarray) -> None:
        """Promote on access moved ``up`` into hot and ``down`` out of it (as far as it knows)."""
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
            self._touch(slots)

    def grace(self, slots: np.ndarray, now: float, grace: float) -> tuple[np.ndarray, np.ndarray]:
        """(floor, hold) of ``slots`` (int8, -1 = none) in their grace period: the tier ingest
        placed a row in (it may rise, not fall below it), the tier a move() put it in (it stays)."""
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

    def scaled(self, accesses: float, now: float) -> float:
        """``accesses`` (decayed, at ``now``) as an epoch-scaled count (capped at 2**1000)."""
        return accesses * 2.0 ** min(((self.clock if self.auto else now) - self.t0) / self.half_life, 1000.0)

    # --- promote on access ------------------------------------------------------------------------

    def _age(self) -> float:
        """(lock held) Half-lives elapsed so far, across rebases and half-life switches."""
        now = self.clock if self.auto else (self.latest if np.isfinite(self.latest) else time.time())
        return self._age0 + (now - self.t0) / self.half_life

    def snapshot(self, slots: np.ndarray) -> tuple[np.ndarray, float]:
        """(decayed counts of ``slots``, the age they hold at): see :meth:`gained`."""
        with self._lock:
            self._apply_locked()
            age = self._age()
            return self.counts[slots] * 2.0 ** (self._age0 - age), age

    def gained(self, slots: np.ndarray, snap: np.ndarray, at: float) -> np.ndarray:
        """Decayed accesses of ``slots`` since :meth:`snapshot` returned (``snap``, ``at``)."""
        return self._gained(slots, snap, at)[0]

    def _gained(self, slots: np.ndarray, snap: np.ndarray, at: float) -> tuple[np.ndarray, float]:
        with self._lock:
            self._apply_locked()
            age = self._age()
            return np.maximum(self.counts[slots] * 2.0 ** (self._age0 - age) - snap * 2.0 ** (at - age), 0.0), age - at

    def gained_accesses(self, slots: np.ndarray, snap: np.ndarray, at: float) -> float:
        """About how many accesses ``slots`` got since :meth:`snapshot`: :meth:`gained`'s sum over
        the mean decay of accesses spread evenly over ``d`` half-lives, ``(1 - 2**-d) / (d ln 2)``
        (a short half-life must not hide what a promotion earned)."""
        g, d = self._gained(slots, snap, at)
        return float(g.sum()) if d < 1e-9 else float(g.sum()) * d * np.log(2.0) / -np.expm1(-d * np.log(2.0))

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
            self._flagged, self._n_flagged = [], 0
            self.admit_thr = float(thr)

    def take_candidates(self) -> np.ndarray:
        """Slots flagged since the last call (cleared), ascending; O(accesses since), not O(slots)."""
        with self._lock:
            self._apply_locked()
            if not self._flagged:
                return np.zeros(0, np.int64)
            out = np.unique(np.concatenate(self._flagged))
            self._flagged, self._n_flagged = [], 0
            out = out[self.cand[out]]  # (forget() or watch() may have cleared some since)
            self.cand[out] = False
            return out[~self.hot[out]]

    # --- auto half-life ---------------------------------------------------------------------------

    def tune(self, slots: np.ndarray, cap_hot: int) -> dict[str, Any] | None:
        """Auto: score each shadow half-life by the hit ratio it would have had since the last
        cycle as a cache that admits on access (the sampled accesses whose slot's shadow score
        was above that shadow's hot threshold: ``dyn``, counted by the kernel), move the policy's
        half-life to the best (by a margin: no flapping), and set the thresholds for the next
        cycle. ``slots``: the live vectors'. Returns the report. (A top set *fixed* at the cycle,
        scored first, is stale within a cycle on session traffic whatever the half-life.)"""
        if not self.auto:
            return None
        with self._lock:
            self._apply_locked()
            traffic = self.clock - self._cycle_clock
            self._cycle_clock = self.clock
            k = len(SHADOW_MULTS)
            if self.grid is None:
                if traffic < 1:
                    return None
                # the first cycle sets the grid: multiples of one cycle's traffic; the counts
                # and the shadows start at this epoch
                self._rebase(self.clock)
                self.grid = np.asarray(SHADOW_MULTS) * max(traffic, 64.0)
                n = max(int(self.counts.shape[0]), int(slots.max()) + 1 if len(slots) else 1)
                self.rate = _sample_rate(n)
                self.shadow = np.zeros((n // self.rate + 1, k + 1))
                self.half_life = float(self.grid[self.chosen])
                info = {"half_life": float(self.half_life), "traffic": traffic, "shadows": None}
                self.armed = False
            else:
                n, resized = max(int(self.counts.shape[0]), int(slots.max()) + 1 if len(slots) else 1), False
                if _sample_rate(n) != self.rate or n // self.rate + 1 > len(self.shadow):
                    # the store outgrew the sample: the shadows start again at its size (once per doubling)
                    self.rate = _sample_rate(n)
                    self.shadow = np.zeros((n // self.rate + 1, k + 1))
                    self.armed, self.smoothed = False, None
                    resized = True
                win = self.shadow[:, k]
                total = float(win.sum())
                info = {"traffic": traffic, "sampled_accesses": total, "shadows": None}
                if self.armed and total > 0:
                    ratios = self.dyn / total
                    self.smoothed = ratios if self.smoothed is None else (
                        _SMOOTH * ratios + (1 - _SMOOTH) * self.smoothed)
                    best = int(np.argmax(self.smoothed))
                    if self.smoothed[best] > self.smoothed[self.chosen] + _SWITCH_MARGIN:
                        self.chosen = best
                    info["shadows"] = {f"{h:g}": round(float(r), 4) for h, r in zip(self.grid, ratios, strict=True)}
                    info["smoothed"] = {f"{h:g}": round(float(r), 4) for h, r in zip(self.grid, self.smoothed, strict=True)}
                win[:] = 0.0
                if not resized:  # (thresholds from all-zero shadows would score nothing)
                    self._set_thresholds(slots, cap_hot)
                if float(self.grid[self.chosen]) != self.half_life:
                    self._rebase(self.clock)  # (decayed to now, then on with the new half-life)
                    self.half_life = float(self.grid[self.chosen])
                info["half_life"] = float(self.half_life)
            info["clock"] = self.clock
            self.tuning = (self.tuning + [info])[-20:]
            return info

    def _set_thresholds(self, slots: np.ndarray, cap_hot: int) -> None:
        """(lock held) Each shadow's hot threshold for the next cycle, a decayed score: its
        ``cap_hot``-th best among the live slots, scaled to the sample."""
        samp = slots[slots % self.rate == 0] // self.rate
        samp = samp[samp < len(self.shadow)]
        b = int(round(cap_hot * len(samp) / max(len(slots), 1)))
        decay = np.exp2(-(self.clock - self.t0) / self.grid)
        for j in range(len(self.grid)):
            if b <= 0:
                self.dthr[j] = np.inf
            elif b >= len(samp):
                self.dthr[j] = 0.0
            else:
                vals = self.shadow[samp, j]
                self.dthr[j] = float(np.partition(vals, len(vals) - b)[len(vals) - b]) * decay[j]
        self.dyn[:] = 0.0
        self.armed = True

    # --- reading ----------------------------------------------------------------------------------

    def decayed(self, slots: np.ndarray, now: float | None = None) -> np.ndarray:
        """Decayed access counts of ``slots`` at time ``now`` (0 for never-seen slots)."""
        now = time.time() if now is None else now
        out = np.zeros(len(slots))
        inside = (slots >= 0) & (slots < self.counts.shape[0])
        out[inside] = self.counts[slots[inside]] * self.scale(now)
        return out

    # --- persistence ------------------------------------------------------------------------------

    def _header(self, **arrays: np.ndarray) -> bytes:
        """(lock held) Everything but the per-slot arrays (unless given): the clocks, the auto
        half-life's state and its shadows (a fixed size: a reopen goes on scoring them)."""
        buf = io.BytesIO()
        state = {"auto": self.auto, "half_life": self.half_life, "clock": self.clock, "wall0": self.wall0,
                 "grid": None if self.grid is None else self.grid.tolist(), "chosen": self.chosen,
                 "cycle_clock": self._cycle_clock, "rate": self.rate,
                 "smoothed": None if self.smoothed is None else self.smoothed.tolist(),
                 "armed": self.armed, "dthr": [None if not np.isfinite(x) else float(x) for x in self.dthr],
                 "dyn": self.dyn.tolist()}
        np.savez(buf, **arrays, n=np.int64(self.counts.shape[0]),
                 t0=np.float64(self.t0), total=np.int64(self.total_accesses),
                 state=np.frombuffer(json.dumps(state).encode(), np.uint8), shadow=self.shadow)
        return buf.getvalue()

    def _slot_arrays(self, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if slots is None:
            return {"counts": self.counts, "last": self.last, "placed": self.placed, "placed_tier": self.placed_tier}
        return {"slots": slots, "counts": self.counts[slots], "last": self.last[slots],
                "placed": self.placed[slots], "placed_tier": self.placed_tier[slots]}

    def dumps(self) -> bytes:
        """Everything in one blob (:meth:`loads` reads it, and what :meth:`checkpoint` writes)."""
        with self._lock:
            self._apply_locked()
            return self._header(**self._slot_arrays())

    def checkpoint(self) -> tuple[bytes, bytes | None, bytes | None]:
        """What a checkpoint persists, in one transaction: (header, snapshot, log record). A log
        record holds the slots changed since the last checkpoint (O(changes): pages of slots would
        all be dirty); a ``snapshot`` every slot (the log dropped) when this process wrote none,
        all were rescaled, or the records add up to half a snapshot or ``_MAX_LOG_RECORDS``.
        If the write fails, call :meth:`save_failed`. Callers serialise checkpoint + write."""
        with self._lock:
            self._apply_locked()
            n = self.counts.shape[0]
            if self._full or self._log_bytes * 2 > n * 17 or self._log_records >= _MAX_LOG_RECORDS:
                buf = io.BytesIO()  # (17 B per slot in a snapshot)
                np.savez(buf, **self._slot_arrays())
                self._full, self._dirty, self._dirty_n, self._dedupe_at = False, [], 0, 0
                self._log_bytes = self._log_records = 0
                self.last_checkpoint = {"kind": "snapshot", "bytes": buf.tell(), "slots": n}
                return self._header(), buf.getvalue(), None
            slots = np.unique(np.concatenate(self._dirty)) if self._dirty else np.zeros(0, np.int64)
            self._dirty, self._dirty_n, self._dedupe_at = [], 0, 0
            if not len(slots):
                self.last_checkpoint = {"kind": "header", "bytes": 0, "slots": 0}
                return self._header(), None, None
            buf = io.BytesIO()
            np.savez(buf, **self._slot_arrays(slots))
            self._log_bytes += buf.tell()
            self._log_records += 1
            self.last_checkpoint = {"kind": "log", "bytes": buf.tell(), "slots": len(slots)}
            return self._header(), None, buf.getvalue()

    def save_failed(self) -> None:
        """The last checkpoint did not reach the catalog: the next one writes every slot."""
        with self._lock:
            self._all_changed()

    @classmethod
    def restore(cls, saved: tuple[bytes | None, bytes | None, list[bytes]], half_life: float | str,
                size: int = 0) -> AccessStats:
        """The statistics a catalog holds (``Catalog.load_access()``: header, snapshot, log
        records), or empty ones of ``size`` slots when it holds none."""
        header, snapshot, log = saved
        if not header:
            return cls(half_life, size=size)
        return cls.loads(header, half_life, snapshot=snapshot, log=log)

    @classmethod
    def loads(cls, raw: bytes, half_life: float | str, snapshot: bytes | None = None,
              log: list[bytes] | tuple[bytes, ...] = ()) -> AccessStats:
        with np.load(io.BytesIO(raw)) as z:
            has_state = "state" in z.files
            state = json.loads(z["state"].tobytes()) if has_state else {"auto": False, "half_life": 3600.0}
            t0 = float(z["t0"])
            st = cls(half_life, t0=state.get("wall0", t0), size=0)
            st.counts, st.last, st.placed, st.placed_tier = checkpoints.read_slots(z, snapshot, list(log))
            n = st.counts.shape[0]
            st.hot, st.cand = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
            st.total_accesses = int(z["total"])
            z_shadow = z["shadow"].copy() if "shadow" in z.files else None
            # what the catalog holds is what is in memory: the next checkpoint logs changes only
            # (unless the shadows or the counts are rescaled below, or it was one blob)
            st._full = "counts" in z.files or snapshot is None
            st._log_bytes, st._log_records = sum(len(r) for r in log), len(log)
        was_auto = bool(state.get("auto"))
        if st.auto and was_auto:
            st.t0, st.clock, st.half_life = t0, state["clock"], state["half_life"]
            st.chosen, st._cycle_clock = state["chosen"], state["cycle_clock"]
            if state["grid"] is not None and len(state["grid"]) != len(SHADOW_MULTS):
                # saved by a version with other shadow half-lives: the next cycle sets the grid
                # again, as the first one did (the counts go on with the saved half-life)
                st.chosen = _START
            elif state["grid"] is not None:
                st.grid = np.asarray(state["grid"])
                st.rate = int(state.get("rate", _sample_rate(n)))
                shadow = z_shadow
                if shadow is not None and shadow.shape[1] == len(SHADOW_MULTS) + 1 and shadow.shape[0] > 0:
                    # the shadows go on where they were (same epoch t0 as the counts)
                    st.shadow = shadow
                    if state.get("armed") and len(state.get("dthr") or ()) == len(SHADOW_MULTS):
                        st.dthr = np.array([np.inf if x is None else x for x in state["dthr"]], np.float64)
                        st.dyn = np.asarray(state["dyn"], np.float64)
                        st.armed = True
                        if state.get("smoothed") is not None:
                            st.smoothed = np.asarray(state["smoothed"])
                else:  # (a checkpoint from before the shadows were kept: they start again from here)
                    st.rate = _sample_rate(n)
                    st.shadow = np.zeros((n // st.rate + 1, len(SHADOW_MULTS) + 1))
                    st._rebase(st.clock)
        elif not st.auto and not was_auto:
            st.t0 = t0
        else:  # the mode changed: the decayed counts, as plain counts at the new epoch
            old_now = state["clock"] if was_auto else time.time()
            st.counts *= 2.0 ** (-(old_now - t0) / float(state.get("half_life", 3600.0)))
            st.t0 = 0.0 if st.auto else time.time()
            st._all_changed()
        return st

