"""The one relocation protocol: copy -> flip the catalog entry -> retire the old copy.

Every change of where a vector lives goes through :func:`relocate`: an upsert (new vectors or new
versions), an explicit move, a policy batch, a cold compaction. The crash-critical sequence
exists only here; each tier contributes the same four steps through a *copy stage*:

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

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import tiers
from ..catalog import TIER_COLD, TIER_HOT, Entry
from ..errors import TierUnavailableError
from ..tiers.warm import GROWING

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
    extra: dict[str, Any] = field(default_factory=dict)


class _HotCopy:
    """Copy into Redis. ``durable_first`` (upsert): a Redis failure does not stop the write --
    the rows are committed with pending marks and indexed when Redis is back. Otherwise (a move)
    the pending marks are written before the copy, and a Redis failure moves nothing."""

    def __init__(self, engine: Any, durable_first: bool) -> None:
        self.e = engine
        self.durable_first = durable_first
        self.error: TierUnavailableError | None = None
        self.copied = False
        self.iids: list[int] = []

    def copy(self, b: Batch, versions: list[int]) -> list[tuple[int, int]]:
        hot, cat = self.e.hot, self.e.catalog
        self.iids = b.iids
        if not self.durable_first:
            with cat.write() as txn:
                cat.add_pending(txn, b.iids)
        try:
            hot.write(b.iids, b.vecs, b.metas, versions)
            self.copied = True
        except TierUnavailableError as exc:
            if not self.durable_first:
                raise  # nothing moved (the pending marks make the next sync put Redis right)
            self.error = exc  # still commit: durable now, indexed when Redis is back
        return [(0, 0)] * len(b)

    def pending(self) -> list[int]:
        """Rows the flip must leave pending: not in Redis (it failed, or the catalog stands in
        for it while it loads)."""
        return self.iids if self.error is not None or self.e.hot.standby_reason is not None else []

    def commit(self, txn: Any) -> None:
        pass

    def abort(self) -> None:
        if self.copied:  # the copy reached Redis but its flip failed: put back what the catalog holds
            with contextlib.suppress(Exception):
                self.e.hot.sync(self.iids)

    def after(self) -> TierUnavailableError | None:
        if self.error is None:
            return None
        err = TierUnavailableError(
            f"{self.error}. The write IS durable in the catalog and will be indexed when Redis is "
            "back (retrying it is safe)", tier="hot", durable=True)
        err.__cause__ = self.error
        return err


class _WarmCopy:
    """Copy into the warm growing segment; a vector whose dead warm row still holds exactly it
    (it was warm before) is revived in place instead."""

    def __init__(self, engine: Any) -> None:
        self.e = engine
        self.labels: list[int] = []
        self.revived: list[tuple[int, int] | None] = []

    def copy(self, b: Batch, versions: list[int]) -> list[tuple[int, int]]:
        warm = self.e.warm
        self.revived = warm.revive(b.iids, b.vecs, b.meta_raw)
        fresh = [i for i, loc in enumerate(self.revived) if loc is None]
        self.labels = warm.reserve(len(fresh))
        if fresh:
            warm.add(self.labels, [b.iids[i] for i in fresh], b.vecs[fresh], [b.metas[i] for i in fresh])
        new = iter(self.labels)
        return [loc if loc is not None else (GROWING, next(new)) for loc in self.revived]

    def pending(self) -> list[int]:
        return []

    def commit(self, txn: Any) -> None:
        pass

    def abort(self) -> None:
        self.e.warm.discard(self.labels)
        self.e.warm.unrevive(self.revived)

    def after(self) -> None:
        if self.e.warm.needs_seal():
            self.e.warm.seal()
        return None


class _ColdCopy:
    """Copy into one new S3 segment (and its manifest): the vectors leave LMDB in the flip."""

    def __init__(self, engine: Any, op: str) -> None:
        self.e = engine
        self.op = op
        self.written: Any = None

    def copy(self, b: Batch, versions: list[int]) -> list[tuple[int, int]]:
        cold = self.e.cold
        self.written = cold.write(np.asarray(b.iids, np.uint64), b.vecs, b.metas, b.uids, op=self.op)
        cold.activate(self.written)
        return [(self.written.seg.sid, row) for row in self.written.rows.tolist()]

    def pending(self) -> list[int]:
        return []

    def commit(self, txn: Any) -> None:
        self.e.cold.commit(txn, self.written)

    def abort(self) -> None:
        if self.written is None:
            return
        try:
            self.e.cold.abort(self.written)
        except Exception as exc:  # keep the original error; the next open repairs the manifest
            log.warning("cold tier: abort of segment %d failed: %s", self.written.seg.sid, exc)

    def after(self) -> None:
        return None


def _stage(engine: Any, target: str, origin: str) -> Any:
    if target == "hot":
        return _HotCopy(engine, durable_first=origin == "upsert")
    if target == "warm":
        return _WarmCopy(engine)
    return _ColdCopy(engine, op={"upsert": "ingest", "compact": "compact"}.get(origin, "move"))


def relocate(engine: Any, b: Batch, target: str, *, origin: str, background: Executor | None = None,
             new_version: bool = True, also: Callable[[Any], None] | None = None) -> Outcome:
    """Place ``b``'s rows in ``target``: copy, flip their catalog entries (one transaction),
    retire the old copies after the reader grace. The caller holds ``engine.write_lock`` and has
    validated the batch (capacity included).

    ``origin``: "upsert", "explicit" (store.move), "policy" or "compact" (metrics, the cold
    segment's journal op, the Redis failure mode). ``new_version=False`` keeps the versions (a
    compaction changes a row's place, not its content). ``also(txn)`` runs inside the flip
    (compaction drops the old segments' catalog records there). ``background``: where Redis
    removals of old copies run (the policy overlaps them with its next batch)."""
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
    stage = _stage(engine, target, origin)
    try:
        places = stage.copy(b, versions)
        synced = hot.take_synced()  # never take hot's lock inside a catalog write
        with cat.write() as txn:
            # (a compaction changes no content below hot: remembered queries stay valid)
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
            cat.unqueue_cold(txn, b.iids)  # placed explicitly: no longer waiting for demotion
            stage.commit(txn)
            if also is not None:
                also(txn)
    except BaseException:
        stage.abort()
        hot.unprotect(leaving_hot + arriving_hot)
        raise
    hot.unprotect(arriving_hot)
    if change is not None and target != "hot":
        engine.note_lower(change, b.vecs)
    if origin in ("explicit", "policy") and engine.metrics is not None:
        engine.metrics.moved([e for e in b.old if e is not None], target, origin)
    # Old versions that lived elsewhere (another tier, another warm row) go after the reader
    # grace; a hot -> hot update overwrote its Redis copy in place.
    displaced = [e for e in b.old if e is not None and (e.tier != TIER_HOT or target != "hot")]
    if displaced:
        engine.retire(displaced, background)
    return Outcome(slots, stage.after())


__all__ = ["Batch", "Outcome", "relocate"]
