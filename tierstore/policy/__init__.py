"""The access-frequency policy: which vectors live in which tier, and why.

The model, one module per step:

* :mod:`.access` -- :class:`AccessStats`: every vector's exponentially decayed access count (query
  threads only enqueue; a numba kernel applies), its grace period after ingest or ``move()``, and
  with ``half_life = "auto"`` the shadow half-lives that choose the decay.
* :mod:`.plan` -- pure placement: the hot budget to the highest counts, warm to the next, with
  hysteresis for incumbents, pins and grace floors (:func:`place`), cut to the per-cycle move
  limit (:func:`limit_moves`), grouped by :data:`DIRECTIONS` (:func:`directions`).
* :mod:`.admission` -- promote on access between cycles (:func:`admit`) within a budget that
  follows what promotions earned (:class:`Admission`).
* :mod:`.hits` -- :class:`HitWindow`: which tier served the last queries.
* :mod:`.checkpoints` -- the per-slot arrays of a saved :class:`AccessStats` (snapshot + log).
The cycle that applies it -- gather the columns, plan, execute the moves, the background and
promote-on-access threads -- is part of the engine (:class:`tierstore.engine.cycle.PolicyEngine`):
this package decides, it never moves anything, and it imports nothing of the engine.
"""

from __future__ import annotations

from ..costs import bytes_per_vector
from .access import SHADOW_MULTS, AccessStats
from .admission import (
    ADMIT_MAX_PER_ACCESS,
    ADMIT_PER_ACCESS,
    ADMIT_YIELD_DOWN,
    ADMIT_YIELD_UP,
    Admission,
    admit,
    admit_budget,
    defended,
)
from .hits import HitWindow
from .plan import COLD, DIRECTIONS, HOT, WARM, directions, limit_moves, place

__all__ = ["ADMIT_MAX_PER_ACCESS", "ADMIT_PER_ACCESS", "ADMIT_YIELD_DOWN", "ADMIT_YIELD_UP", "COLD", "DIRECTIONS",
           "HOT", "SHADOW_MULTS", "WARM", "AccessStats", "Admission", "HitWindow", "admit",
           "admit_budget", "bytes_per_vector", "defended", "directions", "limit_moves", "place"]
