"""The warm tier: sealed HNSW segments on local disk (memory-mapped, searched by numba kernels)
plus one growing in-RAM segment. See tier.py for the design.

* ``tier``    -- :class:`WarmTier`: the tier interface (search, reserve/add/kill/revive, seal,
  compact, verify/repair, refresh of a read-only process).
* ``growing`` -- the growing segment (:class:`Growing`, hnswlib in RAM) and a read-only process's
  exact mirror of it (:class:`Mirror`); ``GROWING`` is the segment id of its rows.
* ``sealed``  -- a sealed segment with its alive and filter masks (:class:`Sealed`), and the
  catalog-backed stand-in for a damaged one (:class:`StandIn`).
* ``segment`` -- the on-disk segment format: writing (crash-safe, checksummed) and the
  memory-mapped :class:`Segment` the kernels search.
"""

from __future__ import annotations

from .growing import GROWING
from .tier import WarmTier

__all__ = ["GROWING", "WarmTier"]
