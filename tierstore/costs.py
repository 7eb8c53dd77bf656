"""The cost model: estimated bytes one vector costs in each tier.

These estimates turn ``capacity_bytes`` budgets into vector counts (see
:meth:`tierstore.store.TierStore` capacities and the policy). They are deliberately simple
per-vector formulas, not measurements:

* **hot** (Redis hash + RediSearch HNSW): the FLOAT32 vector is stored twice (once in the hash,
  once in the index: ``8 * dim``), about ``2 * m`` 4-byte links per node on level 0 plus the
  upper levels (about ``1 / m`` as many again), roughly 200 bytes of key and hash overhead, and
  the metadata (also twice: hash field and index).
* **warm** / **cold** (local segments): the float32 vector, its int8 code, ``2 * m`` int32
  links, the LMDB record (vector + entry, ~64 bytes of entry) and the metadata once.

Hot backends that store vectors differently (e.g. vector sets with quantization) adjust the
hot figure in their own ``bytes_per_vector()`` method.

This module has no imports from the rest of the package, so any tier may use it without an
import cycle (the hot tier used to import the policy just for this function).

>>> bytes_per_vector("hot", 128, 16)
1360
>>> bytes_per_vector("warm", 128, 16)
1344
"""

from __future__ import annotations


def bytes_per_vector(tier: str, dim: int, m: int, meta_bytes: float = 0.0) -> int:
    """Estimated bytes one vector costs in ``tier``, for ``capacity_bytes`` budgets.

    hot (Redis): the FLOAT32 vector in the hash and again in the HNSW index, ~2*m 4-byte links
    per node on level 0 (plus upper levels, ~1/m as many), key and hash overhead (~200 B), and
    the metadata. warm (disk): the float32 vector, its int8 code, 2*m int32 links, the LMDB
    record (vector + entry) and the metadata.
    """
    if tier == "hot":
        return int(8 * dim + 8 * m * (1 + 1 / m) + 200 + 2 * meta_bytes)
    return int(4 * dim + dim + 8 * m + 4 * dim + 64 + meta_bytes)


__all__ = ["bytes_per_vector"]
