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
                      if sid not in t.damaged and s.seg.checksums is None}
        if legacy:  # their files were never checked: rebuild from the catalog, not from them
            t.damage(legacy, quiet=True)
        with t.lock:
            why = {sid: r for sid, r in t.damaged.items() if sid in t.sealed}
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
            victims = [s for s in t.sealed.values() if s.seg.n and 1 - s.alive.mean() > threshold]
            # many small segments (frequent flushes) cost one kernel call each per query: merge them
            small = [s for s in t.sealed.values() if s not in victims and s.seg.n < t.cfg.segment_size // 4]
            if len(small) >= 2:
                victims += small
            # damaged segments (served by their stand-ins) are rewritten from the catalog too
            victims += [s for sid, s in t.sealed.items() if sid in t.damaged and s not in victims]
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
                           if sid not in t.damaged and s.seg.checksums is not None)
        pick, rows = [], 0
        for live, _, s in small:
            if live >= limit // 2 or rows + live > limit:
                break
            pick.append(s)
            rows += live
        return pick if len(pick) >= 2 else []

    def merge(self, victims: Sequence[Sealed], write_lock: Any, stop: Callable[[], bool] = lambda: False) -> int | None:
        """Merge ``victims`` into one new sealed segment -> rows moved, or None when abandoned.

        The slow part -- reading the victims' live rows, building one graph, writing the
        directory -- holds no lock: queries and writes go on (hnswlib builds without the GIL, on
        this thread only), and ``stop()`` is asked between chunks. Then, under ``write_lock`` (the
        store's), one catalog transaction moves every row the catalog still places in a victim to
        its row of the new segment and drops the victims (the new segment is searchable just
        before; until the flip its rows fail the catalog check, after it the victims' do). Rows
        deleted or moved out meanwhile stay dead in the new segment. A victim row that came back
        to life after the snapshot (revived in place by a move) is not in the new segment: the
        merge is abandoned, as it is when a victim was rewritten meanwhile (``compact``,
        ``verify --repair``). A crash before the flip leaves a directory the catalog does not
        list, which the next open deletes; after it, the victims' directories, likewise."""
        t = self.t
        bad = {}
        for s in victims:  # never copy damaged bytes into a new segment
            errs, _ = s.seg.verify_files()
            if errs:
                bad[s.sid] = "; ".join(errs)
        if bad:
            t.damage(bad)
            return None
        t0 = time.perf_counter()
        snap = [np.flatnonzero(s.alive) for s in victims]
        iids = np.concatenate([np.asarray(s.seg.iids)[r] for s, r in zip(victims, snap, strict=True)])
        if not len(iids):  # nothing alive: the flip only drops the victims
            maps = {s.sid: np.full(s.seg.n, -1, np.int64) for s in victims}
            with write_lock:
                moved = self._merge_flip(victims, maps, None)
            if moved is not None:
                self._merged(victims, maps, None, t0)
            return moved
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
            maps, off = {}, 0  # victim sid -> its row -> row of the new segment (-1: not in it)
            for s, rows in zip(victims, snap, strict=True):
                m = np.full(s.seg.n, -1, np.int64)
                m[rows] = new_row[off : off + len(rows)]
                maps[s.sid] = m
                off += len(rows)
            with t.catalog.write() as txn:
                sid = t.catalog.next_segment_id(txn)
            name = f"seg-{sid:08d}"
            seg = segment.Segment.open(segment.write_graph(t.root / name, iids[graph["labels"]], graph,
                                                           metric=t.metric), check=False)
            del graph
        moved = None
        try:
            with write_lock:
                moved = self._merge_flip(victims, maps, (sid, name, seg))
        finally:
            if moved is None:
                shutil.rmtree(seg.path, ignore_errors=True)
        if moved is not None:
            self._merged(victims, maps, sid, t0)
        return moved

    def _merged(self, victims: Sequence[Sealed], maps: dict[int, np.ndarray], sid: int | None, t0: float) -> None:
        """After :meth:`merge`'s flip: let go of the victims."""
        t = self.t
        t.wait_readers()  # queries that began before the flip may still read the victims
        with t.lock:
            for s in victims:
                del t.sealed[s.sid]
            t.dead_rows = OrderedDict(  # dead rows remembered in a victim: now in the new segment
                (iid, (sid, int(maps[sg][pos]), meta) if sg in maps else (sg, pos, meta))
                for iid, (sg, pos, meta) in t.dead_rows.items() if sg not in maps or maps[sg][pos] >= 0)
            t.stats["merged"] += len(victims)
            t.stats["merges"] += 1
            t.stats["merge_seconds"] += time.perf_counter() - t0
        for s in victims:
            shutil.rmtree(s.seg.path, ignore_errors=True)

    def _merge_flip(self, victims: Sequence[Sealed], maps: dict[int, np.ndarray],
                    new: tuple[int, str, segment.Segment] | None) -> int | None:
        """:meth:`merge`'s catalog flip (the store's write lock held: no write can interleave).
        ``new``: (id, directory name, segment), or None when no victim row was alive."""
        t = self.t
        with t.lock:
            if any(t.sealed.get(s.sid) is not s for s in victims):
                t.stats["merges_abandoned"] += 1
                return None  # rewritten meanwhile
        sid, name, seg = new if new is not None else (0, "", None)
        alive = np.zeros(seg.n if seg is not None else 0, bool)
        moved = []
        with t.catalog.read() as txn:
            for s in victims:
                ids = np.asarray(s.seg.iids).tolist()
                m = maps[s.sid]
                for row, iid in enumerate(ids):
                    e = t.catalog.entry(txn, iid)
                    if places(e, s.sid, row):
                        if m[row] < 0:  # revived after the snapshot: not in the new segment
                            with t.lock:
                                t.stats["merges_abandoned"] += 1
                            return None
                        moved.append(e._replace(seg=sid, pos=int(m[row])))
                        alive[m[row]] = True
        if seg is not None:
            with t.lock:  # visible first: until the flip its rows fail the catalog check
                t.sealed[sid] = Sealed(sid, seg, alive)
        try:
            with t.catalog.write() as txn:
                for e in moved:
                    t.catalog.put_entry(txn, e)
                if seg is not None:
                    t.catalog.put_segment(txn, sid, {"dir": name, "n": seg.n, "created": time.time()})
                for s in victims:
                    t.catalog.delete_segment(txn, s.sid)
        except BaseException:
            if seg is not None:
                with t.lock:
                    del t.sealed[sid]
            raise
        return len(moved)


__all__ = ["Rewriter"]
