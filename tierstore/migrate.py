"""Moves between tiers: copy -> flip the catalog entry (new version) -> remove the old copy.

hot <-> warm moves need no separate journal: every step is recoverable from the catalog alone.

* hot -> warm: the vector is added to the warm growing segment (rebuilt from the catalog after
  a crash), the entry flips to warm with a pending mark for Redis in the same transaction, and
  Redis loses its copy after the reader grace. A crash after the flip leaves the pending mark,
  so the next verification removes the stale Redis key.
* warm -> hot: the Redis copy is written first (protected from reconciliation while the move
  runs), then the entry flips; the old warm row is masked after the reader grace. A crash before
  the flip leaves a Redis key the catalog does not name, which verification removes.

A query running meanwhile sees each vector exactly once: it reads the catalog before searching,
and the old copy outlives every query that began before the flip (query.ReaderGate).

>>> store.move(["doc-1", "doc-2"], "warm")                              # doctest: +SKIP
MoveReport(tier='warm', moved=2, already=0, missing=0, seconds=0.01)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .catalog import TIER_CODES, TIER_HOT, TIER_WARM, Entry
from .errors import CapacityError
from .results import MoveReport
from .warm import GROWING

if TYPE_CHECKING:
    from .store import TierStore

_BATCH = 5_000


def move(store: TierStore, ids: list[str | int], tier: str) -> MoveReport:
    target = store._target_tier(tier)
    report = MoveReport(target)
    t0 = time.perf_counter()
    cat = store.catalog
    with store._op(), store._write_lock:
        todo: list[Entry] = []
        with cat.read() as txn:
            for uid in ids:
                e = cat.entry(txn, cat.iid(uid))
                if e is None or e.uid != uid:
                    report.missing += 1
                elif e.tier == TIER_CODES[target]:
                    report.already += 1
                else:
                    todo.append(e)
            cap = getattr(store.config, target).capacity
            have = cat.count(TIER_CODES[target], txn)
        if have + len(todo) > cap:
            raise CapacityError(
                f"{target} tier is full: it holds {have} of {target}.capacity = {cap} vectors; moving "
                f"{len(todo)} more does not fit; nothing was moved")
        for s in range(0, len(todo), _BATCH):
            batch = todo[s : s + _BATCH]
            report.moved += _to_warm(store, batch) if target == "warm" else _to_hot(store, batch)
    report.seconds = time.perf_counter() - t0
    return report


def _load(store: TierStore, batch: list[Entry]) -> tuple[np.ndarray, list[dict]]:
    with store.catalog.read() as txn:
        vecs = np.stack([store.catalog.vector(txn, e.iid) for e in batch])
    return vecs, [e.metadata for e in batch]


def _to_warm(store: TierStore, batch: list[Entry]) -> int:
    """hot -> warm (the only other tier there is until the cold tier lands)."""
    vecs, metas = _load(store, batch)
    iids = [e.iid for e in batch]
    labels = store.warm.reserve(len(batch))
    store.warm.add(labels, iids, vecs, metas)  # copy
    store.hot.protect(iids)  # reconciliation must not unlink them before the reader grace
    try:
        synced = store.hot.take_synced()  # consumed before new marks: a late clear must not hit them
        with store.catalog.write() as txn:  # flip (+ Redis removal becomes pending work)
            store.catalog.clear_pending(synced, txn)
            for e, lab in zip(batch, labels, strict=True):
                store.catalog.put_entry(txn, e._replace(tier=TIER_WARM, seg=GROWING, pos=lab, version=e.version + 1))
            store.catalog.add_pending(txn, iids)
    except BaseException:
        store.warm.discard(labels)
        store.hot.unprotect(iids)
        raise
    store._remove_old(batch)  # remove, after the reader grace
    if store.warm.needs_seal():
        store.warm.seal()
    return len(batch)


def _to_hot(store: TierStore, batch: list[Entry]) -> int:
    """warm -> hot."""
    vecs, metas = _load(store, batch)
    iids = [e.iid for e in batch]
    store.hot.protect(iids)
    try:
        store.hot.write(iids, vecs, metas)  # copy (raises TierUnavailableError: nothing moved)
        with store.catalog.write() as txn:  # flip
            for e in batch:
                store.catalog.put_entry(txn, e._replace(tier=TIER_HOT, seg=0, pos=0, version=e.version + 1))
    finally:
        store.hot.unprotect(iids)
    store._remove_old(batch)  # mask the old warm rows after the reader grace
    return len(batch)


__all__ = ["move"]
