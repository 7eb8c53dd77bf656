"""Moves between tiers: explicit moves, the policy's executor, the deferred cold queue and cold
compaction. Each is a loop of batches over :func:`~tierstore.engine.relocate.relocate` (copy ->
flip -> retire), so they need no journal of their own beyond what the copy step leaves: every
step is recoverable from the catalog alone (see relocate's module docstring).

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
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import tiers
from ..catalog import FLAG_PINNED, TIER_COLD, Entry
from ..errors import CapacityError
from ..progress import ProgressFn, Ticker
from ..results import MoveReport
from .relocate import Batch, relocate

log = logging.getLogger("tierstore")

_BATCH = 5_000


def move(engine: Any, ids: Sequence[str | int], tier: str, *, defer: bool = False) -> MoveReport:
    """Move ``ids`` to ``tier`` (see TierStore.move). Raises CapacityError before moving anything
    when they do not fit."""
    target = engine.target_tier(tier)
    code = tiers.CODES[target]
    ids = list(dict.fromkeys(ids))  # an id named twice moves once
    report = MoveReport(target)
    t0 = time.perf_counter()
    cat = engine.catalog
    with engine.operation(), engine.write_lock:
        todo: list[Entry] = []
        with cat.read() as txn:
            for uid in ids:
                e = cat.entry(txn, cat.iid(uid))
                if e is None or e.uid != uid:
                    report.missing += 1
                elif e.tier == code:
                    report.already += 1
                else:
                    todo.append(e)
            have = cat.count(code, txn)
        if target == "cold" and defer:
            cat.queue_cold([e.iid for e in todo])
            report.queued = len(todo)
            if cat.cold_queue_len() >= engine.config.cold.segment_size:
                report.moved += flush_cold_queue(engine)
        else:
            if engine.limited(target) and have + len(todo) > engine.capacity(target):
                cap = engine.capacity(target)
                raise CapacityError(
                    f"{target} tier is full: it holds {have} of {target}.capacity = {cap} vectors; moving "
                    f"{len(todo)} more does not fit; nothing was moved")
            size = engine.config.cold.segment_size if target == "cold" else _BATCH
            for s in range(0, len(todo), size):
                report.moved += move_entries(engine, todo[s : s + size], target, "explicit")
    report.seconds = time.perf_counter() - t0
    return report


def load(engine: Any, batch: Sequence[Entry]) -> np.ndarray:
    """The vectors of ``batch``: from LMDB, or from S3 for cold entries."""
    cold = [e for e in batch if e.tier == TIER_COLD]
    fetched = engine.cold.fetch(cold) if cold else {}
    with engine.catalog.read() as txn:
        return np.stack([fetched[e.iid] if e.tier == TIER_COLD else engine.catalog.vector(txn, e.iid) for e in batch])


def move_entries(engine: Any, batch: Sequence[Entry], target: str, origin: str,
                 background: Executor | None = None) -> int:
    """Relocate existing entries (the caller holds the write lock). Returns #moved."""
    if not batch:
        return 0
    relocate(engine, Batch.of_entries(batch, load(engine, batch)), target, origin=origin, background=background)
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


def plan_order() -> tuple[tuple[str, ...], ...]:
    """Order of a plan: make room first, then fill. Demotions go deepest first (to the last tier,
    then to each tier above it), then promotions from the top down. The first tier is a hard
    limit and is never exceeded (its promotions come last, after its demotions); the others are
    budgets and can be over by up to one batch while tiers swap vectors."""
    names = tiers.NAMES
    groups: list[tuple[str, ...]] = []
    for dst in reversed(range(1, len(names))):  # demotions into dst, from every faster tier
        groups.append(tuple(f"{names[s]}->{names[dst]}" for s in range(dst)))
    for dst in range(1, len(names) - 1)[::-1]:  # promotions into a middle tier, from every slower one
        groups.append(tuple(f"{names[s]}->{names[dst]}" for s in range(dst + 1, len(names))))
    groups.append(tuple(f"{names[s]}->{names[0]}" for s in range(1, len(names))))  # into the first, last
    return tuple(groups)


_ORDER = plan_order()
_JOURNAL = b"policy_run"
_MERGE_JOURNAL = b"cold_merge_run"  # its own key: a merge may run between a policy run's batches


def execute(engine: Any, plan: dict[str, tuple[np.ndarray, np.ndarray]], *,
            stop: Callable[[], bool] | None = None,
            progress: Callable[[str, int], None] | None = None) -> tuple[dict[str, int], int]:
    """Carry out a policy plan: ``plan[direction] = (internal ids, catalog versions)``, best
    candidates first. Returns (moved per direction, skipped).

    Batches of ``policy.batch_size`` (demotions to cold: one segment of up to
    ``cold.segment_size``), each under the write lock, so writes and queries interleave. A
    vector whose entry changed since planning (other tier or version: written, moved or
    deleted meanwhile) is skipped; promotions into hot stop at hot's capacity whatever happened
    since planning. Progress is journaled in the catalog (``policy_run``); a crash leaves at
    most one batch open, which the next open rolls back, and the next cycle re-plans the rest."""
    cat = engine.catalog
    moved = {d: 0 for g in _ORDER for d in g}
    skipped = 0
    journal = {"pid": os.getpid(), "started": time.time(), "planned": {d: len(v[0]) for d, v in plan.items()},
               "moved": moved}
    cat.set_meta(_JOURNAL, json.dumps(journal).encode())
    unlinker = _Unlinker()
    first = tiers.ORDER[0].name
    try:
        for group in _ORDER:
            dst = group[0].split("->")[1]
            if dst == first:
                unlinker.drain()  # Redis holds no more than hot.capacity vectors: removals finish first
            srcs = {d: tiers.CODES[d.split("->")[0]] for d in group}
            work = [(d, int(i), int(v)) for d in group if d in plan for i, v in zip(*plan[d], strict=True)]
            size = engine.config.cold.segment_size if dst == "cold" else engine.config.policy.batch_size
            for s in range(0, len(work), size):
                if stop is not None and stop():
                    return moved, skipped
                chunk = work[s : s + size]
                with engine.operation(), engine.write_lock:
                    with cat.read() as txn:
                        entries = [(d, cat.entry(txn, iid), v) for d, iid, v in chunk]
                        # what changed since planning (written, moved, deleted, pinned) is left alone
                        todo = [(d, e) for d, e, v in entries
                                if e is not None and e.tier == srcs[d] and e.version == v
                                and not e.flags & FLAG_PINNED]
                        room = (engine.capacity(dst) - cat.count(tiers.CODES[dst], txn) if dst == first
                                else len(todo))
                    skipped += len(chunk) - min(len(todo), max(room, 0))
                    todo = todo[: max(room, 0)]
                    if not todo:
                        continue
                    move_entries(engine, [e for _, e in todo], dst, "policy", unlinker)
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


def interrupted_run(engine: Any) -> dict[str, Any] | None:
    """The journal of a policy run or cold merge a crash interrupted (read once at open, then
    cleared; a merge's has ``"compacting": true``; both: the policy run's, with the merge's under
    ``"merge"``). Its open batch needs nothing more: the copy step of every move is undone by the
    open itself (Redis keys by their pending marks, warm rows by rebuilding the growing segment
    from the catalog, cold segments by the cold tier's journal)."""
    found = {}
    for name, key in (("merge", _MERGE_JOURNAL), ("policy", _JOURNAL)):
        raw = engine.catalog.get_meta(key)
        if raw is not None:
            engine.catalog.delete_meta(key)
            found[name] = json.loads(raw)
    if not found:
        return None
    if "policy" in found:  # a merge may run between a policy run's batches: both were cut short
        return {**found["policy"], **({"merge": found["merge"]} if "merge" in found else {})}
    return found["merge"]


def compact_cold_journaled(engine: Any) -> dict[str, int]:
    """:func:`compact_cold` as background maintenance (engine.maintenance), journaled like the
    policy executor's batches (``{"compacting": true}``), so a crash inside it is reported at the
    next open. (The compaction itself needs no journal: on either side of its catalog flip the
    catalog names one copy of every vector; see engine.maintenance.)"""
    cat = engine.catalog
    cat.set_meta(_MERGE_JOURNAL, json.dumps({"pid": os.getpid(), "started": time.time(), "compacting": True}).encode())
    try:
        # threshold 1.0: merge the small segments, never rewrite a large one for its dead rows
        # (that is compact()'s, on the user's schedule: it downloads and re-uploads the segment)
        return compact_cold(engine, threshold=1.0, max_groups=1)
    finally:
        cat.delete_meta(_MERGE_JOURNAL)


def flush_cold_queue(engine: Any) -> int:
    """Write the vectors queued for demotion as cold segments (of up to ``cold.segment_size``).
    Queued ids deleted or moved to cold since are dropped from the queue. Returns #moved."""
    cat = engine.catalog
    moved = 0
    size = engine.config.cold.segment_size
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
        moved += move_entries(engine, todo, "cold", "explicit")


def compact(engine: Any, threshold: float | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """``TierStore.compact``: warm segments, then cold ones (called with the store's write lock
    held). ``progress(done, total)`` counts rows rewritten: the warm tier's once it finished (its
    rewrite has no hook of its own), then the cold tier's group by group -- the long part (every
    row is downloaded from S3 and uploaded again)."""
    tick = Ticker(progress)
    out: dict[str, Any] = {"warm": engine.warm.compact(threshold)}
    base = out["warm"]["rows_kept"] + out["warm"]["rows_dropped"]
    tick.set(base)
    cold = engine.cold
    if cold is not None and (cold.connected or cold.needs_connect_at_open()):
        out["cold"] = compact_cold(engine, threshold, progress=lambda d, n: tick.set(base + d, base + (n or 0)))
    tick.finish()
    return out


def compact_cold(engine: Any, threshold: float | None = None, progress: ProgressFn | None = None,
                 max_groups: int | None = None) -> dict[str, int]:
    """Rewrite cold segments whose dead fraction exceeds ``threshold`` and merge small ones into
    new segments (copy -> new manifest -> flip -> reader grace -> delete the old objects), then
    delete objects no manifest lists. Called with the store's write lock held. ``progress``:
    rows of the rewritten segments (live and dead) done so far, of all of them. ``max_groups``:
    write at most that many new segments (of up to ``cold.segment_size`` rows) and leave the rest
    for the next call -- the background merge does one at a time, so the write lock is free
    between them (a 1M ingest left 60 spilled segments whose merge in one call held the lock,
    and stopped every policy move, for over a minute)."""
    cold, cat = engine.cold, engine.catalog
    cold.connect()
    threshold = engine.config.cold.compact_threshold if threshold is None else threshold
    size = engine.config.cold.segment_size
    live = cold.live_rows()
    segs = cold.segments()
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
    if max_groups is not None and len(groups) > max_groups:
        groups = groups[:max_groups]
        victims = [s for g in groups for s in g]
        out["segments"] = len(victims)
    tick = Ticker(progress, sum(s.info["rows"] for s in victims))
    rows_of: dict[int, list[Entry]] = {s.sid: [] for s in victims}  # one catalog pass for all groups
    for batch in cat.entry_batches(tiers=[TIER_COLD]):
        for e in batch:
            if e.seg in rows_of:
                rows_of[e.seg].append(e)
    for group in groups:
        sids = {s.sid for s in group}
        entries = [e for s in group for e in rows_of[s.sid]]
        out["rows_dropped"] += sum(s.info["rows"] for s in group) - len(entries)

        def drop_segments(txn: Any, sids: set[int] = sids) -> None:
            for sid in sids:
                cat.delete_cold_segment(txn, sid)

        if entries:  # flip: same version, new place; the old segments' records go in the same txn
            relocate(engine, Batch.of_entries(entries, load(engine, entries)), "cold", origin="compact",
                     new_version=False, also=drop_segments)
            out["rows_kept"] += len(entries)
        else:
            with cat.write() as txn:
                drop_segments(txn)
        # the new manifest must drop the old segments too (written after the flip: a crash in
        # between leaves them listed, and the next connect re-syncs the manifest to the catalog)
        cold.publish_removed(sids)
        engine.gate.wait()  # queries that began before the flip may still read the old rows
        gone = cold.unlist(sorted(sids))
        engine.gate.wait()  # ... and so may queries that took the partition table meanwhile
        out["bytes_freed"] += cold.retire(gone)
        tick.add(sum(s.info["rows"] for s in group))
    out.update(cold.collect_garbage())
    tick.finish()
    return out


__all__ = ["compact", "compact_cold", "execute", "flush_cold_queue", "interrupted_run", "load", "move", "move_entries",
           "plan_order"]
