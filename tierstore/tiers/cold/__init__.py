"""The cold tier: immutable partitioned segments in S3, a versioned manifest, a local block cache.
See tier.py for the design.

* ``tier``       -- :class:`ColdTier`: opening, connecting (the embedded S3 server or an external
  one), following a writer's segments (read-only), verify, info.
* ``search``     -- the query path: partition routing, ranged GETs through the block cache, the
  compiled scan, the exact rerank; ``fetch`` of stored vectors.
* ``writer``     -- segment writes (journal, upload, manifest, activate/commit/abort), recovery
  after a crash, retiring segments, garbage collection.
* ``base``       -- what those share: the live segments, their partition table, S3 calls.
* ``format``     -- the segment object format (k-means partitions, blocks, footer, checksums).
* ``blockcache`` -- fetched partitions as files on local disk, LRU-bounded.
"""

from __future__ import annotations

from .blockcache import BlockCache
from .tier import ColdTier, parse_url
from .writer import Written

__all__ = ["BlockCache", "ColdTier", "Written", "parse_url"]
