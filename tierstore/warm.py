"""Warm tier: sealed HNSW segments on local disk (memory-mapped, numba) + one growing segment.

New warm vectors go to the *growing* segment: an in-RAM hnswlib index whose rows are labelled by
``entry.pos`` (``entry.seg == 0``). At ``warm.segment_size`` rows (and on ``flush``/``close``) it is
*sealed*: its graph is exported to a segment directory (segment.py) -- no rebuild -- and the
catalog entries move to ``(seg, row)`` in one transaction. The durable copy of every warm vector
stays in the catalog's records, so after a crash the growing segment is rebuilt from them and a
segment directory the catalog does not list is deleted.

Rows are never removed from a segment: a row is *alive* while the catalog entry of its internal
id points at it (tier warm, same seg and pos). Deletes, moves out and re-upserts (a new version
goes to the growing segment) only flip that, and the in-memory alive masks follow. Compaction
rewrites segments whose dead fraction passes ``warm.compact_threshold``.

Search returns each candidate with its location (:func:`catalog.location`), which query.py has the
catalog confirm, so a vector whose newest version lives elsewhere is never returned twice.

A *read-only* WarmTier (another process queries the store its writer owns) never writes or
deletes: it maps the sealed segments the catalog lists (:meth:`WarmTier.refresh` picks up new
ones and lets go of removed ones) and mirrors the growing segment -- which exists only in the
writer's memory -- from the catalog's ``growing`` table and durable records: committed rows only,
appended incrementally, searched exactly (:class:`_Mirror`). Its sealed rows all count as alive:
which of them still hold their id's current version is decided by the catalog check alone.

A sealed segment whose files fail their checksums (at its first map in a process, or in
:meth:`WarmTier.verify`) or cannot be mapped at all is *damaged*: it is logged, listed in
``info()["damaged"]`` and never searched again; a :class:`_StandIn` serves its rows instead --
the rows the catalog places there, with their vectors from the catalog's durable records, by an
exact scan -- until :meth:`WarmTier.repair` (``verify --repair``) or a compaction rewrites them
into a new segment through the compaction path.

>>> warm = WarmTier(path, catalog, cfg.warm, schema, "cosine", gate)       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import distance, filters, kernels, segment
from .catalog import TIER_WARM, Catalog, Entry, location
from .config import WarmConfig
from .errors import IntegrityError
from .query import TierAnswer

log = logging.getLogger("tierstore")

GROWING = 0  # entry.seg of rows in the growing segment; sealed segment ids start at 1
_MASK_CACHE = 16  # filter masks kept per segment (a service asks a handful of distinct filters)


def _names(e: Entry | None, seg: int, pos: int) -> bool:
    """Does catalog entry ``e`` place its vector at warm row (seg, pos)?"""
    return e is not None and e.tier == TIER_WARM and e.seg == seg and e.pos == pos


class _Sealed:
    """One sealed segment with its alive mask and lazily built metadata columns."""

    def __init__(self, sid: int, seg: segment.Segment, alive: np.ndarray) -> None:
        self.sid, self.seg, self.alive = sid, seg, alive
        self.columns: dict[str, Any] | None = None
        self.masks: dict[filters.Node, np.ndarray] = {}

    def ok_mask(self, node: filters.Node, metas: Callable[[np.ndarray], list[dict]], schema: dict[str, str]) -> np.ndarray:
        if node == filters.TRUE:
            return self.alive
        m = self.masks.get(node)
        if m is None:
            if self.columns is None:
                rows = metas(np.asarray(self.seg.iids))
                self.columns = {f: (filters.TagColumn if kind == "tag" else filters.NumericColumn).build(
                    [r.get(f) for r in rows], f) for f, kind in schema.items()}
            m = filters.mask(node, self.columns, self.seg.n)
            if len(self.masks) >= _MASK_CACHE:  # evict the oldest (tolerant of a concurrent evictor)
                self.masks.pop(next(iter(self.masks), None), None)
            self.masks[node] = m
        return m & self.alive


class _StandIn:
    """In place of a damaged sealed segment: the rows the catalog places in it, with their
    vectors from the catalog's durable records (prepared like the segment's), searched by an exact
    scan. Rows the catalog does not name (dead ones) are unknown here: id 0, never alive. Has the
    attributes of :class:`segment.Segment` that the warm tier uses, so compaction rewrites it
    like any segment (from these catalog vectors, never from the damaged files)."""

    checksums = None

    def __init__(self, path: Path, metric: str, iids: np.ndarray, vectors: np.ndarray) -> None:
        self.path, self.metric = path, metric
        self.metric_code = distance.code(metric)
        self.n = len(iids)
        self.iids, self.vectors = iids, vectors
        self.sqnorms = np.einsum("ij,ij->i", vectors, vectors).astype(np.float32)
        self.meta = {"n": self.n, "metric": metric, "stand_in": True}

    def search(self, q: np.ndarray, k: int, ef: int, rerank: int = 64,
               ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(self.iids != 0 if ok is None else ok).astype(np.int64)
        if not len(rows):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return kernels.exact_scan(np.ascontiguousarray(q, np.float32), self.vectors, rows, self.metric_code, k)

    def search_batch(self, qs: np.ndarray, k: int, ef: int, rerank: int = 64,
                     ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        out_r = np.full((len(qs), k), -1, np.int64)
        out_d = np.full((len(qs), k), np.inf, np.float32)
        for i, q in enumerate(qs):
            r, d = self.search(q, k, ef, rerank, ok)
            out_r[i, : len(r)], out_d[i, : len(r)] = r, d
        return out_r, out_d

    def resident_bytes(self) -> int:
        return int(self.vectors.nbytes)

    def disk_bytes(self) -> int:
        try:
            return int(sum(f.stat().st_size for f in self.path.iterdir()))
        except OSError:
            return 0

    def verify_files(self, full: bool = True) -> tuple[list[str], int]:
        return [], 0


class _ResizeLock:
    """Shared for searches, exclusive for ``resize_index`` (hnswlib reallocates its arrays there,
    which is unsafe under concurrent searches; adds and searches may overlap otherwise)."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    def acquire_read(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: not self._writer)
            self._readers += 1

    def release_read(self) -> None:
        with self._cv:
            self._readers -= 1
            if not self._readers:
                self._cv.notify_all()

    def exclusive(self, fn: Callable[[], None]) -> None:
        with self._cv:
            self._cv.wait_for(lambda: not self._writer)
            self._writer = True
            self._cv.wait_for(lambda: self._readers == 0)
        try:
            fn()
        finally:
            with self._cv:
                self._writer = False
                self._cv.notify_all()


class _Growing:
    """The in-RAM hnswlib segment. Labels are catalog ``pos`` values."""

    def __init__(self, dim: int, metric: str, cfg: WarmConfig) -> None:
        self.dim, self.metric, self.cfg = dim, metric, cfg
        self._resize = _ResizeLock()
        self.index = segment.new_index(dim, metric, 1024, cfg.m, cfg.ef_construction)
        self.iids: dict[int, int] = {}  # label -> internal id (alive and dead rows)
        self.meta: dict[int, dict] = {}
        self.dead: set[int] = set()
        self.ready: set[int] = set()  # labels add_items has finished with
        self.next_label = 0
        # Filter -> which labels match, for the filters queries used lately: hnswlib filters with
        # a Python callback per visited node, and evaluating the filter language there (or on
        # every row for an exact scan) cost ~15 ms per query on 10k growing rows. New rows are
        # evaluated against the cached filters as they are added (metadata never changes in place).
        self._masks: OrderedDict[filters.Node, np.ndarray] = OrderedDict()
        self._masks_lock = threading.Lock()  # a mask built while rows are added must not miss them

    @property
    def alive(self) -> int:
        return len(self.ready) - len(self.dead)

    def add(self, labels: Sequence[int], iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict]) -> None:
        need = len(self.iids) + len(labels)
        if need > self.index.get_max_elements():
            size = max(need, 2 * self.index.get_max_elements())
            self._resize.exclusive(lambda: self.index.resize_index(size))
        # The label maps first: add_items makes rows searchable before it returns, and a
        # concurrent query must be able to resolve every label it meets.
        top = max(labels) + 1 if len(labels) else 0
        with self._masks_lock:
            for node, mask in list(self._masks.items()):
                if top > len(mask):  # a new array (readers may hold the old one)
                    mask = np.concatenate([mask, np.zeros(max(top, 2 * len(mask)) - len(mask), bool)])
                mask[np.asarray(labels, np.int64)] = [filters.matches(node, md) for md in metas]
                self._masks[node] = mask
            for lab, iid, md in zip(labels, iids, metas, strict=True):
                self.iids[lab] = iid
                self.meta[lab] = md
        try:
            # bulk adds use both cores; small ones stay on the calling thread
            self.index.add_items(vectors, np.asarray(labels, np.int64), num_threads=-1 if len(labels) >= 1000 else 1)
        except BaseException:
            for lab in labels:
                self.iids.pop(lab, None)
                self.meta.pop(lab, None)
            raise
        self.ready.update(labels)
        self.next_label = max(self.next_label, max(labels) + 1)

    def kill(self, label: int) -> None:
        if label in self.iids and label not in self.dead:
            self.dead.add(label)
            self.index.mark_deleted(label)

    def search(self, q: np.ndarray, k: int, ef: int, node: filters.Node) -> tuple[list[int], list[float], list[int]]:
        if self.alive == 0:
            return [], [], []
        self._resize.acquire_read()
        try:
            return self._search(q, k, ef, node)
        finally:
            self._resize.release_read()

    _MASKS = 64  # filters remembered
    _SCAN = 2048  # matching rows up to which a filtered query scans them exactly instead of walking the graph

    def _mask(self, node: filters.Node) -> np.ndarray:
        with self._masks_lock:
            mask = self._masks.get(node)
            if mask is not None:
                self._masks.move_to_end(node)
                return mask
            mask = np.zeros(max(1024, max(self.meta, default=0) + 1), bool)
            for lab, md in self.meta.items():
                if filters.matches(node, md):
                    mask[lab] = True
            self._masks[node] = mask
            while len(self._masks) > self._MASKS:
                self._masks.popitem(last=False)
            return mask

    def _search(self, q: np.ndarray, k: int, ef: int, node: filters.Node) -> tuple[list[int], list[float], list[int]]:
        k = min(k, self.alive)
        self.index.set_ef(max(ef, k))
        flt = None
        if node != filters.TRUE:
            mask = self._mask(node)
            ready, dead = self.ready, self.dead
            rows = [lab for lab in np.flatnonzero(mask).tolist() if lab in ready and lab not in dead]
            if len(rows) <= self._SCAN:  # few matches: an exact scan beats a filtered graph walk
                labels, dist = self._scan(q, rows)
                labels, dist = labels[:k], dist[:k]
                return [self.iids[x] for x in labels], dist, [location(GROWING, x) for x in labels]
            n = len(mask)
            flt = lambda label: label < n and mask[label]  # noqa: E731 - hnswlib callback
        try:
            labels, dist = self.index.knn_query(q, k=k, filter=flt, num_threads=1)
        except RuntimeError:  # fewer than k eligible rows: hnswlib refuses; ask for what exists
            labels, dist = self._search_all(q, node)
            return [self.iids[int(x)] for x in labels], dist, [location(GROWING, int(x)) for x in labels]
        labels, dist = labels[0].tolist(), dist[0].tolist()
        return [self.iids[x] for x in labels], dist, [location(GROWING, x) for x in labels]

    def _search_all(self, q: np.ndarray, node: filters.Node) -> tuple[list[int], list[float]]:
        dead = self.dead
        if node == filters.TRUE:
            return self._scan(q, [lab for lab in list(self.ready) if lab not in dead])
        mask = self._mask(node)
        return self._scan(q, [lab for lab in np.flatnonzero(mask).tolist() if lab in self.ready and lab not in dead])

    def _scan(self, q: np.ndarray, labels: list[int]) -> tuple[list[int], list[float]]:
        if not labels:
            return [], []
        vecs = self.index.get_items(labels, return_type="numpy")
        d = distance.exact_prepared(self.metric, vecs, q)
        order = np.argsort(d, kind="stable")
        return [labels[i] for i in order], d[order].astype(np.float32).tolist()


class _Mirror:
    """A read-only process's copy of the writer's growing segment: the rows the catalog's
    ``growing`` table lists, with their vectors from the durable records, searched exactly (a
    flat scan: no graph to build per process). Rows only ever come from committed catalog
    transactions, so a half-written row is never seen. Labels are the catalog ``pos``."""

    def __init__(self, dim: int, metric: str) -> None:
        self.dim, self.metric = dim, metric
        self._lock = threading.Lock()
        self._reset()

    def _reset(self, cap: int = 256) -> None:
        self.vecs = np.zeros((cap, self.dim), np.float32)
        self.labels = np.zeros(cap, np.int64)
        self.rowiids = np.zeros(cap, np.uint64)
        self.live = np.zeros(cap, bool)
        self.metas: list[dict] = []
        self.n = 0
        self.row_of: dict[int, int] = {}  # label -> row, alive rows only
        self.masks: dict[filters.Node, np.ndarray] = {}
        self.max_label = -1
        self.gen = -1  # catalog growing generation of the last full listing

    @property
    def iids(self) -> dict[int, int]:
        return self.row_of

    @property
    def alive(self) -> int:
        return len(self.row_of)

    def sync(self, catalog: Catalog, txn: Any, prepare: Callable[[np.ndarray], np.ndarray]) -> None:
        """Catch up with the catalog in ``txn``: append new rows; after anything but appends
        (rows sealed, moved out, deleted, the writer reopened) re-list every label."""
        raw = txn.get(b"growing_gen", db=catalog.meta_db)
        gen = 0 if raw is None else int(bytes(raw))
        with self._lock:
            if gen != self.gen:
                rows = catalog.growing_rows(txn)
                want = dict(zip(rows["label"].tolist(), rows["iid"].tolist(), strict=True))
                for lab, r in list(self.row_of.items()):
                    if want.get(lab) != int(self.rowiids[r]):
                        self.live[r] = False
                        del self.row_of[lab]
                new = [(lab, iid) for lab, iid in want.items() if lab not in self.row_of]
                self.gen = gen
                self.max_label = max(want, default=-1)
                dead = self.n - len(self.row_of)
                if dead > max(1024, len(self.row_of)):  # mostly dead (after a seal): start over
                    self._reset()
                    self.gen, self.max_label = gen, max(want, default=-1)
                    new = list(want.items())
            else:
                rows = catalog.growing_rows(txn, after=self.max_label)
                new = list(zip(rows["label"].tolist(), rows["iid"].tolist(), strict=True))
                if new:
                    self.max_label = max(self.max_label, new[-1][0])
            if not new:
                return
            vecs, metas, labels, iids = [], [], [], []
            for lab, iid in new:
                e = catalog.entry(txn, iid)
                vec = catalog.vector(txn, iid)
                if e is None or vec is None:  # cannot happen in one snapshot; be safe
                    continue
                vecs.append(vec)
                metas.append(e.metadata)
                labels.append(lab)
                iids.append(iid)
            if not vecs:
                return
            self._append(labels, iids, prepare(np.stack(vecs)), metas)

    def _append(self, labels: list[int], iids: list[int], vecs: np.ndarray, metas: list[dict]) -> None:
        n, m = self.n, len(labels)
        if n + m > len(self.live):  # grow into new arrays: a search holding the old ones is fine
            cap = max(n + m, 2 * len(self.live))
            old = (self.vecs, self.labels, self.rowiids, self.live)
            self.vecs = np.zeros((cap, self.dim), np.float32)
            self.labels = np.zeros(cap, np.int64)
            self.rowiids = np.zeros(cap, np.uint64)
            self.live = np.zeros(cap, bool)
            for new, o in zip((self.vecs, self.labels, self.rowiids, self.live), old, strict=True):
                new[:n] = o[:n]
        self.vecs[n : n + m] = vecs
        self.labels[n : n + m] = labels
        self.rowiids[n : n + m] = np.asarray(iids, np.uint64)
        self.metas.extend(metas)
        for i, lab in enumerate(labels):
            self.row_of[lab] = n + i
        self.live[n : n + m] = True  # rows complete before they are counted
        self.n = n + m

    def search(self, q: np.ndarray, k: int, ef: int, node: filters.Node) -> tuple[list[int], list[float], list[int]]:
        with self._lock:
            n, vecs, labels, rowiids, live, metas = self.n, self.vecs, self.labels, self.rowiids, self.live, self.metas
            ok = live[:n].copy()
            if node != filters.TRUE and n:
                m = self.masks.get(node)
                if m is None or len(m) < n:
                    have = 0 if m is None else len(m)
                    more = np.fromiter((filters.matches(node, md) for md in metas[have:n]), bool, n - have)
                    m = more if m is None else np.concatenate([m, more])
                    if len(self.masks) >= _MASK_CACHE:
                        self.masks.pop(next(iter(self.masks)))
                    self.masks[node] = m
                ok &= m[:n]
        rows = np.flatnonzero(ok)
        if not len(rows):
            return [], [], []
        d = distance.exact_prepared(self.metric, vecs[rows], q)
        if len(d) > k:
            top = np.argpartition(d, k - 1)[:k]
            rows, d = rows[top], d[top]
        order = np.argsort(d, kind="stable")
        rows, d = rows[order], d[order]
        labs = labels[rows].tolist()
        return rowiids[rows].tolist(), d.astype(np.float32).tolist(), [location(GROWING, lab) for lab in labs]


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
        self._wait_readers = wait_readers  # blocks until queries that began earlier are done
        self._lock = threading.RLock()
        self.sealed: dict[int, _Sealed] = {}
        self.growing: Any = _Mirror(self.dim, metric) if read_only else _Growing(self.dim, metric, config)
        # iid -> (seg, pos) of its last dead warm row: a vector that comes back to warm unchanged
        # (the policy moving it hot -> warm after warm -> hot, or cold -> warm) is revived there
        # instead of being inserted into an HNSW graph again (in RAM only: a cache, not state)
        self._dead_rows: dict[int, tuple[int, int, bytes]] = {}  # iid -> (seg, pos, metadata JSON)
        self.stats = {"sealed": 0, "compacted": 0, "seal_seconds": 0.0, "revived": 0, "repaired": 0}
        self.damaged: dict[int, str] = {}  # sealed segment id -> why it is not served (see _StandIn)
        self._load()

    # --- opening ---------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.read_only:
            self.refresh()
            return
        listed = self.catalog.segments()
        bad: dict[int, str] = {}
        for sid, info in sorted(listed.items()):
            try:
                seg = segment.Segment.open(self.root / info["dir"])
            except IntegrityError as exc:  # a damaged segment must not make the store unusable
                bad[sid] = str(exc).removeprefix(f"warm segment {self.root / info['dir']}: ")
                continue
            self.sealed[sid] = _Sealed(sid, seg, self._alive_rows(sid, seg))
        if bad:
            self._damage(bad)
        keep = {info["dir"] for info in listed.values()}
        for d in self.root.iterdir():  # crash leftovers: half-written or never-recorded segments
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
        # Rebuild the growing segment from the durable records (empty after a clean close).
        labels, iids, vecs, metas = [], [], [], []
        last = None
        while True:
            batch = self.catalog.iter_entries(tiers=[TIER_WARM], start_after=last, limit=10_000)
            if not batch:
                break
            last = batch[-1].iid
            with self.catalog.read() as txn:
                for e in batch:
                    if e.seg == GROWING:
                        labels.append(e.pos)
                        iids.append(e.iid)
                        vecs.append(self.catalog.vector(txn, e.iid))
                        metas.append(e.metadata)
        if labels:
            self.growing.add(labels, iids, self.prepare(np.stack(vecs)), metas)
        self.catalog.reset_growing()  # the table read-only processes mirror: exactly these rows

    def refresh(self, sealed: bool = True) -> None:
        """Read-only: follow the catalog -- map sealed segments it lists that are new, let go of
        those it no longer lists (their files may be gone: a mapping stays readable on Linux),
        and catch the growing mirror up. ``sealed=False``: only the growing segment (nothing can
        have been sealed or compacted since the last refresh)."""
        if sealed:
            listed = self.catalog.segments()
            with self._lock:
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
                with self._lock:
                    self.sealed[sid] = _Sealed(sid, seg, np.ones(seg.n, bool))
            if bad:
                self._damage(bad)
            with self._lock:
                for sid in have - set(listed):
                    del self.sealed[sid]
                    self.damaged.pop(sid, None)
        with self.catalog.read() as txn:
            self.growing.sync(self.catalog, txn, self.prepare)

    def _stand_ins(self, sids: Sequence[int]) -> dict[int, _Sealed]:
        """A :class:`_StandIn` per damaged segment, from the catalog (one pass over warm entries)."""
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
            out[sid] = _Sealed(sid, _StandIn(self.root / name, self.metric, iids, vecs), known)  # type: ignore[arg-type]
        return out

    def _damage(self, reasons: dict[int, str], quiet: bool = False) -> None:
        """Stop serving these sealed segments: stand-ins from the catalog take their place."""
        for sid, why in sorted(reasons.items()):
            if not quiet:
                log.warning("warm segment %d is damaged and no longer served (its rows are scanned from the "
                            "catalog until `tierstore verify --repair` rebuilds it): %s", sid, why)
        stand = self._stand_ins(sorted(reasons))
        with self._lock:
            self.damaged.update(reasons)
            self.sealed.update(stand)

    def verify(self, deep: bool = True) -> dict[str, Any]:
        """Compare every sealed segment's files with its checksums (``deep``: every byte; else the
        checksum table, sizes and meta.json). A segment that fails stops being served (see
        :class:`_StandIn`). Returns counts and ``problems``."""
        with self._lock:
            sealed = dict(self.sealed)
            damaged = dict(self.damaged)
        found: dict[int, str] = {}
        no_sums: list[int] = []
        checked = 0
        for sid, s in sorted(sealed.items()):
            if sid in damaged:
                continue
            errs, read = s.seg.verify_files(full=deep)
            checked += read
            if errs:
                found[sid] = "; ".join(errs)
            elif s.seg.checksums is None:
                no_sums.append(sid)
        if found:
            self._damage(found)
            damaged.update(found)
        problems = [f"warm segment {sid} ({sealed[sid].seg.path.name}): {why} -- not served; its rows are scanned "
                    f"exactly from the catalog until `tierstore verify --repair` rebuilds it"
                    for sid, why in sorted(damaged.items()) if sid in sealed]
        return {"segments": len(sealed), "checked_bytes": checked, "no_checksums": no_sums,
                "damaged": sorted(damaged), "problems": problems}

    def repair(self) -> dict[str, Any]:
        """Rebuild every damaged segment, and every segment written before checksums existed, from
        the catalog (its rows' durable records) through the compaction path: the rows are copied
        into the growing segment, flipped there in one catalog transaction that also drops the old
        segment, the old directory goes after the reader grace, and the growing segment is sealed
        (with checksums). A crash in between leaves rows the next open rebuilds from the catalog."""
        with self._lock:
            legacy = {sid: "no checksums" for sid, s in self.sealed.items()
                      if sid not in self.damaged and s.seg.checksums is None}
        if legacy:  # their files were never checked: rebuild from the catalog, not from them
            self._damage(legacy, quiet=True)
        with self._lock:
            why = {sid: r for sid, r in self.damaged.items() if sid in self.sealed}
            victims = [self.sealed[sid] for sid in sorted(why)]
        kept, _ = self._rewrite(victims)
        self.stats["repaired"] += len(victims)
        return {"rebuilt": {str(sid): r for sid, r in why.items()}, "rows": kept}

    def _alive_rows(self, sid: int, seg: segment.Segment) -> np.ndarray:
        alive = np.zeros(seg.n, bool)
        iids = np.asarray(seg.iids)
        with self.catalog.read() as txn:
            for row in range(seg.n):
                alive[row] = _names(self.catalog.entry(txn, int(iids[row])), sid, row)
        return alive

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """What the warm tier indexes: unit vectors under cosine, the vectors as given otherwise."""
        return distance.prepare(self.metric, vectors)

    # --- writes (called by the store under its write lock) ---------------------------------------

    def reserve(self, n: int) -> list[int]:
        """Growing-segment labels for n new rows (their catalog ``pos``)."""
        with self._lock:
            start = self.growing.next_label
            self.growing.next_label += n
            return list(range(start, start + n))

    def add(self, labels: Sequence[int], iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict]) -> None:
        """Index rows in the growing segment (before their catalog flip: copy, then flip)."""
        with self._lock:
            self.growing.add(labels, iids, self.prepare(vectors), metas)

    def discard(self, labels: Sequence[int]) -> None:
        """Growing rows added for a write that then failed before its catalog flip."""
        with self._lock:
            for lab in labels:
                self.growing.kill(lab)

    def kill(self, entries: Sequence[Entry], reusable: bool = True) -> None:
        """Rows that no longer hold the current version: mask them (after the reader grace).
        ``reusable``: remember them, so the same vector coming back can be revived in place."""
        with self._lock:
            for e in entries:
                if e.seg == GROWING:
                    self.growing.kill(e.pos)
                elif e.seg in self.sealed:
                    self.sealed[e.seg].alive[e.pos] = False
                else:
                    continue
                if reusable:
                    self._dead_rows[e.iid] = (e.seg, e.pos, e.meta)
                else:
                    self._dead_rows.pop(e.iid, None)

    def revive(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[bytes]) -> list[tuple[int, int] | None]:
        """For each row: the (seg, pos) of a dead warm row of the same id that holds exactly this
        vector and metadata, made alive again in place (its graph node never left the graph), or
        None (the caller inserts it). Part of the copy step of a move: until the caller's catalog
        flip, queries drop the row by the catalog check; on failure the caller calls
        :meth:`unrevive`. A sealed row is revived only while its segment has built no filter
        columns (they were read from the catalog at build time, when this row was dead)."""
        prepared = self.prepare(vectors)
        out: list[tuple[int, int] | None] = [None] * len(iids)
        with self._lock:
            g = self.growing
            for i, iid in enumerate(iids):
                dead = self._dead_rows.get(iid)
                if dead is None or dead[2] != metas[i]:
                    continue
                seg, pos, _ = dead
                if seg == GROWING:
                    if pos not in g.dead or g.iids.get(pos) != iid:
                        continue
                    g.index.unmark_deleted(pos)  # (hnswlib does not read deleted rows back)
                    if not np.array_equal(np.asarray(g.index.get_items([pos]), np.float32)[0], prepared[i]):
                        g.index.mark_deleted(pos)
                        continue
                    g.dead.discard(pos)
                else:
                    sd = self.sealed.get(seg)
                    if sd is None or sd.alive[pos] or int(sd.seg.iids[pos]) != iid:
                        continue
                    if (sd.columns is not None and self.schema) or not np.array_equal(
                            np.asarray(sd.seg.vectors[pos]), prepared[i]):
                        continue
                    sd.alive[pos] = True
                del self._dead_rows[iid]
                out[i] = (seg, pos)
            self.stats["revived"] += sum(x is not None for x in out)
        return out

    def unrevive(self, locs: Sequence[tuple[int, int] | None]) -> None:
        """Undo :meth:`revive` for a move that failed before its catalog flip."""
        with self._lock:
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
            return None if e.pos in self.growing.iids else "not in the warm growing segment"
        sd = self.sealed.get(e.seg)
        if sd is None or e.pos >= sd.seg.n or int(sd.seg.iids[e.pos]) != e.iid:
            return f"warm segment {e.seg} row {e.pos} does not hold it"
        return None

    def needs_seal(self) -> bool:
        return len(self.growing.iids) >= self.cfg.segment_size

    def seal(self) -> int:
        """Turn the growing segment into a sealed one. Returns the number of rows sealed.

        Called with the store's write lock held (no concurrent writes); queries keep running:
        the slow parts (export, segment write) take no lock, and the new segment is visible
        before the catalog flip, so every query finds each row where its snapshot says."""
        g = self.growing
        if not g.alive:
            return 0
        t0 = time.perf_counter()
        graph = segment.export_graph(g.index, self.dim)
        labels = graph["labels"].tolist()
        iids = np.array([g.iids[x] for x in labels], np.uint64)
        with self.catalog.write() as txn:
            sid = self.catalog.next_segment_id(txn)
        name = f"seg-{sid:08d}"
        seg = segment.Segment.open(segment.write_graph(self.root / name, iids, graph, metric=self.metric),
                                   check=False)  # just written and hashed by this process
        with self.catalog.read() as txn:  # rows that still hold their id's current version
            alive = np.array([_names(self.catalog.entry(txn, iid), GROWING, lab)
                              for lab, iid in zip(labels, iids.tolist(), strict=True)], bool)
        with self._lock:  # visible first: until the flip its rows fail the catalog check
            self.sealed[sid] = _Sealed(sid, seg, alive)
        try:
            with self.catalog.write() as txn:
                for row in np.flatnonzero(alive).tolist():
                    e = self.catalog.entry(txn, int(iids[row]))
                    self.catalog.put_entry(txn, e._replace(seg=sid, pos=row))
                self.catalog.put_segment(txn, sid, {"dir": name, "n": seg.n, "created": time.time()})
        except BaseException:
            with self._lock:
                del self.sealed[sid]
            shutil.rmtree(seg.path, ignore_errors=True)
            raise
        # Queries that began before the flip still expect these rows in the growing segment.
        self._wait_readers()
        with self._lock:
            if self.growing is g:
                self.growing = _Growing(self.dim, self.metric, self.cfg)
                self.growing.next_label = g.next_label
                row_of = {lab: row for row, lab in enumerate(labels)}  # dead rows moved with it
                self._dead_rows = {iid: ((sid, row_of[pos], meta) if seg == GROWING else (seg, pos, meta))
                                   for iid, (seg, pos, meta) in self._dead_rows.items()
                                   if (seg != GROWING or pos in row_of) and (seg == GROWING or seg in self.sealed)}
            self.stats["sealed"] += 1
            self.stats["seal_seconds"] += time.perf_counter() - t0
        return int(alive.sum())

    # --- reads -----------------------------------------------------------------------------------

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Per query: the best ``k`` (ids, distances, locations), best first."""
        ef = ef or self.cfg.ef
        qs = self.prepare(qs)
        with self._lock:
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

    # --- maintenance -------------------------------------------------------------------------------

    def compact(self, threshold: float | None = None) -> dict[str, int]:
        """Rewrite sealed segments whose dead fraction exceeds ``threshold`` (default
        ``warm.compact_threshold``): their live rows are copied into the growing segment, flipped
        there in the catalog, and the growing segment is sealed. Returns counts."""
        threshold = self.cfg.compact_threshold if threshold is None else threshold
        with self._lock:
            victims = [s for s in self.sealed.values() if s.seg.n and 1 - s.alive.mean() > threshold]
            # many small segments (frequent flushes) cost one kernel call each per query: merge them
            small = [s for s in self.sealed.values() if s not in victims and s.seg.n < self.cfg.segment_size // 4]
            if len(small) >= 2:
                victims += small
            # damaged segments (served by their stand-ins) are rewritten from the catalog too
            victims += [s for sid, s in self.sealed.items() if sid in self.damaged and s not in victims]
        kept, dropped = self._rewrite(victims)
        if victims:
            self.stats["compacted"] += len(victims)
        return {"segments": len(victims), "rows_kept": kept, "rows_dropped": dropped}

    def _rewrite(self, victims: Sequence[_Sealed]) -> tuple[int, int]:
        """Copy the live rows of ``victims`` into the growing segment, flip them there, drop the
        old segments after the reader grace, then seal. Returns (rows kept, rows dropped)."""
        # never copy damaged bytes into a new segment: a victim that fails its checksums is
        # rewritten from the catalog's records instead (hashing costs far less than the rebuild)
        bad = {}
        for s in victims:
            if s.sid not in self.damaged and s.seg.checksums is not None:
                errs, _ = s.seg.verify_files()
                if errs:
                    bad[s.sid] = "; ".join(errs)
        if bad:
            self._damage(bad)  # logged; their stand-ins (catalog rows) are what gets copied below
            with self._lock:
                victims = [self.sealed.get(s.sid, s) if s.sid in bad else s for s in victims]
        kept = dropped = 0
        for s in victims:  # the store's write lock is held: no concurrent writes, queries go on
            rows = np.flatnonzero(s.alive)
            live_iids = np.asarray(s.seg.iids)[rows]  # uint64: keep it an array until tolist()
            iids = live_iids.tolist()
            labels = self.reserve(len(rows))
            if len(rows):
                self.growing.add(labels, iids, np.asarray(s.seg.vectors)[rows], self.catalog.metadata_of(live_iids))
            with self.catalog.write() as txn:  # copy done: flip each live row to its new home
                for lab, iid, row in zip(labels, iids, rows.tolist(), strict=True):
                    e = self.catalog.entry(txn, iid)
                    if _names(e, s.sid, row):
                        self.catalog.put_entry(txn, e._replace(seg=GROWING, pos=lab))
                        kept += 1
                    else:
                        self.growing.kill(lab)
                self.catalog.delete_segment(txn, s.sid)
            dropped += s.seg.n - len(rows)
            self._wait_readers()  # nobody may still be reading the old rows
            with self._lock:
                del self.sealed[s.sid]
                self.damaged.pop(s.sid, None)
            shutil.rmtree(s.seg.path, ignore_errors=True)
        if victims:
            self.seal()
        return kept, dropped

    def info(self) -> dict[str, Any]:
        with self._lock:
            sealed = list(self.sealed.values())
            live = sum(int(s.alive.sum()) for s in sealed)
            rows = sum(s.seg.n for s in sealed)
            return {
                "segments": len(sealed),
                "sealed_rows": rows,
                "sealed_live": live,
                "sealed_dead": rows - live,
                "growing_rows": len(self.growing.iids),
                "growing_live": self.growing.alive,
                "disk_bytes": sum(s.seg.disk_bytes() for s in sealed),
                "damaged": {str(sid): why for sid, why in sorted(self.damaged.items())},
                "no_checksums": sum(s.seg.checksums is None and s.sid not in self.damaged for s in sealed),
                "resident_estimate_bytes": sum(s.seg.resident_bytes() for s in sealed)
                + len(self.growing.iids) * (self.dim * 4 + self.cfg.m * 2 * 4 + 64),
                **self.stats,
            }

    def close(self) -> None:
        pass


__all__ = ["GROWING", "WarmTier"]
