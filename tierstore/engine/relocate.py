"""The one relocation protocol: copy -> flip the catalog entry -> retire the old copy.

Every change of where a vector lives goes through :func:`relocate`: an upsert (new vectors or new
versions), an explicit move, a policy batch, a cold compaction. The crash-critical sequence
exists only here; each tier contributes the same steps through a *copy stage*
(``tier.stage(origin, catalog)``, the protocol in :mod:`tierstore.tiers.protocol`):

1. ``copy()``   -- the new home holds the rows before the catalog names them (a query whose
   snapshot predates the flip drops them by the catalog check); returns each row's location.
2. ``commit(txn)`` -- inside the catalog's flip transaction (a cold segment's manifest entry).
3. ``abort()``  -- the flip failed: undo the copy (or leave it to the next open's repair).
4. ``after()``  -- the flip is durable: finish (seal a full warm segment; return the Redis
   error of a write that is durable anyway, for the caller to raise).

What makes a crash at any point harmless, per target (the next open needs only the catalog):

* hot: a staged Redis copy the flip never named carries a version the catalog does not have (or
  a pending mark, for moves: marked before the copy), so reconciliation rewrites or removes it.
* warm: staged rows live in the growing segment, which the next open rebuilds from the catalog
  (rows the catalog does not name are not rebuilt).
* cold: the segment is journaled by the cold tier, which rolls back an unlisted one at connect.

The old copy outlives every query that began before the flip (the reader gate): Redis keys and
warm rows are removed by :meth:`Engine.retire`; a cold row is simply dead (compaction reclaims it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import tiers
from ..catalog import TIER_COLD, TIER_HOT, Entry
from ..errors import TierUnavailableError

log = logging.getLogger("tierstore")

@dataclass
class Batch:
    """Rows to place: their ids, current entries (None: new) and content. ``metas`` are the
    cleaned metadata dicts, ``meta_raw`` their catalog encoding."""

    iids: list[int]
    uids: list[str | int]
    old: list[Entry | None]
    vecs: np.ndarray
    metas: list[dict]
    meta_raw: list[bytes]

    @classmethod
    def of_entries(cls, entries: Sequence[Entry], vecs: np.ndarray) -> Batch:
        """A move of existing entries, with their vectors (from LMDB or S3)."""
        return cls([e.iid for e in entries], [e.uid for e in entries], list(entries), vecs,
                   [e.metadata for e in entries], [e.meta for e in entries])

    def __len__(self) -> int:
        return len(self.iids)


@dataclass
class Outcome:
    slots: list[int]  # the policy slots of the rows (new rows get one)
    error: TierUnavailableError | None = None  # a durable write whose hot copy failed


def relocate(engine: Any, b: Batch, target: str, *, origin: str, background: Executor | None = None,
             new_version: bool = True, also: Callable[[Any], None] | None = None,
             keep_queued: bool = False) -> Outcome:
    """Place ``b``'s rows in ``target``: copy, flip their catalog entries (one transaction),
    retire the old copies after the reader grace. The caller holds ``engine.write_lock`` and has
    validated the batch (capacity included).

    ``origin``: "upsert", "explicit" (store.move), "policy" or "compact" (metrics, the cold
    segment's journal op, the Redis failure mode). ``new_version=False`` keeps the versions (a
    compaction changes a row's place, not its content). ``also(txn)`` runs inside the flip
    (compaction drops the old segments' catalog records there). ``background``: where Redis
    removals of old copies run (the policy overlaps them with its next batch). ``keep_queued``:
    rows queued for a deferred demotion stay queued (a metadata update re-places a row in its
    own tier; it does not decide where the row goes next)."""
    cat, hot = engine.catalog, engine.hot
    code = tiers.BY_NAME[target].code
    durable_in_catalog = tiers.BY_NAME[target].in_catalog
    versions = [1 if e is None else e.version + int(new_version) for e in b.old]
    leaving_hot = [e.iid for e in b.old if e is not None and e.tier == TIER_HOT] if target != "hot" else []
    arriving_hot = b.iids if target == "hot" else []
    engine.await_unlinks(arriving_hot)  # a removal queued for an older copy must not hit the new one
    # Redis keeps the old copies until the reader grace, and new copies written before the flip
    # are not "extra" to a concurrent reconciliation.
    hot.protect(leaving_hot + arriving_hot)
    stage = engine.tiers[target].stage(origin, engine.catalog)
    if engine.placement is not None:
        engine.placement.expect()  # stale until put() below: an error in between makes the next cycle rebuild it
    try:
        places = stage.copy(b, versions)
        synced = hot.take_synced()  # never take hot's lock inside a catalog write
        with cat.write() as txn:
            # (a compaction changes no content: it notes nothing for the repeat cache, whose
            # remembered queries then end at the lower generation put_entry moves on)
            change = cat.lower_change(txn) if origin != "compact" else None
            cat.clear_pending(synced, txn)
            new_slots = iter(cat.alloc_slots(txn, sum(e is None for e in b.old)))
            slots = []
            for i, (iid, e) in enumerate(zip(b.iids, b.old, strict=True)):
                slot = next(new_slots) if e is None else e.slot
                slots.append(slot)
                if not durable_in_catalog:  # cold vectors are durable in S3, not in LMDB
                    if e is None or e.tier != TIER_COLD:
                        cat.delete_vector(txn, iid)
                elif e is None or origin == "upsert" or e.tier == TIER_COLD:  # new bytes, or back from S3
                    cat.put_vector(txn, iid, b.vecs[i].tobytes())
                seg, pos = places[i]
                cat.put_entry(txn, Entry(iid, code, 0 if e is None else e.flags, slot, seg, pos, versions[i],
                                         b.uids[i], b.meta_raw[i]))
            # Redis work that must survive a crash: rows not yet indexed, old copies to remove
            cat.add_pending(txn, stage.pending() + leaving_hot)
            if not keep_queued:
                cat.unqueue_cold(txn, b.iids)  # placed explicitly: no longer waiting for demotion
            stage.commit(txn)
            if also is not None:
                also(txn)
    except BaseException:
        try:
            stage.abort()
        finally:
            hot.unprotect(leaving_hot + arriving_hot)
        raise
    # Old versions that lived elsewhere (another tier, another warm row) go after the reader
    # grace, whatever else fails now that the flip is durable; a hot -> hot update overwrote its
    # Redis copy in place.
    displaced = [e for e in b.old if e is not None and (e.tier != TIER_HOT or target != "hot")]
    try:
        hot.unprotect(arriving_hot)
        if engine.placement is not None:  # the policy's columns follow the flip
            engine.placement.put(slots, b.iids, code, [0 if e is None else e.flags for e in b.old], versions, b.metas)
        if change is not None and target != "hot":
            engine.note_lower(change, b.vecs)
        if origin in ("explicit", "policy") and engine.metrics is not None:
            engine.metrics.moved([e for e in b.old if e is not None], target, origin)
    finally:
        if displaced:
            engine.retire(displaced, background)
    return Outcome(slots, stage.after())


__all__ = ["Batch", "Outcome", "relocate"]
