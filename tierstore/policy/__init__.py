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
* :mod:`.engine` -- :class:`PolicyEngine`: the cycle (plan, then ``engine.moves.execute``), its
  background thread, and the promote-on-access thread.

Everything is re-exported here: ``tierstore.policy.AccessStats`` etc. keep working.
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
)
from .engine import PolicyEngine
from .hits import HitWindow
from .plan import COLD, DIRECTIONS, HOT, WARM, directions, limit_moves, place

__all__ = ["ADMIT_MAX_PER_ACCESS", "ADMIT_PER_ACCESS", "ADMIT_YIELD_DOWN", "ADMIT_YIELD_UP", "COLD", "DIRECTIONS",
           "HOT", "SHADOW_MULTS", "WARM", "AccessStats", "Admission", "HitWindow", "PolicyEngine", "admit",
           "admit_budget", "bytes_per_vector", "directions", "limit_moves", "place"]
