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
import threading
import time
from collections import deque

import numpy as np

from . import kernels

_REBASE_EXP = 600.0  # rebase when weights reach 2**600 (float64 overflows near 2**1024)
_APPLY_AT = 1 << 16  # queued slots that trigger an apply from the recording thread


class AccessStats:
    """Decayed access counts and last-access times for every slot."""

    def __init__(self, half_life: float, t0: float | None = None, size: int = 0) -> None:
        self.half_life = float(half_life)
        self.t0 = time.time() if t0 is None else float(t0)
        self.counts = np.zeros(max(size, 1024), dtype=np.float64)
        self.last = np.zeros(self.counts.shape[0], dtype=np.float32)  # seconds since t0
        self._queue: deque[tuple[np.ndarray | list[int], float]] = deque()
        self._queued = 0
        self._lock = threading.Lock()  # guards apply/resize/rebase, never held by record()
        self.total_accesses = 0

    # --- recording (query threads) ----------------------------------------------------------------

    def record(self, slots: np.ndarray | list[int], now: float | None = None) -> None:
        """Queue accesses to ``slots`` (converted to an array only when applied)."""
        if not len(slots):
            return
        self._queue.append((slots, time.time() if now is None else now))
        self._queued += len(slots)
        if self._queued >= _APPLY_AT and self._lock.acquire(blocking=False):
            try:
                self._apply_locked()
            finally:
                self._lock.release()

    # --- applying ---------------------------------------------------------------------------------

    def apply(self) -> None:
        with self._lock:
            self._apply_locked()

    def _apply_locked(self) -> None:
        while self._queue:
            slots, now = self._queue.popleft()
            self._queued -= len(slots)
            slots = np.asarray(slots, dtype=np.int64)
            self._ensure(int(slots.max()) + 1)
            exp = (now - self.t0) / self.half_life
            if exp > _REBASE_EXP:
                self._rebase(now)
                exp = 0.0
            kernels.access_add(self.counts, self.last, slots, 2.0**exp, np.float32(now - self.t0))
            self.total_accesses += len(slots)

    def _ensure(self, n: int) -> None:
        if n > self.counts.shape[0]:
            size = max(n, 2 * self.counts.shape[0])
            self.counts = np.concatenate([self.counts, np.zeros(size - self.counts.shape[0])])
            self.last = np.concatenate([self.last, np.zeros(size - self.last.shape[0], np.float32)])

    def _rebase(self, now: float) -> None:
        shift = now - self.t0
        kernels.scale_inplace(self.counts, 2.0 ** (-shift / self.half_life))
        self.last -= np.float32(shift)
        self.t0 = now

    def forget(self, slots: np.ndarray) -> None:
        """Reset slots that were freed (deleted vectors), so a reused slot starts cold."""
        with self._lock:
            self._apply_locked()
            slots = slots[(slots >= 0) & (slots < self.counts.shape[0])]
            self.counts[slots] = 0.0
            self.last[slots] = 0.0

    # --- reading ----------------------------------------------------------------------------------

    def decayed(self, slots: np.ndarray, now: float | None = None) -> np.ndarray:
        """Decayed access counts of ``slots`` at time ``now`` (0 for never-seen slots)."""
        now = time.time() if now is None else now
        out = np.zeros(len(slots))
        inside = (slots >= 0) & (slots < self.counts.shape[0])
        out[inside] = self.counts[slots[inside]] * 2.0 ** (-(now - self.t0) / self.half_life)
        return out

    # --- persistence ------------------------------------------------------------------------------

    def dumps(self) -> bytes:
        with self._lock:
            self._apply_locked()
            buf = io.BytesIO()
            np.savez(buf, counts=self.counts, last=self.last, t0=np.float64(self.t0),
                     total=np.int64(self.total_accesses))
            return buf.getvalue()

    @classmethod
    def loads(cls, raw: bytes, half_life: float) -> AccessStats:
        with np.load(io.BytesIO(raw)) as z:
            st = cls(half_life, t0=float(z["t0"]), size=0)
            st.counts, st.last = z["counts"].copy(), z["last"].copy()
            st.total_accesses = int(z["total"])
        return st


__all__ = ["AccessStats"]
