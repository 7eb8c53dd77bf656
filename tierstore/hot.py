"""Hot tier: a Redis HNSW index -- an index and a cache, never the truth.

Every hot vector is durable in the catalog (LMDB) before Redis sees it, so Redis can be restarted,
flushed or lost without losing data. The tier's write primitive is :meth:`HotTier.sync`: "make
Redis agree with the catalog for these ids" (write the vector when the catalog says hot, remove it
otherwise). It is idempotent, so upserts, deletes, moves, crash repair and rebuild are all the
same operation.

Before serving, the tier *verifies* Redis against the catalog: on first use, after every new
connection (a restart is a new connection), and whenever Redis shows it lost our data. Verify
checks the index (recreating it when it is missing or built with other parameters) and
reconciles the vectors with the catalog: missing ones are written from the durable records,
extra ones removed. An operation that opened a new connection is verified and retried, so the
first query after a restart is already correct.

Two backends share that machinery (:class:`HotTier`) and differ only in their Redis commands:

- :class:`SearchHotTier` (``hot.backend = "search"``, here): a RediSearch HNSW index over hashes;
- :class:`~tierstore.hot_vectorset.VectorSetHotTier` (``"vectorset"``): one Redis 8 vector set.

:func:`make_hot_tier` picks one (``"auto"``: search when the server has the module).

Redis keys (``P`` = ``hot.prefix``, default ``ts:<8 hex of the store uuid>:``)::

    P meta          hash: uuid of the owning store (detects FLUSHALL and foreign data), backend
    P idx           search: the RediSearch index (FT.CREATE ... ON HASH PREFIX 1 P v:)
    P v:<16 hex>    search: one hash per vector: __v = FLOAT32 bytes, plus the [schema] fields
    P vset          vectorset: the vector set (elements named by 16 hex digits)

>>> hot = make_hot_tier(redis_url, catalog=cat, config=cfg.hot, schema={}, metric="cosine")  # doctest: +SKIP
>>> hot.search(np.ones(384, np.float32), k=10, node=filters.TRUE)                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from . import distance, filters
from .catalog import TIER_HOT, Catalog
from .config import HotConfig
from .costs import bytes_per_vector
from .errors import ConfigError, IntegrityError, TierUnavailableError
from .hot_standby import CatalogStandby
from .query import TierAnswer
from .services import RedisServer

log = logging.getLogger("tierstore.hot")

_METRIC = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
# hot.vector_type -> (RediSearch TYPE, numpy dtype of the stored and queried bytes)
_VECTOR_TYPES = {"float32": ("FLOAT32", np.float32), "float16": ("FLOAT16", np.float16)}
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)
_CHUNK = 512  # commands per pipeline round trip
# A store whose Redis holds none of its vectors rebuilds in the background (answering from the
# catalog meanwhile) above this many hot vectors; below, open() rebuilds before it returns.
_REBUILD_IN_BACKGROUND = 2000
_PROBE_EVERY = 5.0  # read-only stand-in: seconds between checks whether Redis is back
_DEATHS_BEFORE_DISCARD = 3  # an embedded server dying this often while loading has its data set aside


class _InStandby(TierUnavailableError):
    """Redis cannot serve now and the tier answers from the catalog (hot_standby)."""


class _Stale(Exception):
    """Redis no longer matches what we verified (flushed during a write): re-verify and retry."""


def _is_missing_index(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "no such index" in msg or "unknown index name" in msg or "index not found" in msg


def _is_unknown_command(exc: Exception) -> bool:
    return "unknown command" in str(exc).lower()


def _as_dict(reply: Any) -> dict:
    """FT.INFO / FT.SEARCH replies are maps in RESP3; flatten RESP2 pairs just in case."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=False))


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class HotTier:
    """The hot tier's backend-independent part: connection, verification, reconcile/rebuild,
    the catalog-driven writes and the id bookkeeping of moves. A backend subclass supplies the
    Redis commands (the methods that raise NotImplementedError here)."""

    name = "hot"
    backend = ""  # the hot.backend value a subclass implements (also recorded in P meta)
    # A read-only process (another host process of a store whose writer owns Redis) searches
    # only: verify checks ownership and backend and never rebuilds, reconciles or creates.
    read_only = False
    # Serve from the catalog (hot_standby) while Redis loads or is rebuilt. Not for a cluster:
    # its masters fail one at a time and the answer names the missing one (partial).
    standby_ok = True

    def __init__(
        self,
        url: str,
        *,
        catalog: Catalog,
        config: HotConfig,
        schema: dict[str, str],
        metric: str,
        server: RedisServer | None = None,
    ) -> None:
        self.catalog = catalog
        self.cfg = config
        self.schema = dict(schema)
        self.metric = metric
        self.dim = catalog.dim
        self.server = server
        self.url = url
        self.prefix = config.prefix or f"ts:{catalog.uuid[:8]}:"
        self.meta_key = f"{self.prefix}meta"
        self._lock = threading.RLock()
        self._verified = False
        self._conn_gen = 0
        self._synced: list[int] = []
        self._run_id = ""  # Redis server run_id seen at the last verification
        self._protected: set[int] = set()  # being copied in by a move: not "extra" for reconcile
        # _synced and _protected have their own lock: a mover must not wait for a long Redis
        # sync (e.g. the policy's background unlinks) just to protect the ids of its next batch
        self._ids_lock = threading.Lock()
        # The catalog stand-in (see hot_standby) and what was written to it instead of Redis
        # (synced from the catalog when Redis is back). _standby_lock orders the switch back
        # against writers; the store's write lock (``exclusive``) keeps writes out of the switch.
        self._standby: CatalogStandby | None = None
        self._standby_lock = threading.Lock()
        self._dirty: set[int] = set()
        self._warmer: threading.Thread | None = None
        self._standby_loader: threading.Thread | None = None
        self._closing = threading.Event()
        self._next_probe = 0.0
        self.exclusive: Any = threading.RLock()  # the store passes its write lock
        self.r = self._client()
        self.stats = {"verifies": 0, "rebuilds": 0, "reconciled_added": 0, "reconciled_removed": 0,
                      "restarts": 0, "index_recreated": 0, "standby": 0, "version_mismatch": 0}

    # --- connection ----------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        def on_connect(conn: redis.connection.AbstractConnection) -> None:
            conn.on_connect()
            # A new connection may be a restarted or flushed server: verify before trusting it.
            self._conn_gen += 1
            self._verified = False

        return redis.Redis.from_url(
            self.url,
            protocol=3,
            socket_timeout=self.cfg.socket_timeout,
            socket_connect_timeout=min(self.cfg.socket_timeout, 5.0),
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            redis_connect_func=on_connect,
            client_name="tierstore",
        )

    def open(self) -> None:
        """Connect and verify now (reconciling if needed). When that would take long -- Redis
        is loading its data (an AOF replay rebuilds every HNSW graph), or holds none of this
        store's vectors and must be refilled -- answer from the catalog (hot_standby) and
        finish in the background instead, so the store opens in seconds at any size."""
        if self.read_only:
            try:
                self._call(lambda: None)
            except TierUnavailableError as exc:  # e.g. no writer running: nobody serves Redis
                if not self.standby_ok:
                    raise
                self._enter_standby(f"Redis not readable ({exc})")
            return
        reason = self._slow_start() if self.standby_ok else None
        if reason is not None:
            self._enter_standby(reason)
            return
        with contextlib.suppress(_InStandby):
            self._call(lambda: None)

    def _slow_start(self) -> str | None:
        """Why verifying now would take long (or None)."""
        if self.server is not None and self.server.loading_at_start and self.server.alive():
            return "Redis is loading its data"
        try:
            loading = int(self.r.info("persistence").get("loading", 0))
        except redis.BusyLoadingError:
            loading = 1
        except _UNAVAILABLE as exc:
            if self.server is None or not self._restart_embedded():
                raise self._unavailable(exc) from exc
            return "the embedded redis-server was not running: restarted, it reloads its data"
        if loading:
            return "Redis is loading its data"
        if self.r.hget(self.meta_key, "uuid") is None and self._catalog_hot_count() > _REBUILD_IN_BACKGROUND:
            return "Redis holds none of this store's vectors: refilling it from the catalog"
        return None

    def close(self) -> None:
        self._closing.set()
        for t in (self._standby_loader, self._warmer):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=30)
        self.r.close()

    # --- the catalog stand-in ------------------------------------------------------------------

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
                        raise _Stale("hot tier: Redis reconnected during verification")
                    with self._ids_lock:
                        protected = set(self._protected)
                    todo = sorted((self._dirty | set(self._own_pending())) - protected)
                    self._sync_now(todo)
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
                if isinstance(exc, _UNAVAILABLE) and not isinstance(exc, redis.BusyLoadingError):
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
            except (TierUnavailableError, *_UNAVAILABLE):
                pass
        if self.catalog.generation() != sb.loaded_gen:  # the writer wrote: reload (standing in is rare)
            sb.load()
        return sb

    def _unavailable(self, exc: Exception) -> TierUnavailableError:
        where = "embedded redis-server" if self.server else self.url
        return TierUnavailableError(f"hot tier: Redis at {where} is unavailable: {exc}", tier="hot")

    def _stale_error(self, exc: redis.ResponseError) -> bool:
        """Does this error mean Redis lost what we verified (so re-verify and retry)?"""
        return False

    def _call(self, fn, *, verify: bool = True):
        """Run ``fn`` against a verified Redis; retry once after reconnect/restart/re-verify.
        Raises :class:`_InStandby` when Redis is loading or was restarted (the tier answers from
        the catalog until it is verified in the background)."""
        if self._standby is not None:
            raise _InStandby(f"hot tier: answering from the catalog: {self._standby.reason}", tier="hot")
        last: Exception | None = None
        for _attempt in range(3):
            try:
                if verify and not self._verified:
                    self.verify()
                gen = self._conn_gen
                out = fn()
                if verify and self._conn_gen != gen:  # reconnected mid-call: verify, then redo
                    self._verified = False
                    continue
                return out
            except _UNAVAILABLE as exc:
                last = exc
                self._verified = False
                restarts = self.stats["restarts"]
                loading = isinstance(exc, redis.BusyLoadingError)
                if not loading and not self._restart_embedded():
                    break
                if self.standby_ok and not self.read_only and (loading or self.stats["restarts"] != restarts):
                    why = "Redis is loading its data" if loading else "the embedded redis-server died and was restarted"
                    self._enter_standby(why)
                    raise _InStandby(f"hot tier: answering from the catalog: {why}", tier="hot") from exc
                if loading:
                    time.sleep(0.1)
            except (redis.ResponseError, _Stale) as exc:
                if isinstance(exc, redis.ResponseError) and not self._stale_error(exc):
                    # e.g. OOM under maxmemory: the tier cannot serve; say so in the typed error
                    raise TierUnavailableError(f"hot tier: Redis refused the command: {exc}", tier="hot") from exc
                last = exc
                self._verified = False
        raise self._unavailable(last) from last

    def _restart_embedded(self) -> bool:
        """If we own the server and it died, start it again (its AOF brings the data back).
        Returns whether retrying can help."""
        if self.server is None:
            return False
        with self._lock:
            if not self.server.alive():
                self.server.stop()
                self.server.start()
                self.stats["restarts"] += 1
        return True

    # --- verification and repair ---------------------------------------------------------------

    def verify(self) -> None:
        """Make Redis trustworthy: right owner, index present and right, vectors == catalog."""
        with self._lock:
            if self._verified:
                return
            self.stats["verifies"] += 1
            if self.read_only:
                self._verify_read_only()
                return
            self.catalog.clear_pending(self.take_synced())
            owner, backend = self.r.hmget(self.meta_key, ["uuid", "backend"])
            if owner is None:
                # Empty server, FLUSHALL, or our keys were removed: rebuild everything.
                self.rebuild()
            elif _s(owner) != self.catalog.uuid:
                raise IntegrityError(
                    f"hot tier: Redis keys under prefix {self.prefix!r} belong to another store "
                    f"(uuid {_s(owner)}, this store is {self.catalog.uuid}); set hot.prefix"
                )
            elif _s(backend or b"search") != self.backend:
                # hot.backend changed (stores from before vector sets have no backend field):
                # free what the other backend left in Redis, then index from the catalog.
                self._purge()
                self.rebuild()
            else:
                self._check_index()
                # A server that restarted (new run_id; first contact included) may have lost its
                # last second of AOF: writes AND removals, which equal counts would not reveal.
                run_id = _s(self.r.info("server").get("run_id", ""))
                restarted, self._run_id = run_id != self._run_id, run_id
                if restarted or self.catalog.has_pending() or self.count() != self._catalog_hot_count():
                    self.reconcile()
            if self._standby is None:  # (standing in: the warm-up stamps it once it switched back)
                self._stamp_serving()
            self._verified = True

    def _stamp_serving(self) -> None:
        """Tell read-only processes that this Redis (by its run id) holds everything the
        catalog says is hot: the writer verified it and serves from it. A restarted server has
        another run id, and a rebuild removes the stamp first, so readers never search a Redis
        the writer is still refilling (they stand in from the catalog meanwhile)."""
        self._run_id = _s(self.r.info("server").get("run_id", ""))
        self.r.hset(self.meta_key, "serving", self._run_id)

    def _verify_read_only(self) -> None:
        owner, backend, serving = self.r.hmget(self.meta_key, ["uuid", "backend", "serving"])
        if owner is not None and _s(owner) == self.catalog.uuid and _s(serving or b"") != _s(
                self.r.info("server").get("run_id", "")):
            raise TierUnavailableError("hot tier (read-only): the writer has not verified this Redis since it "
                                       "(re)started or was refilled", tier="hot")
        if owner is None or _s(owner) != self.catalog.uuid or _s(backend or b"search") != self.backend:
            found = "nothing" if owner is None else f"store {_s(owner)}, backend {_s(backend or b'search')}"
            raise TierUnavailableError(
                f"hot tier (read-only): Redis holds {found} under prefix {self.prefix!r}, not this store's "
                f"{self.backend} index; the process that has the store open for writing (re)builds it",
                tier="hot")
        self._verified = True

    def reconcile(self) -> dict[str, int]:
        """Diff the vectors in Redis against the catalog's hot set: write missing ones and ones
        held at another version than the catalog's (an update whose commit never came, or one
        a replayed AOF lost), remove extra ones."""
        with self._lock:
            in_redis = self.keys()
            versions = {e.iid: e.version for e in self._iter_hot_entries()}
            in_catalog = set(versions)
            pending = set(self._own_pending())
            stale = self.stale({i: v for i, v in versions.items() if i in in_redis})
            self.stats["version_mismatch"] += len(stale)
            missing = (in_catalog - in_redis) | (pending & in_catalog) | stale
            with self._ids_lock:  # after keys(): an id copied in since was protected before its write
                protected = set(self._protected)
            extra = ((in_redis - in_catalog) | (pending - in_catalog)) - protected
            # a protected id belongs to a move in progress: its mover syncs it after the reader grace
            self._sync_now(sorted((missing | extra) - protected))
            # a protected id's pending mark is its mover's: it clears it after the reader grace
            self.catalog.clear_pending(sorted(pending - protected))
            self.stats["reconciled_added"] += len(missing)
            self.stats["reconciled_removed"] += len(extra)
            return {"added": len(missing), "removed": len(extra)}

    def _iter_hot_entries(self):
        last = None
        while True:
            batch = self.catalog.iter_entries(tiers=[TIER_HOT], start_after=last, limit=10_000)
            if not batch:
                return
            yield from (batch if not self.sharded else (e for e in batch if self._owns(e.iid)))
            last = batch[-1].iid

    # A cluster shard (hot_cluster) holds only the vectors whose keys hash into its slots: these
    # three say which part of the catalog this tier answers for (all of it, here).
    sharded = False

    def _owns(self, iid: int) -> bool:
        return True

    def _own_pending(self) -> list[int]:
        pending = self.catalog.pending()
        return pending if not self.sharded else [i for i in pending if self._owns(i)]

    def _catalog_hot_count(self) -> int:
        if not self.sharded:
            return self.catalog.count(TIER_HOT)
        return sum(1 for _e in self._iter_hot_entries())

    def rebuild(self) -> int:
        """Drop the index and every vector of this store, recreate, reload all hot records."""
        with self._lock:
            self.r.hdel(self.meta_key, "serving")  # readers: not usable until refilled
            self._reset_index()
            self.r.hset(self.meta_key, mapping={"uuid": self.catalog.uuid, "backend": self.backend,
                                                "created": str(time.time()), **self._meta_fields()})
            n = 0
            batch: list[int] = []
            for e in self._iter_hot_entries():
                batch.append(e.iid)
                if len(batch) >= 5000:
                    n += self._sync_now(batch)
                    batch = []
            n += self._sync_now(batch)
            self.catalog.clear_pending(self._own_pending())
            self.stats["rebuilds"] += 1
            self._verified = True
            return n

    def _purge(self) -> None:
        """Remove every key of this store's prefix but its meta key, whichever backend wrote
        them (and the RediSearch index, where the server has the module)."""
        try:
            self.r.execute_command("FT.DROPINDEX", f"{self.prefix}idx")
        except redis.ResponseError as exc:
            if not (_is_missing_index(exc) or _is_unknown_command(exc)):
                raise
        doomed = [k for k in self.r.scan_iter(match=self.prefix + "*", count=5000) if k != self.meta_key.encode()]
        for start in range(0, len(doomed), 1000):
            self.r.unlink(*doomed[start : start + 1000])

    # --- writes --------------------------------------------------------------------------------

    def sync(self, iids: Sequence[int]) -> int:
        """Make Redis match the catalog for ``iids``; clear their pending marks. Returns #written."""
        if not len(iids):
            return 0
        if self._standby_sync(iids):
            return 0
        with self._lock:  # serialised with reconcile(), which also clears pending marks
            try:
                n = self._call(lambda: self._sync_now(iids))
            except _InStandby:
                n = 0
            if self._standby_sync(iids):
                return n
            self.catalog.clear_pending(iids)
        return n

    def _standby_sync(self, iids: Sequence[int]) -> bool:
        """While standing in: apply the catalog's state of ``iids`` to the stand-in and
        remember them for Redis (their pending marks stay). Returns whether it did."""
        with self._standby_lock:
            if self._standby is None:
                return False
            self._standby.refresh(iids)
            self._dirty.update(iids)
            return True

    def write(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]],
              versions: Sequence[int]) -> int:
        """The upsert fast path: write rows the caller is about to commit to the catalog as hot
        (at ``versions``), from memory instead of re-reading LMDB (the caller holds the store's
        write lock, so the catalog cannot change for these ids). Their pending marks are
        cleared lazily (:meth:`take_synced`), in the next catalog write, which saves an fsync per
        batch. Each copy carries its catalog version, so a copy whose commit never came (a crash
        between this write and the commit) is found and rewritten by the next reconcile."""
        n = len(iids)
        if self._standby is None:
            with contextlib.suppress(_InStandby):
                n = self._call(lambda: self._write_now(iids, vectors, metas, versions))
        with self._standby_lock:
            if self._standby is not None:  # (also when Redis went away during this write)
                self._standby.put(iids, vectors, metas)
                self._dirty.update(iids)
                return n
        with self._ids_lock:
            self._synced.extend(iids)
        return n

    def protect(self, iids: Sequence[int]) -> None:
        """Keys a move is copying in (before its catalog flip) or moving out (until the reader
        grace has passed): reconcile must not remove them."""
        with self._ids_lock:
            self._protected.update(iids)

    def unprotect(self, iids: Sequence[int]) -> None:
        with self._ids_lock:
            self._protected.difference_update(iids)

    def take_synced(self) -> list[int]:
        """Ids written to Redis whose pending marks the caller should now clear."""
        with self._ids_lock:
            out, self._synced = self._synced, []
        return out

    def _execute_checked(self, pipe: redis.client.Pipeline) -> list:
        """Run a write pipeline that ends with a check that our meta key still exists."""
        pipe.exists(self.meta_key)
        results = pipe.execute()
        for r in results:  # errors inside an EXEC's reply (vector sets' VREM + VADD) are not raised
            if isinstance(r, list):
                err = next((x for x in r if isinstance(x, Exception)), None)
                if err is not None:
                    raise err
        if not results[-1]:
            # The store's meta key vanished (FLUSHALL) while we wrote: force a rebuild.
            self._verified = False
            raise _Stale("hot tier: Redis was flushed during a write")
        return results

    def _write_now(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]],
                   versions: Sequence[int]) -> int:
        for start in range(0, len(iids), _CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for j in range(start, min(start + _CHUNK, len(iids))):
                self._put(pipe, iids[j], vectors[j].tobytes(), metas[j] if self.schema else {}, versions[j])
            self._execute_checked(pipe)
        return len(iids)

    def _sync_now(self, iids: Sequence[int]) -> int:
        written = 0
        for start in range(0, len(iids), _CHUNK):
            if self._closing.is_set():  # close() is waiting for the warm-up: leave the rest pending
                raise _Stale("hot tier: closing")
            chunk = iids[start : start + _CHUNK]
            pipe = self.r.pipeline(transaction=False)
            with self.catalog.read() as txn:
                for iid in chunk:
                    e = self.catalog.entry(txn, iid)
                    vec = self.catalog.vector_raw(txn, iid) if e is not None and e.tier == TIER_HOT else None
                    if vec is None:
                        self._remove(pipe, iid)
                        continue
                    self._put(pipe, iid, vec, e.metadata if self.schema else {}, e.version)
                    written += 1
            self._execute_checked(pipe)
        return written

    # --- what a backend supplies -----------------------------------------------------------------

    def _check_index(self) -> None:
        """Make the index exist with the configured parameters (recreate it if they changed)."""
        raise NotImplementedError

    def _reset_index(self) -> None:
        """Drop the index and all of this backend's vectors; leave an empty, usable index."""
        raise NotImplementedError

    def _meta_fields(self) -> dict[str, str]:
        """What else a backend records in ``P meta`` when it (re)builds."""
        return {}

    def _put(self, pipe: redis.client.Pipeline, iid: int, vec: bytes, meta: dict[str, Any], version: int) -> None:
        """Queue the commands that store (or replace) one vector, its [schema] fields and the
        catalog version it was written from."""
        raise NotImplementedError

    def _versions(self, iids: Sequence[int]) -> list[int | None]:
        """The catalog version each copy in Redis was written from (None: absent or written
        before versions were recorded)."""
        raise NotImplementedError

    def differs(self, iids: Sequence[int]) -> set[int]:
        """Which of ``iids`` Redis holds with other vector bytes than the catalog's record
        (verify --deep). A backend that stores an approximation compares within its error."""
        out: set[int] = set()
        for start in range(0, len(iids), 2000):
            chunk = list(iids[start : start + 2000])
            held = self._vectors(chunk)
            with self.catalog.read() as txn:
                for iid, got in zip(chunk, held, strict=True):
                    raw = self.catalog.vector_raw(txn, iid)
                    if raw is None:
                        continue
                    if got is None or not self._same(np.frombuffer(raw, np.float32), got):
                        out.add(iid)
        return out

    def _vectors(self, iids: Sequence[int]) -> list[np.ndarray | None]:
        raise NotImplementedError

    def _same(self, want: np.ndarray, got: np.ndarray) -> bool:
        return got.shape == want.shape and bool(np.array_equal(got.astype(np.float32), want))

    def stale(self, versions: dict[int, int]) -> set[int]:
        """Which of ``{iid: catalog version}`` Redis holds at another version (or not at all)."""
        iids = list(versions)
        out: set[int] = set()
        for start in range(0, len(iids), 5000):
            chunk = iids[start : start + 5000]
            out.update(i for i, v in zip(chunk, self._versions(chunk), strict=True) if v != versions[i])
        return out

    def _remove(self, pipe: redis.client.Pipeline, iid: int) -> None:
        """Queue the command that removes one vector (a no-op when it is absent)."""
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> TierAnswer:
        """KNN -> a TierAnswer (ids, distances, incomplete[, details]). Candidates still need
        the catalog check (the index may lag the catalog by a write in flight)."""
        return self.search_many(q.reshape(1, -1), k, node, ef)[0]

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Batch KNN from Redis, or from the catalog while Redis cannot serve (hot_standby)."""
        sb = self._standby
        if sb is None:
            try:
                return self._search_many(qs, k, node, ef)
            except _InStandby:
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

    def _search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """The backend's KNN in Redis."""
        raise NotImplementedError

    def keys(self) -> set[int]:
        """Internal ids of every vector Redis holds for this store."""
        raise NotImplementedError

    def bytes_per_vector(self) -> int:
        """Estimated Redis memory per hot vector (what ``hot.capacity_bytes`` divides by)."""
        return bytes_per_vector("hot", self.dim, self.cfg.m)

    def count(self) -> int:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        raise NotImplementedError


class SearchHotTier(HotTier):
    """RediSearch-backed hot tier (``hot.backend = "search"``): an HNSW index over hashes."""

    backend = "search"

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.index = f"{self.prefix}idx"
        self.key_prefix = f"{self.prefix}v:"
        self._kp = self.key_prefix.encode()
        self._vtype, self._vdtype = _VECTOR_TYPES[self.cfg.vector_type]
        self._f16 = self._vdtype is np.float16

    def _stale_error(self, exc: redis.ResponseError) -> bool:
        return _is_missing_index(exc)

    # --- index definition ----------------------------------------------------------------------

    def _create_index(self) -> None:
        vec = ["TYPE", self._vtype, "DIM", str(self.dim), "DISTANCE_METRIC", _METRIC[self.metric],
               "M", str(self.cfg.m), "EF_CONSTRUCTION", str(self.cfg.ef_construction),
               "EF_RUNTIME", str(self.cfg.ef_runtime)]
        args = ["FT.CREATE", self.index, "ON", "HASH", "PREFIX", "1", self.key_prefix, "STOPWORDS", "0",
                "SCHEMA", "__v", "VECTOR", "HNSW", str(len(vec)), *vec]
        for field, kind in sorted(self.schema.items()):
            if kind == "tag":
                args += [field, "TAG", "SEPARATOR", filters.TAG_SEP, "CASESENSITIVE"]
            else:
                args += [field, "NUMERIC"]
        self.r.execute_command(*args)
        self.stats["index_recreated"] += 1

    def _index_info(self) -> dict | None:
        try:
            return _as_dict(self.r.execute_command("FT.INFO", self.index))
        except redis.ResponseError as exc:
            if _is_missing_index(exc):
                return None
            raise

    def _index_matches(self, info: dict) -> bool:
        attrs = {}
        for a in info.get(b"attributes", []):
            a = _as_dict(a)
            attrs[_s(a.get(b"identifier"))] = a
        v = attrs.pop("__v", None)
        if v is None:
            return False
        want = {"dim": self.dim, "distance_metric": _METRIC[self.metric], "M": self.cfg.m,
                "ef_construction": self.cfg.ef_construction, "data_type": self._vtype}
        for k, expected in want.items():
            got = v.get(k.encode())
            if got is None or _s(got).upper() != str(expected).upper():
                return False
        have = {name: _s(a.get(b"type")).lower() for name, a in attrs.items()}
        return have == self.schema

    def _check_index(self) -> None:
        info = self._index_info()
        if info is not None and not self._index_matches(info):
            if self._vector_type_of(info) not in (None, self._vtype):
                # hot.vector_type changed: the hashes hold the other type's bytes. Drop them with
                # the index; verify's count check then re-adds every vector from the catalog.
                self._reset_index()
                return
            # m / ef_construction / schema changed in the config: re-index in place.
            self.r.execute_command("FT.DROPINDEX", self.index)
            info = None
        if info is None:
            self._create_index()  # existing hashes are indexed in the background
        self._wait_indexed()

    def _wait_indexed(self) -> None:
        deadline = time.monotonic() + self.cfg.index_wait
        while True:
            info = self._index_info() or {}
            done = float(_s(info.get(b"percent_indexed", b"1"))) >= 1.0 and int(info.get(b"indexing", 0)) == 0
            if done:
                return
            if time.monotonic() > deadline:
                raise TierUnavailableError(
                    f"hot tier: Redis is still indexing after {self.cfg.index_wait:.0f}s "
                    f"({100 * float(_s(info.get(b'percent_indexed', b'0'))):.0f}% done); try again later "
                    "or raise hot.index_wait", tier="hot")
            time.sleep(0.05)

    @staticmethod
    def _vector_type_of(info: dict) -> str | None:
        for a in info.get(b"attributes", []):
            a = _as_dict(a)
            if _s(a.get(b"identifier")) == "__v":
                return _s(a.get(b"data_type", b"")).upper() or None
        return None

    def bytes_per_vector(self) -> int:
        full = bytes_per_vector("hot", self.dim, self.cfg.m)
        return full - 4 * self.dim if self._f16 else full  # the vector twice (hash + index) at 2 B

    def _drop_index_and_keys(self) -> None:
        """Drop this tier's index and delete the vector keys it holds."""
        try:
            self.r.execute_command("FT.DROPINDEX", self.index)
        except redis.ResponseError as exc:
            if not _is_missing_index(exc):
                raise
        self._delete_keys(self.keys())

    def _reset_index(self) -> None:
        self._drop_index_and_keys()
        self._create_index()
        # FT.CREATE scans the keyspace in the background; hashes written while that scan runs
        # can be indexed twice (a duplicate HNSW node degrades recall), so wait for it first.
        self._wait_indexed()

    # --- writes --------------------------------------------------------------------------------

    def key(self, iid: int) -> str:
        return f"{self.key_prefix}{iid:016x}"

    def _put(self, pipe: redis.client.Pipeline, iid: int, vec: bytes, meta: dict[str, Any], version: int) -> None:
        if self._f16:
            vec = np.frombuffer(vec, dtype=np.float32).astype(np.float16).tobytes()
        mapping, absent = self._hash_fields(vec, meta)
        mapping["__ver"] = str(version)
        k = self.key(iid)
        pipe.hset(k, mapping=mapping)
        if absent:
            pipe.hdel(k, *absent)

    def _remove(self, pipe: redis.client.Pipeline, iid: int) -> None:
        pipe.unlink(self.key(iid))

    def _vectors(self, iids: Sequence[int]) -> list[np.ndarray | None]:
        pipe = self.r.pipeline(transaction=False)
        for iid in iids:
            pipe.hget(self.key(iid), "__v")
        return [None if v is None else np.frombuffer(v, self._vdtype) for v in pipe.execute()]

    def _same(self, want: np.ndarray, got: np.ndarray) -> bool:
        if self._f16:
            want = want.astype(np.float16)
        return got.shape == want.shape and bool(np.array_equal(got, want))

    def _versions(self, iids: Sequence[int]) -> list[int | None]:
        pipe = self.r.pipeline(transaction=False)
        for iid in iids:
            pipe.hget(self.key(iid), "__ver")
        return [None if v is None else int(v) for v in pipe.execute()]

    def _hash_fields(self, vec: bytes, meta: dict[str, Any]) -> tuple[dict[str, bytes | str], list[str]]:
        mapping: dict[str, bytes | str] = {"__v": vec}
        absent = []
        for field, kind in self.schema.items():
            value = meta.get(field)
            if value is None:
                absent.append(field)
            elif kind == "tag":
                mapping[field] = filters.TAG_SEP.join(filters.encode_tag(v) for v in filters.tag_values(value, field))
            else:
                mapping[field] = repr(float(value))
        return mapping, absent

    def _delete_keys(self, iids: Iterable[int]) -> None:
        keys = [self.key(i) for i in iids]
        for start in range(0, len(keys), 1000):
            self.r.unlink(*keys[start : start + 1000])

    # --- reads ---------------------------------------------------------------------------------

    def _search_args(self, q: np.ndarray, k: int, node: filters.Node, ef: int | None) -> list:
        pre = filters.to_redis(node)
        if self._f16:  # approximate distances: fetch more, re-score exactly (_exact)
            k, q = 2 * k, q.astype(np.float16)
        query = f"({pre})=>[KNN {k} @__v $q EF_RUNTIME {ef or self.cfg.ef_runtime} AS __d]"
        return ["FT.SEARCH", self.index, query, "PARAMS", "2", "q", q.tobytes(), "RETURN", "1", "__d",
                "SORTBY", "__d", "LIMIT", "0", str(k), "DIALECT", "2"]

    def _exact(self, q: np.ndarray, answer: TierAnswer, k: int) -> TierAnswer:
        """FLOAT16 answers: the best ``k`` by exact distance on the catalog's float32 vectors (a
        vector the catalog no longer holds keeps Redis's estimate: the query's check drops it)."""
        if not answer.iids:
            return answer
        iids, dists = distance.rerank_on_catalog(self.catalog, self.metric, q, answer.iids, answer.dists, k)
        return TierAnswer(iids, dists, answer.incomplete)

    def _parse(self, reply: Any) -> TierAnswer:
        reply = _as_dict(reply)
        n = len(self._kp)
        iids, dists = [], []
        for row in reply.get(b"results", ()):
            iids.append(int(row[b"id"][n:], 16))
            dists.append(float(row[b"extra_attributes"][b"__d"]))
        warnings = reply.get(b"warning")
        timed_out = bool(warnings) and any(b"timeout" in w.lower() for w in warnings if isinstance(w, bytes))
        return TierAnswer(iids, dists, timed_out)

    def _search_one(self, q: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> TierAnswer:
        if node == filters.FALSE:
            return TierAnswer([], [])
        args = self._search_args(q, k, node, ef)
        answer = self._parse(self._call(lambda: self.r.execute_command(*args)))
        return self._exact(q, answer, k) if self._f16 else answer

    def _search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Batch KNN in pipelined round trips."""
        if node == filters.FALSE:
            return [TierAnswer([], []) for _ in qs]
        if len(qs) == 1:  # one round trip without a pipeline: the common single-query path
            return [self._search_one(qs[0], k, node, ef)]

        def run() -> list:
            out = []
            for start in range(0, len(qs), _CHUNK):
                pipe = self.r.pipeline(transaction=False)
                for q in qs[start : start + _CHUNK]:
                    pipe.execute_command(*self._search_args(q, k, node, ef))
                out.extend(pipe.execute())
            return out

        answers = [self._parse(r) for r in self._call(run)]
        return [self._exact(q, a, k) for q, a in zip(qs, answers, strict=True)] if self._f16 else answers

    # --- inspection ----------------------------------------------------------------------------

    def keys(self) -> set[int]:
        out = set()
        n = len(self._kp)
        for k in self.r.scan_iter(match=self.key_prefix + "*", count=5000):
            out.add(int(k[n:], 16))
        return out

    def count(self) -> int:
        info = self._index_info()
        return int(info.get(b"num_docs", 0)) if info else 0

    def info(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            info = self._index_info() or {}
            mem = self.r.info("memory")
            return {
                "backend": "search",
                "index": self.index,
                "num_docs": int(info.get(b"num_docs", 0)),
                "vector_index_bytes": int(float(_s(info.get(b"vector_index_sz_mb", b"0"))) * 2**20),
                "redis_used_memory": int(mem.get("used_memory", 0)),
                "redis_used_memory_human": _s(mem.get("used_memory_human", "")),
                **self.stats,
            }

        return self._call(run)


# --- choosing a backend ------------------------------------------------------------------------


def server_has(url: str, config: HotConfig, feature: str) -> bool:
    """Does the Redis at ``url`` have RediSearch (``feature="search"``) or vector sets
    (``"vectorset"``)? Asked with a command of each (FT._LIST, VCARD): that needs no
    MODULE LIST permission, and Redis 8 builds its vector sets in without listing a module."""
    probe = ("FT._LIST",) if feature == "search" else ("VCARD", "tierstore:probe")
    r = redis.Redis.from_url(url, protocol=3, socket_timeout=config.socket_timeout,
                             socket_connect_timeout=min(config.socket_timeout, 5.0))
    try:
        r.execute_command(*probe)
        return True
    except redis.ResponseError as exc:
        if _is_unknown_command(exc):
            return False
        raise TierUnavailableError(f"hot tier: Redis at {url} refused {probe[0]}: {exc}", tier="hot") from exc
    except _UNAVAILABLE as exc:
        raise TierUnavailableError(f"hot tier: Redis at {url} is unavailable: {exc}", tier="hot") from exc
    finally:
        r.close()


def make_hot_tier(
    url: str,
    *,
    catalog: Catalog,
    config: HotConfig,
    schema: dict[str, str],
    metric: str,
    server: RedisServer | None = None,
    embedded: RedisServer | None = None,
) -> HotTier:
    """The hot tier for ``hot.backend``: "search", "vectorset", or "auto" = search when the
    server has the RediSearch module, vector sets otherwise. A backend the server cannot run
    (or, for vector sets, a metric other than cosine) is a :class:`ConfigError` naming why.
    ``server``: the embedded redis-server this tier owns (and restarts); ``embedded``: the one
    another process (the writer) owns -- either way a single node whose modules we know."""
    # imported here: hot_vectorset and hot_cluster build on this module's HotTier
    from .hot_cluster import ClusterHotTier, cluster_enabled
    from .hot_vectorset import VectorSetHotTier

    where = "the embedded redis-server" if server is not None else url
    backend = config.backend
    known = server or embedded
    if config.cluster is not False and known is None:
        probe = redis.Redis.from_url(url, protocol=3, socket_timeout=config.socket_timeout,
                                     socket_connect_timeout=min(config.socket_timeout, 5.0))
        try:
            clustered = cluster_enabled(probe)
        except _UNAVAILABLE as exc:
            raise TierUnavailableError(f"hot tier: Redis at {url} is unavailable: {exc}", tier="hot") from exc
        finally:
            probe.close()
        if config.cluster and not clustered:
            raise ConfigError(f"hot.cluster: true is not allowed: {url} is not a Redis Cluster node "
                              "(INFO cluster says cluster_enabled:0)")
        if clustered:
            if config.prefix and "{" in config.prefix:
                raise ConfigError(f"hot.prefix: {config.prefix!r} is not allowed on a Redis Cluster: a hash tag "
                                  "('{...}') would put every vector in one slot, on one master")
            if backend == "vectorset":
                raise ConfigError("hot.backend: 'vectorset' is not allowed on a Redis Cluster: a vector set is "
                                  "one key on one node; use backend = 'search' (RediSearch on every master)")
            if not server_has(url, config, "search"):
                raise ConfigError(f"hot.backend: {backend!r} is not allowed: the Redis Cluster at {url} has no "
                                  "RediSearch module (FT.*); the cluster hot tier needs it loaded on every master")
            return ClusterHotTier(url, catalog=catalog, config=config, schema=schema, metric=metric)
    elif config.cluster and known is not None:
        raise ConfigError("hot.cluster: true is not allowed without hot.redis_url (the embedded redis-server "
                          "is a single node)")
    if known is not None:
        # an embedded server: we know what it loaded, and asking it now could meet it loading its
        # data (every command but a few answers LOADING until the AOF is replayed)
        backend = "search" if known.search else "vectorset"
    elif backend in ("auto", "search") and not server_has(url, config, "search"):
        if backend == "search":
            raise ConfigError(f"hot.backend: 'search' is not allowed: {where} has no RediSearch module "
                              "(FT.* commands); load it, or use backend = 'vectorset' (Redis 8)")
        backend = "vectorset"
    elif backend == "auto":
        backend = "search"
    if backend == "vectorset":
        if metric != "cosine":
            # vector sets normalise every vector at insert: only cosine similarity is exact
            reason = (f"{where} has no RediSearch module and vector sets (the other backend)"
                      if config.backend == "auto" else "vector sets")
            raise ConfigError(f"hot.backend: {config.backend!r} is not allowed: {reason} only support "
                              f"store.metric = 'cosine' (this store is {metric!r})")
        if known is None and not server_has(url, config, "vectorset"):
            raise ConfigError(f"hot.backend: {config.backend!r} is not allowed: {where} has neither RediSearch "
                              "nor vector sets (VADD/VSIM need Redis 8)")
        cls: type[HotTier] = VectorSetHotTier
    else:
        cls = SearchHotTier
    return cls(url, catalog=catalog, config=config, schema=schema, metric=metric, server=server)


__all__ = ["HotTier", "SearchHotTier", "make_hot_tier", "server_has"]
