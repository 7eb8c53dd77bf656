"""The warm tier's growing segment: the in-RAM hnswlib index new warm rows go to
(:class:`Growing`, the writer's), and a read-only process's copy of it (:class:`Mirror`).

Labels are catalog ``pos`` values (``entry.seg == GROWING``). At ``warm.growing_size`` rows the
writer seals the growing segment into a :class:`~.segment.Segment` (see tier.py); the durable copy
of every row stays in the catalog, so after a crash the segment is rebuilt from it. The growing
segment exists only in the writer's memory: a read-only process mirrors it from the catalog's
``growing`` table and durable records, committed rows only, searched exactly.
"""

from __future__ import annotations

import json
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
    """The in-RAM hnswlib segment. Labels are catalog ``pos`` values.

    Besides hnswlib's own ~1.8 KB per row (the float32 vector, its links, a lock), a row costs
    ~100 bytes here: its internal id and state in arrays indexed by ``label - base`` (the labels of
    one growing segment are one range, handed out by :meth:`WarmTier.reserve`), and its metadata
    as compact JSON bytes (decoded only when a new filter's mask is built). Dicts and sets per row
    cost ~570 bytes more, which at 200k growing rows was ~110 MiB of anonymous
    memory."""

    _PRESENT, _READY, _DEAD = 1, 2, 4  # state bits: label mapped / add_items done / marked deleted

    def __init__(self, dim: int, metric: str, cfg: WarmConfig) -> None:
        self.dim, self.metric, self.cfg = dim, metric, cfg
        self._resize = _ResizeLock()
        self.index = segment.new_index(dim, metric, 1024, cfg.m, cfg.ef_construction)
        # (base label, iid per label - base, state bits per label - base): replaced as one tuple
        # when it grows, so a search reads a consistent table without a lock
        self._tab: tuple[int, np.ndarray, np.ndarray] = (0, np.zeros(0, np.uint64), np.zeros(0, np.uint8))
        self._metas: list[bytes | None] = []  # per label - base: the row's metadata as JSON
        self.rows = 0  # labels mapped (alive and dead rows)
        self._ready = self._dead = 0
        self.next_label = 0
        # Filter -> which labels match (indexed by label - base), for the filters queries used
        # lately: hnswlib filters with a Python callback per visited node, and evaluating the
        # filter language there (or on every row for an exact scan) cost ~15 ms per query on 10k
        # growing rows. New rows are evaluated against the cached filters as they are added
        # (metadata never changes in place).
        self._masks: OrderedDict[filters.Node, np.ndarray] = OrderedDict()
        self._masks_lock = threading.Lock()  # a mask built while rows are added must not miss them

    @property
    def alive(self) -> int:
        return self._ready - self._dead

    # --- the label table (writes: under the warm tier's lock) ------------------------------------

    def _state(self, label: int) -> int:
        base, _, state = self._tab
        i = label - base
        return int(state[i]) if 0 <= i < len(state) else 0

    def has(self, label: int) -> bool:
        """Whether ``label`` is a row of this segment (alive or dead)."""
        return bool(self._state(label) & self._PRESENT)

    def iid_of(self, label: int) -> int | None:
        base, iids, state = self._tab
        i = label - base
        return int(iids[i]) if 0 <= i < len(state) and state[i] & self._PRESENT else None

    def iids_of(self, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """The internal ids of rows (labels that are rows of this segment)."""
        base, iids, _ = self._tab
        return iids[np.asarray(labels, np.int64) - base]

    def is_dead(self, label: int) -> bool:
        return bool(self._state(label) & self._DEAD)

    def _make_room(self, lo: int, hi: int) -> None:
        """Grow the table (and the metadata list, and the masks) to hold labels ``lo..hi``."""
        base, iids, state = self._tab
        if self.rows == 0 and not len(state):
            base = lo
        if lo >= base and hi - base < len(state):
            return
        new_base = min(base, lo)
        shift = base - new_base
        size = max(hi - new_base + 1, 2 * len(state), 1024)
        n_iids, n_state = np.zeros(size, np.uint64), np.zeros(size, np.uint8)
        n_iids[shift : shift + len(iids)] = iids
        n_state[shift : shift + len(state)] = state
        with self._masks_lock:  # table, metadata and masks change together (see _mask)
            for node, mask in list(self._masks.items()):
                grown = np.zeros(size, bool)
                grown[shift : shift + len(mask)] = mask
                self._masks[node] = grown  # a new array (readers may hold the old one)
            self._metas = [None] * shift + self._metas + [None] * (size - shift - len(self._metas))
            self._tab = (new_base, n_iids, n_state)

    def add(self, labels: Sequence[int], iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict]) -> None:
        if not len(labels):
            return
        need = self.rows + len(labels)
        if need > self.index.get_max_elements():
            size = max(need, 2 * self.index.get_max_elements())
            self._resize.exclusive(lambda: self.index.resize_index(size))
        lab = np.asarray(labels, np.int64)
        self._make_room(int(lab.min()), int(lab.max()))
        base, tab_iids, state = self._tab
        at = lab - base
        encoded = [json.dumps(md, separators=(",", ":")).encode() if md else None for md in metas]
        # The label table first: add_items makes rows searchable before it returns, and a
        # concurrent query must be able to resolve every label it meets.
        with self._masks_lock:
            for node, mask in self._masks.items():
                mask[at] = [filters.matches(node, md) for md in metas]
            tab_iids[at] = np.asarray(iids, np.uint64)
            for i, raw in zip(at.tolist(), encoded, strict=True):
                self._metas[i] = raw
            fresh = int(np.count_nonzero(~state[at] & self._PRESENT))
            state[at] = self._PRESENT  # (a label is never added twice while present)
            self.rows += fresh
        try:
            # bulk adds use both cores; small ones stay on the calling thread
            self.index.add_items(vectors, lab, num_threads=-1 if len(labels) >= 1000 else 1)
        except BaseException:
            state[at] = 0
            self.rows -= fresh
            raise
        state[at] |= self._READY
        self._ready += fresh
        self.next_label = max(self.next_label, int(lab.max()) + 1)

    def kill(self, label: int) -> None:
        st = self._state(label)
        if st & self._PRESENT and not st & self._DEAD:
            base, _, state = self._tab
            state[label - base] |= self._DEAD
            self._dead += bool(st & self._READY)
            self.index.mark_deleted(label)

    def revive(self, label: int) -> None:
        """Make a dead row alive again (:meth:`WarmTier.revive`, after it checked the vector)."""
        st = self._state(label)
        if st & self._DEAD:
            base, _, state = self._tab
            state[label - base] &= ~np.uint8(self._DEAD)
            self._dead -= bool(st & self._READY)

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

    def _mask(self, node: filters.Node) -> tuple[tuple[int, np.ndarray, np.ndarray], np.ndarray]:
        """(the label table, which of its rows match ``node``): the two belong together (a mask
        is indexed by label - the table's base)."""
        with self._masks_lock:
            tab = self._tab
            mask = self._masks.get(node)
            if mask is not None:
                self._masks.move_to_end(node)
                return tab, mask
            empty = filters.matches(node, {})
            mask = np.fromiter((filters.matches(node, json.loads(raw)) if raw is not None else empty
                                for raw in self._metas), bool, len(self._metas))
            self._masks[node] = mask
            while len(self._masks) > self._MASKS:
                self._masks.popitem(last=False)
            return tab, mask

    def _live(self, tab: tuple[int, np.ndarray, np.ndarray], mask: np.ndarray | None) -> np.ndarray:
        """Labels of ready, not deleted rows (matching ``mask``)."""
        base, _, state = tab
        ok = (state & (self._READY | self._DEAD)) == self._READY
        if mask is not None:
            ok = ok[: len(mask)] & mask[: len(ok)]
        return np.flatnonzero(ok) + base

    def _search(self, q: np.ndarray, k: int, ef: int, node: filters.Node) -> tuple[list[int], list[float], list[int]]:
        k = min(k, self.alive)
        self.index.set_ef(max(ef, k))
        flt = None
        if node != filters.TRUE:
            tab, mask = self._mask(node)
            rows = self._live(tab, mask).tolist()
            if len(rows) <= self._SCAN:  # few matches: an exact scan beats a filtered graph walk
                labels, dist = self._scan(q, rows)
                labels, dist = labels[:k], dist[:k]
                return self._answer(labels, dist)
            base, n = tab[0], len(mask)
            flt = lambda label: 0 <= label - base < n and mask[label - base]  # noqa: E731 - hnswlib callback
        try:
            labels, dist = self.index.knn_query(q, k=k, filter=flt, num_threads=1)
        except RuntimeError:  # fewer than k eligible rows: hnswlib refuses; ask for what exists
            labels, dist = self._search_all(q, node)
            return self._answer(labels, dist)
        return self._answer(labels[0].tolist(), dist[0].tolist())

    def _answer(self, labels: list[int], dist: list[float]) -> tuple[list[int], list[float], list[int]]:
        # (the table is read after the search: every label a search returns is in it)
        iids = self.iids_of(labels).tolist() if labels else []
        return iids, dist, [location(GROWING, int(x)) for x in labels]

    def _search_all(self, q: np.ndarray, node: filters.Node) -> tuple[list[int], list[float]]:
        if node == filters.TRUE:
            return self._scan(q, self._live(self._tab, None).tolist())
        tab, mask = self._mask(node)
        return self._scan(q, self._live(tab, mask).tolist())

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
    def rows(self) -> int:
        return len(self.row_of)

    def has(self, label: int) -> bool:
        return label in self.row_of

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
