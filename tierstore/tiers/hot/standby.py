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

Here: :class:`CatalogStandby` (the exact scan) and :class:`StandbyServing`, the part of
:class:`~tierstore.tiers.hot.base.HotTier` that switches to the stand-in and back (deciding at
:meth:`~StandbyServing.open`, warming Redis up in the background, probing for a read-only process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from ... import distance, filters
from ...catalog import TIER_HOT, Catalog
from ...errors import TierUnavailableError
from ..protocol import TierAnswer
from .common import UNAVAILABLE, InStandby, Stale

log = logging.getLogger("tierstore.hot")

_OVERFETCH = 2  # candidates re-scored on the catalog's records, per result asked
_MASKS = 64  # filters whose row masks are remembered
# A store whose Redis holds none of its vectors rebuilds in the background (answering from the
# catalog meanwhile) above this many hot vectors; below, open() rebuilds before it returns.
_REBUILD_IN_BACKGROUND = 2000
_PROBE_EVERY = 5.0  # read-only stand-in: seconds between checks whether Redis is back
_DEATHS_BEFORE_DISCARD = 3  # an embedded server dying this often while loading has its data set aside


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
                    self._drop(iid)
                elif self._owns is None or self._owns(iid):
                    self._set(iid, *state)
            self._masks.clear()

    def remove(self, iids: Sequence[int]) -> None:
        """Forget ``iids`` (whatever the catalog says: for an index kept by its own writes)."""
        with self._lock:
            for iid in iids:
                self._drop(int(iid))
            self._masks.clear()

    def _drop(self, iid: int) -> None:  # (the caller holds self._lock)
        row = self._row.pop(iid, None)
        if row is not None:
            self._live[row] = False

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


class StandbyServing:
    """The hot tier's switch to the catalog stand-in and back: a mixin of
    :class:`~tierstore.tiers.hot.base.HotTier` (its connection, :meth:`verify`, :meth:`call` and
    :meth:`sync_now` are what it switches around). The stand-in's state, set up by
    :meth:`_init_standby`: ``_standby`` (the :class:`CatalogStandby` answering now, or None) and
    ``_dirty`` (ids written to it instead of Redis, synced from the catalog when Redis is back).
    ``_standby_lock`` orders the switch back against writers; the store's write lock
    (``exclusive``) keeps writes out of the switch.

    It runs on HotTier's machinery: ``r``, ``_lock``, ``_closing``, ``_verified``/``_conn_gen``,
    ``ids``, ``stats``, :meth:`call`, :meth:`verify`, :meth:`sync_now`, :meth:`unavailable` and
    the helpers ``_verify_read_only``, ``_stamp_serving``, ``_restart_embedded``,
    ``_own_pending``, ``_catalog_hot_count``, ``_search_many``."""

    def _init_standby(self) -> None:
        self._standby: CatalogStandby | None = None
        self._standby_lock = threading.Lock()
        self._dirty: set[int] = set()
        self._warmer: threading.Thread | None = None
        self._standby_loader: threading.Thread | None = None
        self._next_probe = 0.0

    def open(self) -> None:
        """Connect and verify now (reconciling if needed). When that would take long -- Redis
        is loading its data (an AOF replay rebuilds every HNSW graph), or holds none of this
        store's vectors and must be refilled -- answer from the catalog (the stand-in) and
        finish in the background instead, so the store opens in seconds at any size."""
        if self.read_only:
            try:
                self.call(lambda: None)
            except TierUnavailableError as exc:  # e.g. no writer running: nobody serves Redis
                if not self.standby_ok:
                    raise
                self._enter_standby(f"Redis not readable ({exc})")
            return
        reason = self._slow_start() if self.standby_ok else None
        if reason is not None:
            self._enter_standby(reason)
            return
        with contextlib.suppress(InStandby):
            self.call(lambda: None)

    def _slow_start(self) -> str | None:
        """Why verifying now would take long (or None)."""
        if self.server is not None and self.server.loading_at_start and self.server.alive():
            return "Redis is loading its data"
        try:
            loading = int(self.r.info("persistence").get("loading", 0))
        except redis.BusyLoadingError:
            loading = 1
        except UNAVAILABLE as exc:
            if self.server is None or not self._restart_embedded():
                raise self.unavailable(exc) from exc
            return "the embedded redis-server was not running: restarted, it reloads its data"
        if loading:
            return "Redis is loading its data"
        if self.r.hget(self.meta_key, "uuid") is None and self._catalog_hot_count() > _REBUILD_IN_BACKGROUND:
            return "Redis holds none of this store's vectors: refilling it from the catalog"
        return None

    @property
    def standby_reason(self) -> str | None:
        """Why queries are answered from the catalog now (None: Redis serves them)."""
        sb = self._standby
        return None if sb is None else sb.reason

    def _enter_standby(self, reason: str) -> None:
        with self._standby_lock:
            fresh = self._standby is None
            if fresh:
                log.warning("hot tier: %s; answering hot queries from the catalog until Redis is verified", reason)
                # loaded on a thread: open() returns now, the first search (and write) waits for it
                self._standby = CatalogStandby(self.catalog, self.metric, reason)
                self._standby_loader = self._standby.load_in_background()
                self._dirty = set()
                self._verified = False
                self.stats["standby"] += 1
            if fresh and self._warmer is not None and self._warmer.is_alive():
                self._warmer.join(timeout=2)  # one that just switched back is about to return
            if not self.read_only and (self._warmer is None or not self._warmer.is_alive()):
                self._warmer = threading.Thread(target=self._warm_up, name="tierstore-hot-warmup", daemon=True)
                self._warmer.start()

    def _warm_up(self) -> None:
        """Background: wait for Redis to load (never stopping it mid-load), verify it (rebuild,
        reconcile, index), apply what was written meanwhile, then serve from Redis again."""
        t0 = last_log = time.monotonic()
        restarts = self.stats["restarts"]
        with contextlib.suppress(Exception):  # readers: not usable until we switch back (a restarted
            self.r.hdel(self.meta_key, "serving")  # server has another run id anyway)
        while not self._closing.is_set():
            try:
                info = self.r.info("persistence")
                if int(info.get("loading", 0)):
                    if time.monotonic() - last_log >= 10:
                        last_log = time.monotonic()
                        log.info("hot tier: Redis is loading its data (%s%% after %.0fs)",
                                 info.get("loading_loaded_perc", "?"), last_log - t0)
                    self._closing.wait(0.2)
                    continue
                gen = self._conn_gen
                with self._lock:
                    self._verified = False
                    self.verify()
                with self.exclusive, self._standby_lock:
                    # no write in flight now: what was written to the stand-in is committed
                    if self._conn_gen != gen:  # reconnected since verify: what it wrote may be lost
                        raise Stale("hot tier: Redis reconnected during verification")
                    protected = self.ids.protected_now()
                    todo = sorted((self._dirty | set(self._own_pending())) - protected)
                    self.sync_now(todo)
                    self.catalog.clear_pending(todo)
                    # a protected id's mover syncs it after its reader grace (to Redis from now
                    # on); its pending mark makes sure, should that sync have run already
                    if self._dirty & protected:
                        with self.catalog.write() as txn:
                            self.catalog.add_pending(txn, sorted(self._dirty & protected))
                    self._dirty.clear()
                    self._stamp_serving()
                    self._standby = None
                    self._verified = True
                log.info("hot tier: Redis verified after %.1fs; serving from Redis again", time.monotonic() - t0)
                return
            except Exception as exc:  # noqa: BLE001 - keep standing in, and keep trying
                if self._closing.is_set():
                    return
                if isinstance(exc, UNAVAILABLE) and not isinstance(exc, redis.BusyLoadingError):
                    self._restart_embedded()
                    if self.stats["restarts"] - restarts >= _DEATHS_BEFORE_DISCARD and self.server is not None:
                        # it keeps dying while loading (a damaged AOF): Redis is only an index of
                        # the catalog, so set its files aside and refill it
                        log.error("hot tier: the embedded redis-server died %d times while loading; setting its "
                                  "data aside and refilling it from the catalog. Its log:\n%s",
                                  self.stats["restarts"] - restarts, self.server.tail_log())
                        with self._lock:
                            self.server.stop()
                            self.server.discard_data()
                            self.server.start()
                        restarts = self.stats["restarts"]
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    log.warning("hot tier: Redis not ready yet (%s: %s); still answering from the catalog",
                                type(exc).__name__, exc)
                self._closing.wait(0.5)

    def _probe_back(self, sb: CatalogStandby) -> CatalogStandby | None:
        """Read-only processes: is the writer's Redis readable again (then stop standing in)?
        Otherwise keep the stand-in current with the catalog."""
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + _PROBE_EVERY
            try:
                self._verify_read_only()
                with self._standby_lock:
                    self._standby = None
                return None
            except (TierUnavailableError, *UNAVAILABLE):
                pass
        if self.catalog.generation() != sb.loaded_gen:  # the writer wrote: reload (standing in is rare)
            sb.load()
        return sb

    def _standby_sync(self, iids: Sequence[int]) -> bool:
        """While standing in: apply the catalog's state of ``iids`` to the stand-in and
        remember them for Redis (their pending marks stay). Returns whether it did."""
        with self._standby_lock:
            if self._standby is None:
                return False
            self._standby.refresh(iids)
            self._dirty.update(iids)
            return True

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Batch KNN from Redis, or from the catalog while Redis cannot serve (the stand-in)."""
        sb = self._standby
        if sb is None:
            try:
                return self._search_many(qs, k, node, ef)
            except InStandby:
                sb = self._standby
                if sb is None:  # verified meanwhile
                    return self._search_many(qs, k, node, ef)
            except TierUnavailableError as exc:
                if not (self.read_only and self.standby_ok):
                    raise
                self._enter_standby(f"Redis not readable ({exc})")  # e.g. the writer is refilling it
                sb = self._standby
        if self.read_only:
            sb = self._probe_back(sb)
            if sb is None:
                return self._search_many(qs, k, node, ef)
        return sb.search_many(qs, k, node, ef)


__all__ = ["CatalogStandby", "StandbyServing"]
