"""The hot tier's stand-in while Redis cannot answer: an exact scan of the catalog's hot vectors.

Redis is an index of the catalog, and rebuilding that index is slow: an embedded redis-server
replaying its AOF re-inserts every vector into RediSearch's HNSW graph (about a minute per 100k
vectors on 2 cores), and a flushed or lost server is refilled from the catalog at the same pace.
Waiting for that in ``open()`` made a store with many hot vectors impossible to reopen. Instead,
while Redis is loading or being rebuilt, the hot tier answers from here:

- the catalog's float32 records of every hot vector, loaded once into one matrix (4 B x dim per
  hot vector plus 8 B id; read in one pass over the catalog, about a second per 100k vectors),
  released as soon as Redis is verified again;
- kept in step with the catalog by the hot tier's own write paths (``put`` before an upsert's
  commit, ``refresh`` after deletes and moves), exactly where Redis would have been written;
- searched exactly (one matrix product per batch, filters evaluated with the reference
  semantics of :func:`filters.matches` and cached per filter), and the best candidates re-scored
  on the catalog's records (:func:`distance.rerank_on_catalog`), so a distance is never from a
  vector the catalog does not hold.

The answers are complete and exact (better recall than Redis's HNSW), just slower: O(hot
vectors) per query, ~5-15 ms at 100k x 384. ``Hits.tiers["hot"].details["standby"]`` says when a
query was served this way. A read-only process with no Redis to read (no writer running) uses
the same stand-in, reloaded when the catalog changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import distance, filters
from .catalog import TIER_HOT, Catalog
from .query import TierAnswer

_OVERFETCH = 2  # candidates re-scored on the catalog's records, per result asked
_MASKS = 64  # filters whose row masks are remembered


def _meta(m: dict[str, Any] | bytes) -> dict[str, Any]:
    return m if isinstance(m, dict) else (json.loads(m) if m else {})


class CatalogStandby:
    """Exact search over the catalog's hot vectors (see the module docstring). Thread-safe."""

    def __init__(self, catalog: Catalog, metric: str, reason: str, owns: Any = None) -> None:
        self.catalog = catalog
        self.metric = metric
        self.dim = catalog.dim
        self.reason = reason  # shown in each answer's details
        self._owns = owns  # a cluster shard's filter of the ids it answers for (None: all)
        self._lock = threading.Lock()
        self._row: dict[int, int] = {}
        self._n = 0
        self._iids = np.zeros(0, np.uint64)
        self._mat = np.zeros((0, self.dim), np.float32)  # distance.prepare()d rows (cosine: unit)
        self._sq = np.zeros(0, np.float32)  # their squared norms (pairwise l2)
        self._live = np.zeros(0, bool)
        self._metas: list[dict[str, Any] | bytes] = []  # a row's metadata (bytes: JSON as loaded)
        self._masks: dict[str, np.ndarray] = {}
        self.loaded_gen = -1
        self.load_seconds = 0.0

    # --- contents --------------------------------------------------------------------------------

    def load(self) -> CatalogStandby:
        """(Re)load every hot vector from the catalog."""
        with self._lock:
            self._load_locked()
        return self

    def load_in_background(self) -> threading.Thread:
        """Start loading on a thread and return at once: every other call waits for the load
        (it holds the lock from now on), so writes made meanwhile apply on top of it."""
        self._lock.acquire()
        self.loaded_gen = self.catalog.generation()  # (what it will have loaded, at least)

        def run() -> None:
            try:
                self._load_locked()
            finally:
                self._lock.release()

        t = threading.Thread(target=run, name="tierstore-hot-standby-load", daemon=True)
        t.start()
        return t

    def _load_locked(self) -> None:  # (the caller holds self._lock)
        t0 = time.perf_counter()
        self._row.clear()
        self._n = 0
        self._metas = []
        self._masks.clear()
        self._grow(max(16, self.catalog.count(TIER_HOT)))
        self.loaded_gen = self.catalog.generation()
        iids, vecs = [], []
        for iid, vec, meta in self.catalog.tier_records(TIER_HOT):
            if self._owns is None or self._owns(iid):
                iids.append(iid)
                vecs.append(vec)
                self._metas.append(meta)  # JSON bytes, parsed when a filter needs them
        n = self._n = len(iids)
        self._grow(n)
        self._row = dict(zip(iids, range(n), strict=True))
        self._iids[:n] = np.asarray(iids, np.uint64)
        self._mat[:n] = np.frombuffer(b"".join(vecs), np.float32).reshape(n, self.dim)
        del vecs
        self._live[:n] = True
        distance.prepare_inplace(self.metric, self._mat[:n])  # (a 2nd copy of 100k+ rows would double the peak)
        self._sq[:n] = np.einsum("ij,ij->i", self._mat[:n], self._mat[:n])  # what pairwise l2 expands with
        self.load_seconds = time.perf_counter() - t0

    def __len__(self) -> int:
        with self._lock:
            return int(self._live[: self._n].sum())

    def put(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]]) -> None:
        """Vectors about to be committed as hot (the upsert and move paths call this where they
        would write Redis, before their catalog flip)."""
        with self._lock:
            for iid, v, m in zip(iids, vectors, metas, strict=True):
                self._set(int(iid), np.asarray(v, np.float32), m)
            self._masks.clear()

    def refresh(self, iids: Sequence[int]) -> None:
        """Bring ``iids`` in line with the catalog (hot: its record; otherwise: gone)."""
        with self.catalog.read() as txn:
            now = []
            for iid in iids:
                e = self.catalog.entry(txn, iid)
                raw = self.catalog.vector_raw(txn, iid) if e is not None and e.tier == TIER_HOT else None
                now.append((iid, None if raw is None else (np.frombuffer(raw, np.float32).copy(), e.metadata)))
        with self._lock:
            for iid, state in now:
                if state is None:
                    row = self._row.pop(iid, None)
                    if row is not None:
                        self._live[row] = False
                elif self._owns is None or self._owns(iid):
                    self._set(iid, *state)
            self._masks.clear()

    def _grow(self, need: int) -> None:
        if need <= len(self._iids):
            return
        cap = max(need, 2 * len(self._iids))
        for name, shape, dtype in (("_iids", (cap,), np.uint64), ("_mat", (cap, self.dim), np.float32),
                                   ("_sq", (cap,), np.float32), ("_live", (cap,), bool)):
            new = np.zeros(shape, dtype)
            new[: self._n] = getattr(self, name)[: self._n]
            setattr(self, name, new)

    def _set(self, iid: int, v: np.ndarray, meta: dict[str, Any]) -> None:
        row = self._row.get(iid)
        if row is None:
            row = self._row[iid] = self._n
            self._grow(self._n + 1)
            self._n += 1
            self._metas.append(meta)
        else:
            self._metas[row] = meta
        self._iids[row] = iid
        self._mat[row] = distance.prepare(self.metric, v[None, :])[0]
        self._sq[row] = float(np.dot(self._mat[row], self._mat[row]))
        self._live[row] = True

    # --- search ----------------------------------------------------------------------------------

    def _mask(self, node: filters.Node) -> np.ndarray | None:
        if node == filters.TRUE:
            return None
        key = repr(node)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.fromiter((filters.matches(node, _meta(m)) for m in self._metas), bool, self._n)
            if len(self._masks) >= _MASKS:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = mask
        return mask

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Exact KNN, one TierAnswer per query like a Redis answer (with ``details["standby"]``)."""
        details = {"standby": self.reason}
        if node == filters.FALSE:
            return [TierAnswer([], [], details=dict(details)) for _ in qs]
        qs = np.asarray(qs, np.float32).reshape(-1, self.dim)
        fetch = _OVERFETCH * k
        picks: list[list[int]] = []
        with self._lock:
            n = self._n
            if n:
                ok = self._live[:n].copy()
                mask = self._mask(node)
                if mask is not None:
                    ok &= mask
                d = distance.pairwise(self.metric, distance.prepare(self.metric, qs), self._mat[:n], self._sq[:n])
                d[:, ~ok] = np.inf
                take = min(fetch, n)
                for row in d:
                    part = np.argpartition(row, take - 1)[:take] if take < n else np.arange(n)
                    part = part[np.isfinite(row[part])]
                    picks.append((self._iids[part].tolist(), row[part].tolist()))
            else:
                picks = [([], []) for _ in qs]
        return [TierAnswer(*distance.rerank_on_catalog(self.catalog, self.metric, q, *pick, k), False, None,
                           dict(details)) for q, pick in zip(qs, picks, strict=True)]


# The re-score moved to tierstore.distance with the rest of the distance math; the old name stays.
rescore = distance.rerank_on_catalog

__all__ = ["CatalogStandby", "rescore"]
