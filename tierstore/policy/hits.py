"""The hit window: which tier served the results of the last queries (``stats()["policy"]["hit_ratio"]``)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .. import tiers


class HitWindow:
    """Which tier served the results of the last ``size`` queries (a ring of per-query counts)."""

    def __init__(self, size: int) -> None:
        self.rows = np.zeros((size, len(tiers.ORDER)), dtype=np.int32)
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
                    row[tiers.CODES[h.tier]] += 1
                self.top1[self.i] = tiers.CODES[hits[0].tier] if hits else -1
                self.i = (self.i + 1) % size
                self.n = min(self.n + 1, size)

    def ratios(self) -> dict[str, Any]:
        with self._lock:
            rows, top1 = self.rows[: self.n].copy(), self.top1[: self.n].copy()
        total, first = int(rows.sum()), int((top1 >= 0).sum())
        return {
            "queries": self.n,
            "results": {t: (float(rows[:, c].sum() / total) if total else None) for t, c in tiers.CODES.items()},
            "top1": {t: (float((top1 == c).sum() / first) if first else None) for t, c in tiers.CODES.items()},
        }
