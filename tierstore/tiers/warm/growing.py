"""The warm tier's growing segment: the in-RAM hnswlib index new warm rows go to
(:class:`Growing`, the writer's), and a read-only process's copy of it (:class:`Mirror`).

Labels are catalog ``pos`` values (``entry.seg == GROWING``). At ``warm.segment_size`` rows the
writer seals the growing segment into a :class:`~.segment.Segment` (see tier.py); the durable copy
of every row stays in the catalog, so after a crash the segment is rebuilt from it. The growing
segment exists only in the writer's memory: a read-only process mirrors it from the catalog's
``growing`` table and durable records, committed rows only, searched exactly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ... import distance, filters
from ...catalog import Catalog, location
from ...config import WarmConfig
from . import segment

GROWING = 0  # entry.seg of rows in the growing segment; sealed segment ids start at 1
_MASK_CACHE = 16  # filter masks the mirror keeps (a service asks a handful of distinct filters)


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


class Growing:
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


class Mirror:
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


__all__ = ["GROWING", "Growing", "Mirror"]
