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
def scale_inplace(counts: np.ndarray, factor: float) -> None:
    """Rebase epoch-scaled counts: counts *= factor."""
    for i in range(counts.shape[0]):
        counts[i] *= factor


__all__ = ["access_add", "scale_inplace"]
