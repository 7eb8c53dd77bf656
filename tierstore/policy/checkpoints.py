"""The per-slot arrays of :class:`~tierstore.policy.access.AccessStats` as the catalog keeps
them: a snapshot of every slot and log records of the slots changed since (see
``AccessStats.checkpoint``), or one blob from before the log existed.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def read_slots(z: Any, snapshot: bytes | None, log: list[bytes]) -> tuple[np.ndarray, ...]:
    """The per-slot arrays of a one-blob checkpoint (``z`` holds them), or of a snapshot with
    the log records after it replayed in order, at the header's size."""
    if "counts" in z.files:
        counts = z["counts"].copy()
        n = counts.shape[0]
        # (stats from before placement tiers were kept: no grace, the policy decides)
        return (counts, z["last"].copy(),
                z["placed"].copy() if "placed" in z.files else np.full(n, -np.inf, np.float32),
                z["placed_tier"].copy() if "placed_tier" in z.files else np.full(n, -1, np.int8))
    n = int(z["n"])
    out = [np.zeros(n), np.zeros(n, np.float32), np.full(n, -np.inf, np.float32), np.full(n, -1, np.int8)]
    names = ("counts", "last", "placed", "placed_tier")
    for raw in ([snapshot] if snapshot else []) + list(log):
        with np.load(io.BytesIO(raw)) as rec:
            slots = rec["slots"] if "slots" in rec.files else None
            for arr, name in zip(out, names, strict=True):
                if slots is None:
                    m = min(n, rec[name].shape[0])
                    arr[:m] = rec[name][:m]
                else:
                    ok = slots < n
                    arr[slots[ok]] = rec[name][ok]
    return tuple(out)
