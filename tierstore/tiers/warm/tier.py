"""Warm tier: sealed HNSW segments on local disk (memory-mapped, numba) + one growing segment.

New warm vectors go to the *growing* segment: an in-RAM hnswlib index whose rows are labelled by
``entry.pos`` (``entry.seg == 0``). At ``warm.growing_size`` rows (and on ``flush``/``close``) it is
*sealed*: its graph is exported to a segment directory (segment.py) -- no rebuild -- and the
catalog entries move to ``(seg, row)`` in one transaction. The durable copy of every warm vector
stays in the catalog's records, so after a crash the growing segment is rebuilt from them and a
segment directory the catalog does not list is deleted.

Rows are never removed from a segment: a row is *alive* while the catalog entry of its internal
id points at it (tier warm, same seg and pos). Deletes, moves out and re-upserts (a new version
goes to the growing segment) only flip that, and the in-memory alive masks follow. Compaction
rewrites segments whose dead fraction passes ``warm.compact_threshold``, and the maintenance
thread merges small sealed segments into segments of up to ``warm.segment_size`` rows (rewrite.py).

Search returns each candidate with its location (:func:`catalog.location`), which engine/query.py has the
catalog confirm, so a vector whose newest version lives elsewhere is never returned twice.

A *read-only* WarmTier (another process queries the store its writer owns) never writes or
deletes: it maps the sealed segments the catalog lists (:meth:`WarmTier.refresh` picks up new
ones and lets go of removed ones) and mirrors the growing segment -- which exists only in the
writer's memory -- from the catalog's ``growing`` table and durable records: committed rows only,
appended incrementally, searched exactly (:class:`Mirror`). Its sealed rows all count as alive:
which of them still hold their id's current version is decided by the catalog check alone.

A sealed segment whose files fail their checksums (at its first map in a process, or in
:meth:`WarmTier.verify`) or cannot be mapped at all is *damaged*: it is logged, listed in
``info()["damaged"]`` and never searched again; a :class:`StandIn` serves its rows instead --
the rows the catalog places there, with their vectors from the catalog's durable records, by an
exact scan -- until :meth:`WarmTier.repair` (``verify --repair``) or a compaction rewrites them
into a new segment through the compaction path.

>>> warm = WarmTier(path, catalog, cfg.warm, schema, "cosine", gate)       # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from ... import distance, filters
from ...catalog import TIER_WARM, Catalog, Entry, location
from ...config import WarmConfig
from ...errors import IntegrityError
from ..protocol import TierAnswer
from . import segment
from .copy import WarmCopy
from .growing import GROWING, Growing, Mirror
from .rewrite import Rewriter
from .sealed import Sealed, StandIn, places

log = logging.getLogger("tierstore")


DEAD_ROWS = 200_000  # dead rows remembered for revival (a cap on a cache: see WarmTier.dead_rows)


class WarmTier:
    """Sealed memory-mapped segments + a growing in-RAM segment, behind the tier interface."""

    name = "warm"

    def __init__(self, root: str | Path, catalog: Catalog, config: WarmConfig, schema: dict[str, str],
                 metric: str, wait_readers: Callable[[], None], read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self.catalog, self.cfg, self.schema, self.metric = catalog, config, dict(schema), metric
        self.dim = catalog.dim
        self.wait_readers = wait_readers  # blocks until queries that began earlier are done
        self.lock = threading.RLock()
        self.sealed: dict[int, Sealed] = {}
        self.growing: Any = Mirror(self.dim, metric) if read_only else Growing(self.dim, metric, config)
        # iid -> (seg, pos) of its last dead warm row: a vector that comes back to warm unchanged
        # (the policy moving it hot -> warm after warm -> hot, or cold -> warm) is revived there
        # instead of being inserted into an HNSW graph again (in RAM only: a cache, not state).
        # Bounded: the DEAD_ROWS most recently killed rows (~150 B each), oldest forgotten first.
        self.dead_rows: OrderedDict[int, tuple[int, int, int]] = OrderedDict()  # iid -> (seg, pos, xxh64 of metadata)
        self.stats = {"sealed": 0, "compacted": 0, "seal_seconds": 0.0, "revived": 0, "repaired": 0,
                      "merged": 0, "merges": 0, "merge_seconds": 0.0, "merges_abandoned": 0}
        self.damaged: dict[int, str] = {}  # sealed segment id -> why it is not served (see StandIn)
        # victims of the merge in flight (rewrite.py): never revived, compacted, repaired or
        # reported damaged (they are being replaced)
        self.retiring: set[int] = set()
        self.rewrite = Rewriter(self)
        self._load()

    # --- opening ---------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.read_only:
            self.refresh()
            return
        listed = self.catalog.segments()
        saved = self._saved_alive()
        bad: dict[int, str] = {}
        for sid, info in sorted(listed.items()):
            try:
                seg = segment.Segment.open(self.root / info["dir"])
            except IntegrityError as exc:  # a damaged segment must not make the store unusable
                bad[sid] = str(exc).removeprefix(f"warm segment {self.root / info['dir']}: ")
                continue
            alive = saved.get(sid)
            if alive is None or alive.shape[0] != seg.n:
                alive = self._alive_rows(sid, seg)  # one catalog read per row
            self.sealed[sid] = Sealed(sid, seg, alive)
        if bad:
            self.damage(bad)
        keep = {info["dir"] for info in listed.values()}
        for d in self.root.iterdir():  # crash leftovers: half-written or never-recorded segments
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
            elif d.name.startswith(segment.EXPORT_PREFIX):  # a graph being exported (seal, merge)
                d.unlink(missing_ok=True)
        # Rebuild the growing segment from the durable records (empty after a clean close): the
        # rows the catalog's growing table lists (O(rows), not a walk of every entry), or, the
        # first time this version opens the store, every warm entry (and the table is rebuilt).
        labels, iids, vecs, metas = [], [], [], []
        trusted = self.catalog.growing_table_ready()
        for batch in self._growing_entries(trusted):
            with self.catalog.read() as txn:
                for e in batch:
                    if e is not None and e.tier == TIER_WARM and e.seg == GROWING:
                        labels.append(e.pos)
                        iids.append(e.iid)
                        vecs.append(self.catalog.vector(txn, e.iid))
                        metas.append(e.metadata)
        if labels:
            self.growing.add(labels, iids, self.prepare(np.stack(vecs)), metas)
        if saved and not bad:
            alive = sum(int(sd.alive.sum()) for sd in self.sealed.values()) + len(labels)
            if alive != self.catalog.count(TIER_WARM):  # a mask the catalog disagrees with: recompute
                log.warning("warm tier: saved alive masks count %d rows, the catalog %d; reading them from the "
                            "catalog", alive, self.catalog.count(TIER_WARM))
                for sid, sd in self.sealed.items():
                    sd.alive = self._alive_rows(sid, sd.seg)
        if not trusted:
            self.catalog.reset_growing()  # the table read-only processes mirror: exactly these rows

    def _growing_entries(self, from_table: bool):
        """Batches of the catalog entries that may be growing-segment rows."""
        if from_table:
            with self.catalog.read() as txn:
                rows = self.catalog.growing_rows(txn)
                yield [self.catalog.entry(txn, int(i)) for i in rows["iid"]]
            return
        last = None
        while True:
            batch = self.catalog.iter_entries(tiers=[TIER_WARM], start_after=last, limit=10_000)
            if not batch:
                return
            last = batch[-1].iid
            yield batch

    def refresh(self, sealed: bool = True) -> None:
        """Read-only: follow the catalog -- map sealed segments it lists that are new, let go of
        those it no longer lists (their files may be gone: a mapping stays readable on Linux),
        and catch the growing mirror up. ``sealed=False``: only the growing segment (nothing can
        have been sealed or compacted since the last refresh)."""
        if sealed:
            listed = self.catalog.segments()
            with self.lock:
                have = set(self.sealed)
            bad: dict[int, str] = {}
            for sid in sorted(set(listed) - have):
                try:
                    seg = segment.Segment.open(self.root / listed[sid]["dir"])
                except (OSError, IntegrityError) as exc:
                    # removed by a compaction since we listed it: the catalog no longer names its
                    # rows, and the caller's move-generation check repeats the query
                    if (self.root / listed[sid]["dir"]).is_dir():  # still there: damaged
                        bad[sid] = str(exc).removeprefix(f"warm segment {self.root / listed[sid]['dir']}: ")
                    continue
                with self.lock:
                    self.sealed[sid] = Sealed(sid, seg, np.ones(seg.n, bool))
            if bad:
                self.damage(bad)
            with self.lock:
                for sid in have - set(listed):
                    del self.sealed[sid]
                    self.damaged.pop(sid, None)
        with self.catalog.read() as txn:
            self.growing.sync(self.catalog, txn, self.prepare)

    def _stand_ins(self, sids: Sequence[int]) -> dict[int, Sealed]:
        """A :class:`StandIn` per damaged segment, from the catalog (one pass over warm entries)."""
        listed = self.catalog.segments()
        rows: dict[int, list[tuple[int, int]]] = {sid: [] for sid in sids}
        for batch in self.catalog.entry_batches(tiers=[TIER_WARM]):
            for e in batch:
                if e.seg in rows:
                    rows[e.seg].append((e.pos, e.iid))
        out = {}
        for sid, pairs in rows.items():
            n = max([int(listed.get(sid, {}).get("n", 0))] + [pos + 1 for pos, _ in pairs])
            iids = np.zeros(n, np.uint64)
            vecs = np.zeros((n, self.dim), np.float32)
            with self.catalog.read() as txn:
                for pos, iid in pairs:
                    v = self.catalog.vector(txn, iid)
                    if v is not None:  # (none: verify reports the missing durable vector)
                        iids[pos], vecs[pos] = iid, v
            known = iids != 0
            vecs[known] = self.prepare(vecs[known])
            name = listed.get(sid, {}).get("dir", f"seg-{sid:08d}")
            out[sid] = Sealed(sid, StandIn(self.root / name, self.metric, iids, vecs), known)
        return out

    def damage(self, reasons: dict[int, str], quiet: bool = False) -> None:
        """Stop serving these sealed segments: stand-ins from the catalog take their place."""
        for sid, why in sorted(reasons.items()):
            if not quiet:
                log.warning("warm segment %d is damaged and no longer served (its rows are scanned from the "
                            "catalog until `tierstore verify --repair` rebuilds it): %s", sid, why)
        stand = self._stand_ins(sorted(reasons))
        with self.lock:
            self.damaged.update(reasons)
            self.sealed.update(stand)

    def verify(self, deep: bool = True) -> dict[str, Any]:
        """Compare every sealed segment's files with its checksums (``deep``: every byte; else the
        checksum table, sizes and meta.json). A segment that fails stops being served (see
        :class:`StandIn`). Returns counts and ``problems``."""
        with self.lock:
            sealed = dict(self.sealed)
            damaged = dict(self.damaged)
        found: dict[int, str] = {}
        no_sums: list[int] = []
        checked = 0
        for sid, s in sorted(sealed.items()):
            if sid in damaged or sid in self.retiring:
                continue
            errs, read = s.seg.verify_files(full=deep)
            checked += read
            if errs:
                found[sid] = "; ".join(errs)
            elif s.seg.checksums is None:
                no_sums.append(sid)
        with self.lock:  # (a segment a merge replaced meanwhile is gone, not damaged)
            found = {sid: why for sid, why in found.items() if self.sealed.get(sid) is sealed[sid]}
        if found:
            self.damage(found)
            damaged.update(found)
        problems = [f"warm segment {sid} ({sealed[sid].seg.path.name}): {why} -- not served; its rows are scanned "
                    f"exactly from the catalog until `tierstore verify --repair` rebuilds it"
                    for sid, why in sorted(damaged.items()) if sid in sealed]
        return {"segments": len(sealed), "checked_bytes": checked, "no_checksums": no_sums,
                "damaged": sorted(damaged), "problems": problems}

    def save_alive(self) -> None:
        """At a clean close: the sealed segments' alive masks, with the catalog's move generation
        (only a write that moves or deletes an entry can change them), so the next open reads
        them back instead of one catalog read per sealed row."""
        with self.lock:
            gen = self.catalog.move_generation()
            masks = {str(sid): np.packbits(sd.alive) for sid, sd in self.sealed.items() if sid not in self.damaged}
            sizes = {str(sid): int(sd.alive.shape[0]) for sid, sd in self.sealed.items() if sid not in self.damaged}
        buf = io.BytesIO()
        np.savez(buf, move_gen=np.int64(gen), sizes=np.frombuffer(json.dumps(sizes).encode(), np.uint8), **masks)
        self.catalog.set_meta(b"warm_alive", buf.getvalue())

    def _saved_alive(self) -> dict[int, np.ndarray]:
        """The masks :meth:`save_alive` left, if no write moved or deleted an entry since (else
        none: a crash, or writes after the save)."""
        raw = self.catalog.get_meta(b"warm_alive")
        if raw is None or not self.catalog.own_writes_only:  # (an older version wrote since)
            return {}
        try:
            z = np.load(io.BytesIO(raw))
            if int(z["move_gen"]) != self.catalog.move_generation():
                return {}
            sizes = json.loads(z["sizes"].tobytes())
            return {int(s): np.unpackbits(z[s], count=n).astype(bool) for s, n in sizes.items()}
        except (ValueError, KeyError, OSError) as exc:  # a damaged blob only costs the catalog reads
            log.warning("warm tier: saved alive masks unreadable (%s); reading them from the catalog", exc)
            return {}

    def _alive_rows(self, sid: int, seg: segment.Segment) -> np.ndarray:
        alive = np.zeros(seg.n, bool)
        iids = np.asarray(seg.iids)
        with self.catalog.read() as txn:
            for row in range(seg.n):
                alive[row] = places(self.catalog.entry(txn, int(iids[row])), sid, row)
        return alive

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """What the warm tier indexes: unit vectors under cosine, the vectors as given otherwise."""
        return distance.prepare(self.metric, vectors)

    # --- writes (called by the store under its write lock) ---------------------------------------

    def reserve(self, n: int) -> list[int]:
        """Growing-segment labels for n new rows (their catalog ``pos``)."""
        with self.lock:
            start = self.growing.next_label
            self.growing.next_label += n
            return list(range(start, start + n))

    def add(self, labels: Sequence[int], iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict]) -> None:
        """Index rows in the growing segment (before their catalog flip: copy, then flip)."""
        with self.lock:
            self.growing.add(labels, iids, self.prepare(vectors), metas)

    def discard(self, labels: Sequence[int]) -> None:
        """Growing rows added for a write that then failed before its catalog flip."""
        with self.lock:
            for lab in labels:
                self.growing.kill(lab)

    def kill(self, entries: Sequence[Entry], reusable: bool = True) -> None:
        """Rows that no longer hold the current version: mask them (after the reader grace).
        ``reusable``: remember them, so the same vector coming back can be revived in place."""
        with self.lock:
            for e in entries:
                if e.seg == GROWING:
                    self.growing.kill(e.pos)
                elif e.seg in self.sealed:
                    self.sealed[e.seg].alive[e.pos] = False
                else:
                    continue
                if reusable:
                    self.dead_rows[e.iid] = (e.seg, e.pos, xxhash.xxh64_intdigest(e.meta))
                    self.dead_rows.move_to_end(e.iid)
                    if len(self.dead_rows) > DEAD_ROWS:
                        self.dead_rows.popitem(last=False)
                else:
                    self.dead_rows.pop(e.iid, None)

    def revive(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[bytes]) -> list[tuple[int, int] | None]:
        """For each row: the (seg, pos) of a dead warm row of the same id that holds exactly this
        vector and metadata, made alive again in place (its graph node never left the graph), or
        None (the caller inserts it). Part of the copy step of a move: until the caller's catalog
        flip, queries drop the row by the catalog check; on failure the caller calls
        :meth:`unrevive`. A sealed row is revived only while its segment has built no filter
        columns (they were read from the catalog at build time, when this row was dead)."""
        prepared = self.prepare(vectors)
        out: list[tuple[int, int] | None] = [None] * len(iids)
        with self.lock:
            g = self.growing
            for i, iid in enumerate(iids):
                dead = self.dead_rows.get(iid)
                if dead is None or dead[2] != xxhash.xxh64_intdigest(metas[i]):
                    continue
                seg, pos, _ = dead
                if seg == GROWING:
                    if not g.is_dead(pos) or g.iid_of(pos) != iid:
                        continue
                    g.index.unmark_deleted(pos)  # (hnswlib does not read deleted rows back)
                    if not np.array_equal(np.asarray(g.index.get_items([pos]), np.float32)[0], prepared[i]):
                        g.index.mark_deleted(pos)
                        continue
                    g.revive(pos)
                else:
                    sd = self.sealed.get(seg)
                    if sd is None or seg in self.retiring or sd.alive[pos] or int(sd.seg.iids[pos]) != iid:
                        continue
                    if (sd.columns is not None and self.schema) or not np.array_equal(
                            np.asarray(sd.seg.vectors[pos]), prepared[i]):
                        continue
                    sd.alive[pos] = True
                del self.dead_rows[iid]
                out[i] = (seg, pos)
            self.stats["revived"] += sum(x is not None for x in out)
        return out

    def unrevive(self, locs: Sequence[tuple[int, int] | None]) -> None:
        """Undo :meth:`revive` for a move that failed before its catalog flip."""
        with self.lock:
            for loc in locs:
                if loc is None:
                    continue
                seg, pos = loc
                if seg == GROWING:
                    self.growing.kill(pos)
                elif seg in self.sealed:
                    self.sealed[seg].alive[pos] = False

    def missing_row(self, e: Entry) -> str | None:
        """verify(): why the row the catalog names for warm entry ``e`` does not hold it (None
        when it does)."""
        if e.seg == GROWING:
            return None if self.growing.has(e.pos) else "not in the warm growing segment"
        sd = self.sealed.get(e.seg)
        if sd is None or e.pos >= sd.seg.n or int(sd.seg.iids[e.pos]) != e.iid:
            return f"warm segment {e.seg} row {e.pos} does not hold it"
        return None

    def stage(self, origin: str, catalog: Any) -> WarmCopy:
        """A relocation's copy into this tier (tierstore.engine.relocate)."""
        return WarmCopy(self)

    def seal_rows(self) -> int:
        """Rows at which the growing segment (in RAM) is sealed."""
        return min(self.cfg.growing_size, self.cfg.segment_size)

    def needs_seal(self) -> bool:
        return self.growing.rows >= self.seal_rows()

    def seal(self) -> int:
        """Turn the growing segment into a sealed one. Returns the number of rows sealed.

        Called with the store's write lock held (no concurrent writes); queries keep running:
        the slow parts (export, segment write) take no lock, and the new segment is visible
        before the catalog flip, so every query finds each row where its snapshot says."""
        g = self.growing
        if not g.alive:
            return 0
        t0 = time.perf_counter()
        with segment.exported(g.index, self.dim, self.root) as graph:
            labels = graph["labels"].tolist()
            iids = np.asarray(g.iids_of(labels), np.uint64)
            with self.catalog.write() as txn:
                sid = self.catalog.next_segment_id(txn)
            name = f"seg-{sid:08d}"
            seg = segment.Segment.open(segment.write_graph(self.root / name, iids, graph, metric=self.metric),
                                       check=False)  # just written and hashed by this process
            del graph
        with self.catalog.read() as txn:  # rows that still hold their id's current version
            alive = np.array([places(self.catalog.entry(txn, iid), GROWING, lab)
                              for lab, iid in zip(labels, iids.tolist(), strict=True)], bool)
        with self.lock:  # visible first: until the flip its rows fail the catalog check
            self.sealed[sid] = Sealed(sid, seg, alive)
        try:
            with self.catalog.write() as txn:
                for row in np.flatnonzero(alive).tolist():
                    e = self.catalog.entry(txn, int(iids[row]))
                    self.catalog.put_entry(txn, e._replace(seg=sid, pos=row))
                self.catalog.put_segment(txn, sid, {"dir": name, "n": seg.n, "created": time.time()})
        except BaseException:
            with self.lock:
                del self.sealed[sid]
            shutil.rmtree(seg.path, ignore_errors=True)
            raise
        # Queries that began before the flip still expect these rows in the growing segment.
        self.wait_readers()
        with self.lock:
            if self.growing is g:
                self.growing = Growing(self.dim, self.metric, self.cfg)
                self.growing.next_label = g.next_label
                row_of = {lab: row for row, lab in enumerate(labels)}  # dead rows moved with it
                self.dead_rows = OrderedDict(
                    (iid, (sid, row_of[pos], meta) if seg == GROWING else (seg, pos, meta))
                    for iid, (seg, pos, meta) in self.dead_rows.items()
                    if (seg != GROWING or pos in row_of) and (seg == GROWING or seg in self.sealed))
            self.stats["sealed"] += 1
            self.stats["seal_seconds"] += time.perf_counter() - t0
        return int(alive.sum())

    # --- reads -----------------------------------------------------------------------------------

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Per query: the best ``k`` (ids, distances, locations), best first."""
        ef = ef or self.cfg.ef
        qs = self.prepare(qs)
        with self.lock:
            sealed = list(self.sealed.values())
            growing = self.growing
        # outside the lock: a segment's first filtered query builds its columns from the catalog
        masks = [s.ok_mask(node, self.catalog.metadata_of, self.schema) for s in sealed]
        per_seg = []  # per sealed segment: (rows, dists) for all queries
        for s, ok in zip(sealed, masks, strict=True):
            if len(qs) > 1:  # numba prange over the queries
                per_seg.append(s.seg.search_batch(qs, k, ef, self.cfg.rerank, ok))
            else:
                r, d = s.seg.search(qs[0], k, ef, self.cfg.rerank, ok)
                per_seg.append((r[None, :], d[None, :]))
        out = []
        for i, q in enumerate(qs):
            cand: list[tuple[float, int, int]] = []
            for s, (rows, dist) in zip(sealed, per_seg, strict=True):
                iids = s.seg.iids
                cand += [(float(d), int(iids[r]), location(s.sid, int(r))) for r, d in zip(rows[i], dist[i], strict=True)
                         if r >= 0]
            gi, gd, gl = growing.search(q, k, ef, node)
            cand += list(zip(gd, gi, gl, strict=True))
            cand.sort()
            cand = cand[:k]
            out.append(TierAnswer([c[1] for c in cand], [c[0] for c in cand], False, [c[2] for c in cand]))
        return out

    # --- rewriting sealed segments (rewrite.py) -----------------------------------------------------

    def compact(self, threshold: float | None = None) -> dict[str, int]:
        """Rewrite sealed segments past ``threshold`` dead (default ``warm.compact_threshold``)."""
        return self.rewrite.compact(threshold)

    def repair(self) -> dict[str, Any]:
        """Rebuild damaged segments, and segments written before checksums, from the catalog."""
        return self.rewrite.repair()

    def merge_candidates(self) -> list[Sealed]:
        return self.rewrite.merge_candidates()

    def merge(self, victims: Sequence[Sealed], write_lock: Any, stop: Callable[[], bool] = lambda: False) -> int | None:
        """Merge small sealed segments into one (the maintenance thread; see rewrite.py)."""
        return self.rewrite.merge(victims, write_lock, stop)

    def info(self) -> dict[str, Any]:
        with self.lock:
            sealed = list(self.sealed.values())
            live = sum(int(s.alive.sum()) for s in sealed)
            rows = sum(s.seg.n for s in sealed)
            return {
                "segments": len(sealed),
                "sealed_rows": rows,
                "sealed_live": live,
                "sealed_dead": rows - live,
                "growing_rows": self.growing.rows,
                "growing_live": self.growing.alive,
                "disk_bytes": sum(s.seg.disk_bytes() for s in sealed),
                "damaged": {str(sid): why for sid, why in sorted(self.damaged.items())},
                "no_checksums": sum(s.seg.checksums is None and s.sid not in self.damaged for s in sealed),
                "resident_estimate_bytes": sum(s.seg.resident_bytes() for s in sealed)
                + self.growing.rows * (self.dim * 4 + self.cfg.m * 2 * 4 + 64),
                **self.stats,
            }

    def close(self) -> None:
        pass


__all__ = ["GROWING", "WarmTier"]
