"""Sealed warm segments as the warm tier serves them: a mapped :class:`~.segment.Segment` with its
alive mask and filter masks (:class:`Sealed`), or, in place of a damaged one, the rows the catalog
places there scanned exactly from the catalog's durable records (:class:`StandIn`).

A row of a sealed segment is never removed: it is *alive* while the catalog entry of its internal
id points at it, and the alive mask follows deletes, moves out and re-upserts (see tier.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ... import distance, filters, kernels
from ...catalog import TIER_WARM, Entry
from .segment import Segment, search_each

_MASK_CACHE = 16  # filter masks kept per segment (a service asks a handful of distinct filters)


def places(e: Entry | None, seg: int, pos: int) -> bool:
    """Does catalog entry ``e`` place its vector at warm row (seg, pos)? (A row is alive exactly
    while this holds.)"""
    return e is not None and e.tier == TIER_WARM and e.seg == seg and e.pos == pos


class Sealed:
    """One sealed segment with its alive mask and lazily built metadata columns."""

    def __init__(self, sid: int, seg: Segment | StandIn, alive: np.ndarray) -> None:
        self.sid, self.seg, self.alive = sid, seg, alive
        self.columns: dict[str, Any] | None = None
        self.masks: dict[filters.Node, np.ndarray] = {}
        # Query threads fill ``columns`` and ``masks``: the lock keeps the mask cache consistent
        # (an eviction iterating it while another thread inserts would raise) and builds the
        # columns once. A mask itself is computed outside it (the columns never change once built).
        self._lock = threading.Lock()

    def ok_mask(self, node: filters.Node, metas: Callable[[np.ndarray], list[dict]], schema: dict[str, str]) -> np.ndarray:
        if node == filters.TRUE:
            return self.alive
        with self._lock:
            m = self.masks.get(node)
            if m is None and self.columns is None:
                rows = metas(np.asarray(self.seg.iids))
                self.columns = {f: (filters.TagColumn if kind == "tag" else filters.NumericColumn).build(
                    [r.get(f) for r in rows], f) for f, kind in schema.items()}
            columns = self.columns
        if m is None:
            m = filters.mask(node, columns, self.seg.n)
            with self._lock:
                if node not in self.masks and len(self.masks) >= _MASK_CACHE:  # evict the oldest
                    self.masks.pop(next(iter(self.masks)))
                self.masks[node] = m
        return m & self.alive


class StandIn:
    """In place of a damaged sealed segment: the rows the catalog places in it, with their
    vectors from the catalog's durable records (prepared like the segment's), searched by an exact
    scan. Rows the catalog does not name (dead ones) are unknown here: id 0, never alive. Has the
    attributes of :class:`~.segment.Segment` that the warm tier uses, so compaction rewrites it
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
        return search_each(self.search, qs, k, ef, rerank, ok)

    def resident_bytes(self) -> int:
        return int(self.vectors.nbytes)

    def disk_bytes(self) -> int:
        try:
            return int(sum(f.stat().st_size for f in self.path.iterdir()))
        except OSError:
            return 0

    def verify_files(self, full: bool = True) -> tuple[list[str], int]:
        return [], 0


__all__ = ["Sealed", "StandIn"]
