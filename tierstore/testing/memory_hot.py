"""An in-memory hot tier: a drop-in for the Redis-backed :class:`tierstore.tiers.hot.HotTier` in tests.

``TierStore(config, hot_factory=MemoryHotTier)`` (or :func:`tierstore.testing.memory_store`)
runs a whole store -- catalog, warm segments, policy, migrations, the merged query -- with the
hot tier held in numpy arrays instead of Redis, so unit tests need no redis-server.

What it keeps from the Redis tier's contract (see tierstore/tiers/hot/base.py):

- it is an *index* of the catalog, never the truth: :meth:`sync` is state-based and idempotent
  ("make the index match the catalog for these ids": write the catalog's record when the
  catalog says hot, remove it otherwise) and clears the ids' pending marks;
- :meth:`write` is the upsert fast path (copies written before the caller's catalog commit,
  their pending marks handed back lazily through :meth:`take_synced`);
- every copy carries the catalog version it was written from (:meth:`stale`), and
  :meth:`protect` / :meth:`unprotect` keep a move's copies from reconciliation;
- the index starts empty, like a flushed Redis, so :meth:`open` refills it from the catalog
  (:meth:`rebuild`): a closed and reopened store answers as before;
- search is exact (the catalog stand-in's scan, :class:`tierstore.tiers.hot.standby.CatalogStandby`,
  re-scored on the catalog's float32 records), with the Redis tier's distance convention
  (cosine: 1 - cos; ip: 1 - dot; l2: squared distance) and the filter language's reference
  semantics (:func:`tierstore.filters.matches`).

Differences: nothing survives the process (there is no server), there is no stand-in mode
(``standby_reason`` is always None), and setting :attr:`MemoryHotTier.down` to a reason makes
every operation raise :class:`~tierstore.errors.TierUnavailableError`, as an unreachable Redis
does (for tests of partial answers and durable-but-unindexed writes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import filters
from ..catalog import TIER_HOT, Catalog
from ..config import HotConfig
from ..costs import bytes_per_vector
from ..errors import TierUnavailableError
from ..tiers.hot.common import MoveBookkeeping, MoveIds
from ..tiers.hot.standby import CatalogStandby

# One search answer: (internal ids, distances ascending, incomplete), as the Redis tier answers
Answer = tuple[list[int], list[float], bool]


class MemoryHotTier(MoveBookkeeping):
    """The hot tier in process memory (see the module docstring). Thread-safe.

    Constructed like the store's ``hot_factory``: ``MemoryHotTier(catalog=, config=, schema=,
    metric=)``."""

    name = "hot"
    backend = "memory"
    read_only = False
    standby_ok = False
    sharded = False

    def __init__(self, *, catalog: Catalog, config: HotConfig, schema: dict[str, str], metric: str) -> None:
        self.catalog = catalog
        self.cfg = config
        self.schema = dict(schema)
        self.metric = metric
        self.dim = catalog.dim
        self.prefix = config.prefix or f"mem:{catalog.uuid[:8]}:"
        self.server = None
        self.url = "memory://"
        self._lock = threading.RLock()  # index contents (as HotTier._lock: sync vs reconcile)
        self._index = CatalogStandby(catalog, metric, reason="memory")
        self._copies: dict[int, tuple[int, bytes]] = {}  # iid -> (catalog version, float32 bytes)
        self.ids = MoveIds()  # protected and synced ids, as in HotTier
        self.exclusive: Any = threading.RLock()  # the store passes its write lock
        self.down: str | None = None  # a reason: every operation raises TierUnavailableError
        self.closed = False
        self.stats = {"verifies": 0, "rebuilds": 0, "reconciled_added": 0, "reconciled_removed": 0,
                      "restarts": 0, "index_recreated": 0, "standby": 0, "version_mismatch": 0}

    # --- life cycle ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.down is not None:
            raise TierUnavailableError(f"hot tier: {self.down}", tier="hot")

    def open(self) -> None:
        """The index starts empty (a flushed Redis): refill it from the catalog."""
        self._check()
        self.rebuild()

    def note_unsynced(self) -> None:
        pass

    def mark_clean(self) -> bool:
        return False  # nothing outlives the process

    def close(self) -> None:
        self.closed = True

    @property
    def standby_reason(self) -> str | None:
        return None

    # --- verification and repair -------------------------------------------------------------------

    def verify(self) -> None:
        """Reconcile with the catalog when they may disagree (pending marks, other counts)."""
        self._check()
        with self._lock:
            self.stats["verifies"] += 1
            self.catalog.clear_pending(self.take_synced())
            if self.catalog.has_pending() or self.count() != self.catalog.count(TIER_HOT):
                self.reconcile()

    def reconcile(self) -> dict[str, int]:
        """Write missing copies and ones at another version than the catalog's, remove extra
        ones (protected ids excepted: their movers sync them), as HotTier.reconcile."""
        self._check()
        with self._lock:
            in_index = self.keys()
            versions = {e.iid: e.version for e in self._hot_entries()}
            pending = set(self.catalog.pending())
            stale = self.stale({i: v for i, v in versions.items() if i in in_index})
            self.stats["version_mismatch"] += len(stale)
            missing = (set(versions) - in_index) | (pending & set(versions)) | stale
            protected = self.ids.protected_now()
            extra = ((in_index - set(versions)) | (pending - set(versions))) - protected
            self._sync_now(sorted((missing | extra) - protected))
            self.catalog.clear_pending(sorted(pending - protected))
            self.stats["reconciled_added"] += len(missing)
            self.stats["reconciled_removed"] += len(extra)
            return {"added": len(missing), "removed": len(extra)}

    def rebuild(self) -> int:
        """Drop every copy and reload all hot records from the catalog. Returns #vectors."""
        self._check()
        with self._lock:
            self._index = CatalogStandby(self.catalog, self.metric, reason="memory")
            self._copies.clear()
            n = self._sync_now([e.iid for e in self._hot_entries()])
            self.catalog.clear_pending(self.catalog.pending())
            self.stats["rebuilds"] += 1
            return n

    def _hot_entries(self):
        last = None
        while True:
            batch = self.catalog.iter_entries(tiers=[TIER_HOT], start_after=last, limit=10_000)
            if not batch:
                return
            yield from batch
            last = batch[-1].iid

    # --- writes ----------------------------------------------------------------------------------

    def sync(self, iids: Sequence[int]) -> int:
        """Make the index match the catalog for ``iids``; clear their pending marks. Returns #written."""
        if not len(iids):
            return 0
        self._check()
        with self._lock:
            n = self._sync_now(iids)
            self.catalog.clear_pending(iids)
        return n

    def _sync_now(self, iids: Sequence[int]) -> int:
        put_ids, put_vecs, put_metas, gone = [], [], [], []
        with self._lock:
            with self.catalog.read() as txn:
                for iid in iids:
                    iid = int(iid)
                    e = self.catalog.entry(txn, iid)
                    raw = self.catalog.vector_raw(txn, iid) if e is not None and e.tier == TIER_HOT else None
                    if raw is None:
                        gone.append(iid)
                        self._copies.pop(iid, None)
                        continue
                    raw = bytes(raw)
                    self._copies[iid] = (e.version, raw)
                    put_ids.append(iid)
                    put_vecs.append(np.frombuffer(raw, np.float32))
                    put_metas.append(e.metadata if self.schema else {})
            if gone:
                self._index.remove(gone)
            if put_ids:
                self._index.put(put_ids, np.stack(put_vecs), put_metas)
        return len(put_ids)

    def write(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]],
              versions: Sequence[int]) -> int:
        """The upsert fast path: copies of rows the caller is about to commit as hot (at
        ``versions``); their pending marks are handed back by :meth:`take_synced`."""
        self._check()
        vecs = np.asarray(vectors, np.float32).reshape(len(iids), self.dim)
        with self._lock:
            for iid, v, ver in zip(iids, vecs, versions, strict=True):
                self._copies[int(iid)] = (int(ver), v.tobytes())
            self._index.put([int(i) for i in iids], vecs, [m if self.schema else {} for m in metas])
        self.ids.add_synced(iids)
        return len(iids)

    # --- reads -----------------------------------------------------------------------------------

    def search(self, q: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> Answer:
        return self.search_many(np.asarray(q).reshape(1, -1), k, node, ef)[0]

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[Answer]:
        """Exact KNN -> [(internal ids, distances ascending, incomplete)]; candidates still need
        the query's catalog check, as Redis's do."""
        self._check()
        answers = self._index.search_many(qs, k, node, ef)
        return [(list(a[0]), list(a[1]), False) for a in answers]

    def keys(self) -> set[int]:
        """Internal ids of every vector the index holds."""
        self._check()
        with self._lock:
            return set(self._copies)

    def stale(self, versions: dict[int, int]) -> set[int]:
        """Which of ``{iid: catalog version}`` the index holds at another version (or not at all)."""
        self._check()
        with self._lock:
            return {i for i, v in versions.items() if self._copies.get(i, (None, b""))[0] != v}

    def differs(self, iids: Sequence[int]) -> set[int]:
        """Which of ``iids`` the index holds with other vector bytes than the catalog's record."""
        self._check()
        out: set[int] = set()
        with self._lock, self.catalog.read() as txn:
            for iid in iids:
                raw = self.catalog.vector_raw(txn, iid)
                if raw is None:
                    continue
                held = self._copies.get(int(iid))
                if held is None or held[1] != bytes(raw):
                    out.add(iid)
        return out

    def count(self) -> int:
        with self._lock:
            return len(self._copies)

    def bytes_per_vector(self) -> int:
        """The Redis tier's estimate (so ``hot.capacity_bytes`` budgets come out the same)."""
        return bytes_per_vector("hot", self.dim, self.cfg.m)

    def info(self) -> dict[str, Any]:
        self._check()
        n = self.count()
        return {"backend": self.backend, "num_docs": n, "memory_bytes": n * (4 * self.dim + 8), **self.stats}


def memory_hot_factory(**kw: Any) -> MemoryHotTier:
    """``TierStore(..., hot_factory=memory_hot_factory)``: a fresh :class:`MemoryHotTier`."""
    return MemoryHotTier(**kw)


__all__ = ["MemoryHotTier", "memory_hot_factory"]
