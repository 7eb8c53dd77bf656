"""Rewriting the warm tier's sealed segments: compaction and repair (their live rows through the
growing segment), and merging small sealed segments into one (the store's maintenance thread).

The growing segment lives in RAM (hnswlib: ~1.9 KB per row at 384 dimensions), so it is sealed
at ``warm.growing_size`` rows, well below ``warm.segment_size``; :meth:`Rewriter.merge` then
merges the small sealed segments that leaves into segments of up to ``warm.segment_size`` rows.
Unlike compaction it does not go through the growing segment: it builds the new graph from the
victims' memory-mapped rows with no lock held, and only its catalog flip takes the store's
write lock (one transaction), so queries, writes and the policy go on while it builds.
"""

from __future__ import annotations

import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import segment
from .growing import GROWING
from .sealed import Sealed, places

_MERGE_CHUNK = 4096  # rows a merge adds to its graph between asking whether the store is closing


class Rewriter:
    """The rewriting operations of one :class:`~.tier.WarmTier` (``t``), which they change
    through its public state: ``lock``, ``sealed``, ``damaged``, ``dead_rows``, ``stats``."""

    def __init__(self, tier: Any) -> None:
        self.t = tier  # tierstore.tiers.warm.tier.WarmTier

    def repair(self) -> dict[str, Any]:
        """Rebuild every damaged segment, and every segment written before checksums existed, from
        the catalog (its rows' durable records) through the compaction path: the rows are copied
        into the growing segment, flipped there in one catalog transaction that also drops the old
        segment, the old directory goes after the reader grace, and the growing segment is sealed
        (with checksums). A crash in between leaves rows the next open rebuilds from the catalog."""
        t = self.t
        with t.lock:
            legacy = {sid: "no checksums" for sid, s in t.sealed.items()
                      if sid not in t.damaged and sid not in t.retiring and s.seg.checksums is None}
        if legacy:  # their files were never checked: rebuild from the catalog, not from them
            t.damage(legacy, quiet=True)
        with t.lock:
            why = {sid: r for sid, r in t.damaged.items() if sid in t.sealed and sid not in t.retiring}
            victims = [t.sealed[sid] for sid in sorted(why)]
        kept, _ = self._rewrite(victims)
        t.stats["repaired"] += len(victims)
        return {"rebuilt": {str(sid): r for sid, r in why.items()}, "rows": kept}

    # --- compaction ----------------------------------------------------------------------------------

    def compact(self, threshold: float | None = None) -> dict[str, int]:
        """Rewrite sealed segments whose dead fraction exceeds ``threshold`` (default
        ``warm.compact_threshold``): their live rows are copied into the growing segment, flipped
        there in the catalog, and the growing segment is sealed. Returns counts."""
        t = self.t
        threshold = t.cfg.compact_threshold if threshold is None else threshold
        with t.lock:
            mine = {sid: s for sid, s in t.sealed.items() if sid not in t.retiring}  # (not a merge's)
            victims = [s for s in mine.values() if s.seg.n and 1 - s.alive.mean() > threshold]
            # many small segments (frequent flushes) cost one kernel call each per query: merge them
            small = [s for s in mine.values() if s not in victims and s.seg.n < t.cfg.segment_size // 4]
            if len(small) >= 2:
                victims += small
            # damaged segments (served by their stand-ins) are rewritten from the catalog too
            victims += [s for sid, s in mine.items() if sid in t.damaged and s not in victims]
        kept, dropped = self._rewrite(victims)
        if victims:
            t.stats["compacted"] += len(victims)
        return {"segments": len(victims), "rows_kept": kept, "rows_dropped": dropped}

    def _rewrite(self, victims: Sequence[Sealed]) -> tuple[int, int]:
        """Copy the live rows of ``victims`` into the growing segment, flip them there, drop the
        old segments after the reader grace, then seal. Returns (rows kept, rows dropped)."""
        t = self.t
        # never copy damaged bytes into a new segment: a victim that fails its checksums is
        # rewritten from the catalog's records instead (hashing costs far less than the rebuild)
        bad = {}
        for s in victims:
            if s.sid not in t.damaged and s.seg.checksums is not None:
                errs, _ = s.seg.verify_files()
                if errs:
                    bad[s.sid] = "; ".join(errs)
        if bad:
            t.damage(bad)  # logged; their stand-ins (catalog rows) are what gets copied below
            with t.lock:
                victims = [t.sealed.get(s.sid, s) if s.sid in bad else s for s in victims]
        kept = dropped = 0
        for s in victims:  # the store's write lock is held: no concurrent writes, queries go on
            rows = np.flatnonzero(s.alive)
            live_iids = np.asarray(s.seg.iids)[rows]  # uint64: keep it an array until tolist()
            iids = live_iids.tolist()
            labels = t.reserve(len(rows))
            if len(rows):
                t.growing.add(labels, iids, np.asarray(s.seg.vectors)[rows], t.catalog.metadata_of(live_iids))
            with t.catalog.write() as txn:  # copy done: flip each live row to its new home
                for lab, iid, row in zip(labels, iids, rows.tolist(), strict=True):
                    e = t.catalog.entry(txn, iid)
                    if places(e, s.sid, row):
                        t.catalog.put_entry(txn, e._replace(seg=GROWING, pos=lab))
                        kept += 1
                    else:
                        t.growing.kill(lab)
                t.catalog.delete_segment(txn, s.sid)
            dropped += s.seg.n - len(rows)
            t.wait_readers()  # nobody may still be reading the old rows
            with t.lock:
                del t.sealed[s.sid]
                t.damaged.pop(s.sid, None)
            shutil.rmtree(s.seg.path, ignore_errors=True)
        if victims:
            t.seal()
        return kept, dropped

    # --- merging small sealed segments (the store's maintenance thread) ----------------------------

    def merge_candidates(self) -> list[Sealed]:
        """Sealed segments to merge into one: those with fewer than ``segment_size / 2`` live rows
        (growing segments sealed at ``growing_size`` rows, or early by ``flush()``), smallest
        first, up to ``segment_size`` live rows together; none unless there are two. Damaged
        segments and segments without checksums are left to ``verify --repair``."""
        t = self.t
        limit = t.cfg.segment_size
        if t.read_only or t.seal_rows() >= limit:
            return []
        with t.lock:
            small = sorted((int(s.alive.sum()), sid, s) for sid, s in t.sealed.items()
                           if sid not in t.damaged and sid not in t.retiring and s.seg.checksums is not None)
        pick, rows = [], 0
        for live, _, s in small:
            if live >= limit // 2 or rows + live > limit:
                break
            pick.append(s)
            rows += live
        return pick if len(pick) >= 2 else []

    def merge(self, victims: Sequence[Sealed], write_lock: Any, stop: Callable[[], bool] = lambda: False) -> int | None:
        """Merge ``victims`` into one new sealed segment -> rows moved, or None when abandoned.

        The slow part -- hashing the victims' files, reading their live rows, building one graph,
        writing the directory -- holds no lock: queries and writes go on (hnswlib builds without
        the GIL, on this thread only), and ``stop()`` is asked between chunks. Meanwhile the
        victims are *retiring*: rows are not revived in them (a vector coming back to warm is
        inserted into the growing segment instead), and compaction, repair and verify leave them
        alone. Then, under ``write_lock`` (the store's), one catalog transaction moves every row
        the catalog still places in a victim to its row of the new segment and drops the victims
        (the new segment is searchable just before; until the flip its rows fail the catalog
        check, after it the victims' do). Rows deleted or moved out meanwhile stay dead in the new
        segment. A victim rewritten before it became retiring (``compact``, ``verify --repair``)
        makes the merge give up. A crash before the flip leaves a directory the catalog does not
        list, which the next open deletes; after it, the victims' directories, likewise."""
        t = self.t
        with t.lock:
            if any(t.sealed.get(s.sid) is not s or s.sid in t.retiring for s in victims):
                return None
            t.retiring.update(s.sid for s in victims)
        try:
            return self._merge(victims, write_lock, stop)
        finally:
            with t.lock:
                t.retiring.difference_update(s.sid for s in victims)

    def _merge(self, victims: Sequence[Sealed], write_lock: Any, stop: Callable[[], bool]) -> int | None:
        t = self.t
        bad = {}
        for s in victims:  # never copy damaged bytes into a new segment
            errs, _ = s.seg.verify_files()
            if errs:
                bad[s.sid] = "; ".join(errs)
        if bad:
            with write_lock:  # (compaction and repair hold it: a victim they replaced is not damaged)
                with t.lock:
                    bad = {sid: why for sid, why in bad.items() if any(t.sealed.get(sid) is s for s in victims)}
                if bad:
                    t.damage(bad)
            return None
        t0 = time.perf_counter()
        snap = [np.flatnonzero(s.alive) for s in victims]
        iids = np.concatenate([np.asarray(s.seg.iids)[r] for s, r in zip(victims, snap, strict=True)])
        maps = {s.sid: np.full(s.seg.n, -1, np.int64) for s in victims}  # victim row -> new row (-1: none)
        if not len(iids):  # nothing alive: the flip only drops the victims
            return self._flip(victims, maps, None, write_lock, t0)[0]
        # the graph, from the victims' memory-mapped rows a chunk at a time (hnswlib keeps its
        # own copy: that, ~1.7 KB per row, is the merge's RAM)
        index = segment.new_index(t.dim, t.metric, len(iids), t.cfg.m, t.cfg.ef_construction)
        at = 0
        for s, rows in zip(victims, snap, strict=True):
            for a in range(0, len(rows), _MERGE_CHUNK):
                if stop():
                    return None
                part = rows[a : a + _MERGE_CHUNK]
                index.add_items(np.asarray(s.seg.vectors)[part], np.arange(at, at + len(part)), num_threads=1)
                at += len(part)
        with segment.exported(index, t.dim, t.root) as graph:
            del index  # (freed here: the graph is in the exported file)
            new_row = np.empty(len(iids), np.int64)  # snapshot index -> row of the new segment
            new_row[graph["labels"]] = np.arange(len(iids))
            off = 0
            for s, rows in zip(victims, snap, strict=True):
                maps[s.sid][rows] = new_row[off : off + len(rows)]
                off += len(rows)
            with t.catalog.write() as txn:
                sid = t.catalog.next_segment_id(txn)
            name = f"seg-{sid:08d}"
            seg = segment.Segment.open(segment.write_graph(t.root / name, iids[graph["labels"]], graph,
                                                           metric=t.metric), check=False)
            del graph
        done = [False]  # set the moment the catalog lists the new segment: its files are then live
        try:
            moved, _ = self._flip(victims, maps, (sid, name, seg), write_lock, t0, done)
        finally:
            if not done[0]:
                shutil.rmtree(seg.path, ignore_errors=True)
        return moved

    def _placed(self, victims: Sequence[Sealed], maps: dict[int, np.ndarray],
                n: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray] | None:
        """The vectors the catalog places in a victim row, as (iid, victim, row, new row), and the
        new segment's alive mask (``n`` rows); None if one of those rows is not in the new
        segment (cannot happen while the victims are retiring)."""
        t = self.t
        alive = np.zeros(n, bool)
        moved = []
        with t.catalog.read() as txn:
            for s in victims:
                m = maps[s.sid]
                for row, iid in enumerate(np.asarray(s.seg.iids).tolist()):
                    if places(t.catalog.entry(txn, iid), s.sid, row):
                        if m[row] < 0:
                            return None
                        moved.append((iid, s.sid, row, int(m[row])))
                        alive[m[row]] = True
        return moved, alive

    def _flip(self, victims: Sequence[Sealed], maps: dict[int, np.ndarray],
              new: tuple[int, str, segment.Segment] | None, write_lock: Any, t0: float,
              done: list[bool] | None = None) -> tuple[int | None, bool]:
        """:meth:`merge`'s catalog flip -> (rows moved or None when abandoned, committed).
        ``new``: (id, directory name, segment), or None when no victim row was alive. The pass
        over the victims' catalog entries runs before taking the write lock, and again under it
        only if an entry moved meanwhile (the move generation); under the lock each entry is read
        afresh and only its location changes (a metadata update or a pin made meanwhile stays)."""
        t = self.t
        sid, name, seg = new if new is not None else (0, "", None)
        gen = t.catalog.move_generation()
        placed = self._placed(victims, maps, seg.n if seg is not None else 0)
        with write_lock:
            with t.lock:
                if any(t.sealed.get(s.sid) is not s for s in victims):
                    t.stats["merges_abandoned"] += 1
                    return None, False  # rewritten before they were retiring
            if t.catalog.move_generation() != gen:
                placed = self._placed(victims, maps, seg.n if seg is not None else 0)
            if placed is None:
                with t.lock:
                    t.stats["merges_abandoned"] += 1
                return None, False
            rows, alive = placed
            if seg is not None:
                with t.lock:  # visible first: until the flip its rows fail the catalog check
                    t.sealed[sid] = Sealed(sid, seg, alive)
            try:
                with t.catalog.write() as txn:
                    for iid, victim, row, new_row in rows:
                        e = t.catalog.entry(txn, iid)
                        if places(e, victim, row):  # (always, under the write lock; read afresh)
                            t.catalog.put_entry(txn, e._replace(seg=sid, pos=new_row))
                    if seg is not None:
                        t.catalog.put_segment(txn, sid, {"dir": name, "n": seg.n, "created": time.time()})
                    for s in victims:
                        t.catalog.delete_segment(txn, s.sid)
            except BaseException:
                if seg is not None:
                    with t.lock:
                        del t.sealed[sid]
                raise
            if done is not None:
                done[0] = True
            with t.lock:  # dead rows remembered in a victim: now in the new segment (or forgotten)
                t.dead_rows = OrderedDict(
                    (iid, (sid, int(maps[sg][pos]), meta) if sg in maps else (sg, pos, meta))
                    for iid, (sg, pos, meta) in t.dead_rows.items() if sg not in maps or maps[sg][pos] >= 0)
        # after the flip, with the write lock free: queries that began before it may still read
        # the victims (still retiring: nothing revives, compacts or verifies them meanwhile)
        t.wait_readers()
        with t.lock:
            for s in victims:
                if t.sealed.get(s.sid) is s:
                    del t.sealed[s.sid]
            t.stats["merged"] += len(victims)
            t.stats["merges"] += 1
            t.stats["merge_seconds"] += time.perf_counter() - t0
        for s in victims:
            shutil.rmtree(s.seg.path, ignore_errors=True)
        return len(rows), True


__all__ = ["Rewriter"]
