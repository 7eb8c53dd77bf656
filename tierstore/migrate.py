"""Moves between tiers: copy -> flip the catalog entry (new version) -> remove the old copy.

Moves need no journal of their own beyond what the copy step leaves: every step is recoverable
from the catalog alone (writes of cold segments are journaled by cold.py, which rolls back an
interrupted one at the next connect).

* hot -> warm: the vector is added to the warm growing segment (rebuilt from the catalog after
  a crash), the entry flips to warm with a pending mark for Redis in the same transaction, and
  Redis loses its copy after the reader grace. A crash after the flip leaves the pending mark,
  so the next verification removes the stale Redis key.
* warm -> hot: the Redis copy is written first (protected from reconciliation while the move
  runs), then the entry flips; the old warm row is masked after the reader grace. A crash before
  the flip leaves a Redis key the catalog does not name, which verification removes.

* hot/warm -> cold: a new S3 segment and manifest first, then the flip (the LMDB vector is
  deleted in the same transaction), then the old copies go after the reader grace.
* cold -> hot/warm: the vector is read from S3 and copied in; the flip writes it to LMDB again;
  the old cold row is simply dead (segments are immutable; compaction reclaims it).

A query running meanwhile sees each vector exactly once: it reads the catalog before searching,
and the old copy outlives every query that began before the flip (query.ReaderGate).

>>> store.move(["doc-1", "doc-2"], "warm")                              # doctest: +SKIP
MoveReport(tier='warm', moved=2, already=0, missing=0, seconds=0.01)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from .catalog import FLAG_PINNED, TIER_CODES, TIER_COLD, TIER_HOT, TIER_WARM, Entry
from .errors import CapacityError, TierStoreError, TierUnavailableError
from .results import MoveReport
from .warm import GROWING

if TYPE_CHECKING:
    from .store import TierStore

log = logging.getLogger("tierstore")

_BATCH = 5_000


def move(store: TierStore, ids: list[str | int], tier: str, *, defer: bool = False) -> MoveReport:
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
            have = cat.count(TIER_CODES[target], txn)
        if target == "cold":
            if defer:
                cat.queue_cold([e.iid for e in todo])
                report.queued = len(todo)
                if cat.cold_queue_len() >= store.config.cold.segment_size:
                    report.moved += flush_cold_queue(store)
            else:
                size = store.config.cold.segment_size
                for s in range(0, len(todo), size):
                    report.moved += _to_cold(store, todo[s : s + size])
        else:
            cap = store.capacity(target) if target == "hot" or store.cold is not None else 2**62
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
    """The vectors of ``batch``: from LMDB, or from S3 for cold entries."""
    cold = [e for e in batch if e.tier == TIER_COLD]
    fetched = store.cold.fetch(cold) if cold else {}
    with store.catalog.read() as txn:
        vecs = np.stack([fetched[e.iid] if e.tier == TIER_COLD else store.catalog.vector(txn, e.iid) for e in batch])
    return vecs, [e.metadata for e in batch]


def _to_warm(store: TierStore, batch: list[Entry], background: Executor | None = None) -> int:
    """hot or cold -> warm. A vector whose dead warm row still holds it (it was warm before) is
    revived in place; the others are inserted into the growing segment's graph."""
    vecs, metas = _load(store, batch)
    iids = [e.iid for e in batch]
    hot_iids = [e.iid for e in batch if e.tier == TIER_HOT]
    locs: list[tuple[int, int] | None] = [None] * len(batch)
    labels: list[int] = []
    try:
        locs = store.warm.revive(iids, vecs, [e.meta for e in batch])
        fresh = [i for i, loc in enumerate(locs) if loc is None]
        labels = store.warm.reserve(len(fresh))
        if fresh:  # copy
            store.warm.add(labels, [iids[i] for i in fresh], vecs[fresh], [metas[i] for i in fresh])
    except BaseException:
        store.warm.discard(labels)
        store.warm.unrevive(locs)
        raise
    new_labels = iter(labels)
    places = [loc if loc is not None else (GROWING, next(new_labels)) for loc in locs]
    store.hot.protect(hot_iids)  # reconciliation must not unlink them before the reader grace
    try:
        synced = store.hot.take_synced()  # consumed before new marks: a late clear must not hit them
        with store.catalog.write() as txn:  # flip (+ Redis removal becomes pending work)
            change = store.catalog.lower_change(txn)
            store.catalog.clear_pending(synced, txn)
            for e, (seg, pos), v in zip(batch, places, vecs, strict=True):
                if e.tier == TIER_COLD:  # promoted from S3: durable in LMDB again
                    store.catalog.put_vector(txn, e.iid, v.tobytes())
                store.catalog.put_entry(txn, e._replace(tier=TIER_WARM, seg=seg, pos=pos, version=e.version + 1))
            store.catalog.add_pending(txn, hot_iids)
            store.catalog.unqueue_cold(txn, iids)
    except BaseException:
        store.warm.discard(labels)
        store.warm.unrevive(locs)
        store.hot.unprotect(hot_iids)
        raise
    store._note_lower(change, vecs)
    store.metrics.moved(batch, "warm", "explicit" if background is None else "policy")
    store._remove_old(batch, background)  # remove, after the reader grace
    if store.warm.needs_seal():
        store.warm.seal()
    return len(batch)


def _to_hot(store: TierStore, batch: list[Entry], background: Executor | None = None) -> int:
    """warm or cold -> hot."""
    vecs, metas = _load(store, batch)
    iids = [e.iid for e in batch]
    store._await_unlinks(iids)  # a removal still queued for an older copy must not hit the new one
    store.hot.protect(iids)
    try:
        # Pending marks first: a crash between the copy and the flip leaves Redis keys the
        # catalog does not name, and the next open reconciles exactly these (removes them).
        with store.catalog.write() as txn:
            store.catalog.add_pending(txn, iids)
        store.hot.write(iids, vecs, metas, [e.version + 1 for e in batch])  # copy (raises TierUnavailableError: nothing moved)
        synced = store.hot.take_synced()
        with store.catalog.write() as txn:  # flip
            store.catalog.clear_pending(synced, txn)
            for e, v in zip(batch, vecs, strict=True):
                if e.tier == TIER_COLD:
                    store.catalog.put_vector(txn, e.iid, v.tobytes())
                store.catalog.put_entry(txn, e._replace(tier=TIER_HOT, seg=0, pos=0, version=e.version + 1))
            store.catalog.unqueue_cold(txn, iids)
    finally:
        store.hot.unprotect(iids)
    store.metrics.moved(batch, "hot", "explicit" if background is None else "policy")
    store._remove_old(batch, background)  # mask the old warm rows after the reader grace
    return len(batch)


def _to_cold(store: TierStore, batch: list[Entry], background: Executor | None = None) -> int:
    """hot or warm -> cold: one new segment. The vectors leave LMDB (and Redis / the warm
    segments, after the reader grace) only once the segment and its manifest are in S3."""
    if not batch:
        return 0
    vecs, metas = _load(store, batch)
    iids = [e.iid for e in batch]
    hot_iids = [e.iid for e in batch if e.tier == TIER_HOT]
    w = store.cold.write(np.asarray(iids, np.uint64), vecs, metas, [e.uid for e in batch])  # copy
    store.cold.activate(w)
    store.hot.protect(hot_iids)
    try:
        synced = store.hot.take_synced()
        with store.catalog.write() as txn:  # flip
            change = store.catalog.lower_change(txn)
            store.catalog.clear_pending(synced, txn)
            for e, row in zip(batch, w.rows.tolist(), strict=True):
                store.catalog.put_entry(txn, e._replace(tier=TIER_COLD, seg=w.seg.sid, pos=row, version=e.version + 1))
                store.catalog.delete_vector(txn, e.iid)
            store.catalog.add_pending(txn, hot_iids)
            store.catalog.unqueue_cold(txn, iids)
            store.cold.commit(txn, w)
    except BaseException:
        store.hot.unprotect(hot_iids)
        try:
            store.cold.abort(w)
        except Exception as exc:  # the next open repairs the manifest
            log.warning("cold tier: abort of segment %d failed: %s", w.seg.sid, exc)
        raise
    store._note_lower(change, vecs)
    store.metrics.moved(batch, "cold", "explicit" if background is None else "policy")
    store._remove_old(batch, background)
    return len(batch)


class _Unlinker(ThreadPoolExecutor):
    """One worker thread for the Redis removals of one execute(), overlapped with its next batch
    (RediSearch deletes an HNSW node about as slowly as it inserts one)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="tierstore-unlink")
        self.futures: list[Future] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        fut = super().submit(fn, *args, **kwargs)
        self.futures.append(fut)
        return fut

    def drain(self) -> None:
        while self.futures:
            self.futures.pop(0).result()


# Order of a plan: make room first, then fill. Hot is a hard limit and is never exceeded (its
# promotions come last, after its demotions); warm is a budget and can be over by up to one
# batch while hot and warm swap vectors.
_ORDER = (("hot->cold", "warm->cold"), ("hot->warm",), ("cold->warm",), ("warm->hot", "cold->hot"))
_JOURNAL = b"policy_run"


def execute(store: TierStore, plan: dict[str, tuple[np.ndarray, np.ndarray]], *,
            stop: Callable[[], bool] | None = None,
            progress: Callable[[str, int], None] | None = None) -> tuple[dict[str, int], int]:
    """Carry out a policy plan: ``plan[direction] = (internal ids, catalog versions)``, best
    candidates first. Returns (moved per direction, skipped).

    Batches of ``policy.batch_size`` (demotions to cold: one segment of up to
    ``cold.segment_size``), each under the write lock, so writes and queries interleave. A
    vector whose entry changed since planning (other tier or version: written, moved or
    deleted meanwhile) is skipped; promotions into hot stop at hot's capacity whatever happened
    since planning. Progress is journaled in the catalog (``policy_run``); a crash leaves at
    most one batch open, which the next open rolls back (see the module docstring), and the
    next cycle re-plans what is left."""
    cat = store.catalog
    moved = {d: 0 for g in _ORDER for d in g}
    skipped = 0
    journal = {"pid": os.getpid(), "started": time.time(), "planned": {d: len(v[0]) for d, v in plan.items()},
               "moved": moved}
    cat.set_meta(_JOURNAL, json.dumps(journal).encode())
    unlinker = _Unlinker()
    try:
        for group in _ORDER:
            if group[0].endswith("->hot"):
                unlinker.drain()  # Redis holds no more than hot.capacity vectors: removals finish first
            srcs = {d: TIER_CODES[d.split("->")[0]] for d in group}
            dst = group[0].split("->")[1]
            work = [(d, int(i), int(v)) for d in group if d in plan for i, v in zip(*plan[d], strict=True)]
            size = store.config.cold.segment_size if dst == "cold" else store.config.policy.batch_size
            for s in range(0, len(work), size):
                if stop is not None and stop():
                    return moved, skipped
                chunk = work[s : s + size]
                with store._op(), store._write_lock:
                    with cat.read() as txn:
                        entries = [(d, cat.entry(txn, iid), v) for d, iid, v in chunk]
                        # what changed since planning (written, moved, deleted, pinned) is left alone
                        todo = [(d, e) for d, e, v in entries
                                if e is not None and e.tier == srcs[d] and e.version == v
                                and not e.flags & FLAG_PINNED]
                        room = store.capacity("hot") - cat.count(TIER_HOT, txn) if dst == "hot" else len(todo)
                    skipped += len(chunk) - min(len(todo), max(room, 0))
                    todo = todo[: max(room, 0)]
                    if not todo:
                        continue
                    batch = [e for _, e in todo]
                    if dst == "hot":
                        _to_hot(store, batch, unlinker)
                    elif dst == "warm":
                        _to_warm(store, batch, unlinker)
                    else:
                        _to_cold(store, batch, unlinker)
                    for d, _ in todo:
                        moved[d] += 1
                    cat.set_meta(_JOURNAL, json.dumps(journal).encode())
                if progress is not None:
                    progress(group[0], len(chunk))
        unlinker.drain()
    finally:
        unlinker.shutdown(wait=True)
        cat.delete_meta(_JOURNAL)
    return moved, skipped


def interrupted_run(store: TierStore) -> dict[str, Any] | None:
    """The journal of a policy run a crash interrupted (read once at open, then cleared).
    Its open batch needs nothing more: the copy step of every move is undone by the open
    itself (Redis keys by their pending marks, warm rows by rebuilding the growing segment
    from the catalog, cold segments by cold.py's journal)."""
    raw = store.catalog.get_meta(_JOURNAL)
    if raw is None:
        return None
    store.catalog.delete_meta(_JOURNAL)
    return json.loads(raw)


# --- offline migration of a selection (tierstore migrate) ------------------------------------------

_JOB = b"migrate_job"


def saved_job(store: TierStore) -> dict[str, Any] | None:
    """The selection of an interrupted ``tierstore migrate`` (None when there is none)."""
    raw = store.catalog.get_meta(_JOB)
    return None if raw is None else json.loads(raw)


def select(store: TierStore, job: dict[str, Any]) -> list[str | int]:
    """The user ids a migrate job names: its id list, or every vector matching its filter
    (optionally only those now in ``job["from"]`` tiers), in internal-id order."""
    from . import filters
    from .catalog import normalize_ids

    if job.get("ids") is not None:
        return normalize_ids(job["ids"])
    node = filters.compile_filter(job.get("filter"), store.schema)
    tiers = [TIER_CODES[t] for t in job["from"]] if job.get("from") else None
    return [e.uid for batch in store.catalog.entry_batches(tiers=tiers) for e in batch
            if filters.matches(node, e.metadata)]


def run_job(store: TierStore, job: dict[str, Any], ids: list[str | int], batch_size: int,
            progress: Callable[[int], None] | None = None) -> MoveReport:
    """Move ``ids`` to ``job["tier"]`` in batches, saving the job in the catalog first so an
    interrupted run can be resumed (moves are idempotent: what already moved counts as
    ``already`` the second time). Batches to cold are whole segments (``cold.segment_size``)."""
    tier = job["tier"]
    size = store.config.cold.segment_size if tier == "cold" else max(1, batch_size)
    total = MoveReport(tier)
    store.catalog.set_meta(_JOB, json.dumps(job).encode())
    for s in range(0, len(ids), size):
        rep = store.move(ids[s : s + size], tier)
        total.moved += rep.moved
        total.already += rep.already
        total.missing += rep.missing
        total.seconds += rep.seconds
        job["done"] = min(len(ids), s + size)
        store.catalog.set_meta(_JOB, json.dumps(job).encode())
        if progress is not None:
            progress(len(ids[s : s + size]))
    store.catalog.delete_meta(_JOB)
    return total


def flush_cold_queue(store: TierStore) -> int:
    """Write the vectors queued for demotion as cold segments (of up to ``cold.segment_size``).
    Queued ids deleted or moved to cold since are dropped from the queue. Returns #moved."""
    cat = store.catalog
    moved = 0
    size = store.config.cold.segment_size
    while True:
        queued = cat.cold_queue(limit=size)
        if not queued:
            return moved
        with cat.read() as txn:
            entries = [cat.entry(txn, iid) for iid in queued]
        todo = [e for e in entries if e is not None and e.tier != TIER_COLD]
        stale = [iid for iid, e in zip(queued, entries, strict=True) if e is None or e.tier == TIER_COLD]
        if stale:
            with cat.write() as txn:
                cat.unqueue_cold(txn, stale)
        moved += _to_cold(store, todo)


def compact_cold(store: TierStore, threshold: float | None = None) -> dict[str, int]:
    """Rewrite cold segments whose dead fraction exceeds ``threshold`` and merge small ones into
    new segments (copy -> new manifest -> flip -> reader grace -> delete the old objects), then
    delete objects no manifest lists. Called with the store's write lock held."""
    cold, cat = store.cold, store.catalog
    cold.connect()
    threshold = store.config.cold.compact_threshold if threshold is None else threshold
    size = store.config.cold.segment_size
    live = cold.live_rows()
    with cold._lock:
        segs = list(cold.segs.values())
    dead = {s.sid: 1 - live.get(s.sid, 0) / s.info["rows"] for s in segs}
    victims = [s for s in segs if s.info["rows"] and (dead[s.sid] > threshold or live.get(s.sid, 0) == 0)]
    small = [s for s in segs if s not in victims and s.info["rows"] < size // 4]
    if len(small) >= 2:
        victims += small
    out = {"segments": len(victims), "rows_kept": 0, "rows_dropped": 0, "bytes_freed": 0}
    # group the victims so that each new segment holds at most segment_size live rows
    groups, cur, n = [], [], 0
    for s in victims:
        if cur and n + live.get(s.sid, 0) > size:
            groups.append(cur)
            cur, n = [], 0
        cur.append(s)
        n += live.get(s.sid, 0)
    if cur:
        groups.append(cur)
    rows_of: dict[int, list[Entry]] = {s.sid: [] for s in victims}  # one catalog pass for all groups
    for batch in cat.entry_batches(tiers=[TIER_COLD]):
        for e in batch:
            if e.seg in rows_of:
                rows_of[e.seg].append(e)
    for group in groups:
        sids = {s.sid for s in group}
        entries = [e for s in group for e in rows_of[s.sid]]
        out["rows_dropped"] += sum(s.info["rows"] for s in group) - len(entries)
        if entries:
            vecs = cold.fetch(entries)
            w = cold.write(np.asarray([e.iid for e in entries], np.uint64), np.stack([vecs[e.iid] for e in entries]),
                           [e.metadata for e in entries], [e.uid for e in entries], op="compact")
            cold.activate(w)
            try:
                with cat.write() as txn:  # flip: same version, new location
                    for e, row in zip(entries, w.rows.tolist(), strict=True):
                        cat.put_entry(txn, e._replace(seg=w.seg.sid, pos=row))
                    cold.commit(txn, w)
                    for sid in sids:
                        cat.delete_cold_segment(txn, sid)
            except BaseException:
                cold.abort(w)
                raise
            # the new manifest must drop the old segments too (written after the flip: a crash in
            # between leaves them listed, and the next connect re-syncs the manifest to the catalog)
            cold._publish({}, sids)
            out["rows_kept"] += len(entries)
        else:
            with cat.write() as txn:
                for sid in sids:
                    cat.delete_cold_segment(txn, sid)
            cold._publish({}, sids)
        store.gate.wait()  # queries that began before the flip may still read the old rows
        gone = cold.unlist(sorted(sids))
        store.gate.wait()  # ... and so may queries that took the partition table meanwhile
        out["bytes_freed"] += cold.retire(gone)
    out.update(cold.collect_garbage())
    return out


def _verify_hot(store: TierStore, hot_ids: set[int], versions: dict[int, int], pending: set[int], deep: bool,
                report: dict[str, Any]) -> list[str]:
    """Redis holds exactly the hot ids (minus pending work not yet applied), each at the
    catalog's version; ``deep``: and with the catalog's vector bytes."""
    problems = []
    try:
        in_redis = store.hot.keys()
        settled = {i: v for i, v in versions.items() if i in in_redis and i not in pending}
        stale = store.hot.stale(settled)
        wrong = store.hot.differs(sorted(set(settled) - stale)) if deep else set()
    except redis.RedisError as exc:
        raise TierUnavailableError(f"hot tier: {exc}", tier="hot") from exc
    missing = hot_ids - in_redis - pending
    extra = in_redis - hot_ids - pending
    if missing:
        problems.append(f"{len(missing)} hot vectors are missing from Redis (rebuild-hot repairs it)")
    if extra:
        problems.append(f"{len(extra)} Redis keys name no hot vector")
    if stale:
        names = store.catalog.user_ids(sorted(stale)[:5])
        problems.append(f"{len(stale)} Redis copies are of another version than the catalog's (e.g. {names}); "
                        "reopening the store or rebuild-hot repairs it")
    if wrong:
        names = store.catalog.user_ids(sorted(wrong)[:5])
        problems.append(f"{len(wrong)} Redis copies hold other vector bytes than the catalog (e.g. {names}); "
                        "rebuild-hot repairs it")
    report["hot"] = {"catalog": len(hot_ids), "redis": len(in_redis), "pending": len(pending),
                     "version_checked": len(settled), "content_checked": len(settled) - len(stale) if deep else 0}
    return problems


def verify(store: TierStore, deep: bool = True, repair: bool = False) -> dict[str, Any]:
    """Catalog vs tiers vs S3 (see TierStore.verify)."""
    cat = store.catalog
    problems: list[str] = []
    report: dict[str, Any] = {"counts": cat.counts()}
    # warm files first (``deep``: every byte against its checksums; a failing segment stops being
    # served), and ``repair`` rebuilds from the catalog, so the row checks below see the result
    warm_rep = store.warm.verify(deep)
    if repair and (warm_rep["damaged"] or warm_rep["no_checksums"]):
        report["repaired"] = {"warm": store.warm.repair()}
        warm_rep = store.warm.verify(deep)
    problems += warm_rep.pop("problems")
    # hot: Redis holds exactly the hot ids (minus pending work not yet applied)
    pending = set(cat.pending(limit=10_000_000))
    hot_ids, warm_rows = set(), 0
    hot_versions: dict[int, int] = {}
    for batch in cat.entry_batches():
        with cat.read() as txn:
            for e in batch:
                has_vec = cat.vector_raw(txn, e.iid) is not None
                if e.tier == TIER_HOT:
                    hot_ids.add(e.iid)
                    hot_versions[e.iid] = e.version
                if e.tier != TIER_COLD and not has_vec:
                    problems.append(f"{e.uid!r}: {('hot', 'warm')[e.tier]} but no durable vector in LMDB")
                if e.tier == TIER_COLD and has_vec:
                    problems.append(f"{e.uid!r}: cold but still holds an LMDB vector")
                if e.tier == TIER_WARM:
                    warm_rows += 1
                    if e.seg != GROWING:
                        seg = store.warm.sealed.get(e.seg)
                        if seg is None or e.pos >= seg.seg.n or int(seg.seg.iids[e.pos]) != e.iid:
                            problems.append(f"{e.uid!r}: warm segment {e.seg} row {e.pos} does not hold it")
                    elif e.pos not in store.warm.growing.iids:
                        problems.append(f"{e.uid!r}: not in the warm growing segment")
    standby = store.hot.standby_reason
    if standby is not None:
        # Redis is loading or being refilled; the catalog answers for it meanwhile (not a fault)
        report["hot"] = {"catalog": len(hot_ids), "standby": standby, "pending": len(pending)}
    else:
        try:
            problems += _verify_hot(store, hot_ids, hot_versions, pending, deep, report)
        except TierStoreError as exc:
            problems.append(f"hot tier not checked: {exc}")
    report["warm"] = {"catalog": warm_rows, **warm_rep}
    if store.cold is not None and (store.cold.connected or store.cold.needs_connect_at_open()):
        try:
            rep = store.cold.verify(deep, repair)
            problems += rep.pop("problems")
            rep.pop("ok")
            if "repaired" in rep:
                report.setdefault("repaired", {})["cold"] = rep.pop("repaired")
            report["cold"] = rep
        except TierStoreError as exc:
            problems.append(f"cold tier not checked: {exc}")
    report["problems"] = problems[:200]
    report["ok"] = not problems
    return report


__all__ = ["compact_cold", "execute", "flush_cold_queue", "interrupted_run", "move", "run_job", "saved_job", "select",
           "verify"]
