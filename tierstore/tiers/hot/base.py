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

The backends share that machinery (:class:`HotTier`, here, with the catalog stand-in of
:mod:`.standby`) and differ only in their Redis commands:

- :class:`~tierstore.tiers.hot.search.SearchHotTier` (``hot.backend = "search"``): a RediSearch
  HNSW index over hashes;
- :class:`~tierstore.tiers.hot.vectorset.VectorSetHotTier` (``"vectorset"``): one Redis 8 vector set;
- :class:`~tierstore.tiers.hot.cluster.ClusterHotTier`: RediSearch on every master of a Redis Cluster.

:func:`tierstore.tiers.hot.make_hot_tier` picks one (``"auto"``: search when the server has the
module).

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
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ... import filters
from ...catalog import TIER_HOT, Catalog
from ...config import HotConfig, redact_url
from ...costs import bytes_per_vector
from ...errors import IntegrityError, TierUnavailableError
from ...progress import ProgressFn, chunks
from ...services import RedisServer
from ..protocol import TierAnswer
from .common import (
    CHUNK,
    UNAVAILABLE,
    InStandby,
    MoveBookkeeping,
    MoveIds,
    Stale,
    as_str,
    is_missing_index,
    is_unknown_command,
)
from .standby import StandbyServing


class HotTier(StandbyServing, MoveBookkeeping):
    """The hot tier's backend-independent part: connection, verification, reconcile/rebuild,
    the catalog-driven writes, the id bookkeeping of moves (:class:`.common.MoveBookkeeping`)
    and the catalog stand-in while Redis loads (:class:`.standby.StandbyServing`).

    **The backend protocol.** A backend is a subclass that supplies the Redis commands; adding
    one means implementing these and registering the class in
    :data:`tierstore.tiers.hot.BACKENDS`:

    - ``backend``: its ``hot.backend`` name (also recorded in ``P meta``);
    - ``_check_index()``: make the index exist with the configured parameters (recreate it if
      they changed); ``_reset_index()``: drop the index and all of its vectors, leaving an empty,
      usable index; ``_meta_fields()`` (optional): what else to record in ``P meta``;
    - ``_put(pipe, iid, vec, meta, version)`` / ``_remove(pipe, iid)``: queue the commands that
      store (or replace) one vector with its [schema] fields and catalog version / remove it;
    - ``_versions(iids)``: the catalog version each copy was written from (for :meth:`stale`);
      ``_vectors(iids)`` and ``_same(want, got)``: the copies' vectors and whether one equals
      the catalog's record within the backend's error (for :meth:`differs`);
    - ``_search_many(qs, k, node, ef)``: KNN in Redis -> one :class:`TierAnswer` per query,
      through :meth:`call` (verified, retried);
    - ``keys()``, ``count()``, ``info()``; ``bytes_per_vector()`` (optional: the estimate that
      ``hot.capacity_bytes`` divides by);
    - ``_stale_error(exc)`` (optional): whether a Redis error reply means Redis lost what was
      verified (RediSearch's "no such index"): re-verify and retry instead of failing.

    Everything else -- :meth:`open`, :meth:`verify`, :meth:`reconcile`, :meth:`rebuild`,
    :meth:`sync`, :meth:`write`, :meth:`search_many`, the stand-in -- is built on those. What
    the package's modules use of each other (a cluster's shards) is public: :meth:`call`,
    :meth:`sync_now`, :meth:`write_now`, :meth:`unavailable`, :meth:`invalidate`,
    :attr:`verified`, :attr:`conn_gen`.
    """

    name = "hot"
    backend = ""  # the hot.backend value a subclass implements (also recorded in P meta)
    # A read-only process (another host process of a store whose writer owns Redis) searches
    # only: verify checks ownership and backend and never rebuilds, reconciles or creates.
    read_only = False
    # Serve from the catalog (standby) while Redis loads or is rebuilt. Not for a cluster:
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
        # a new connection is opened (and counted) on whichever thread needs one
        self._conn_lock = threading.Lock()
        self._run_id = ""  # Redis server run_id seen at the last verification
        self.ids = MoveIds()  # protected (being moved: not "extra" for reconcile) and synced ids
        self._init_standby()
        self._closing = threading.Event()
        self.exclusive: Any = threading.RLock()  # the store passes its write lock
        self.r = self._client()
        self._unsynced = False  # see note_unsynced
        self.stats = {"verifies": 0, "rebuilds": 0, "reconciled_added": 0, "reconciled_removed": 0,
                      "restarts": 0, "index_recreated": 0, "standby": 0, "version_mismatch": 0,
                      "reconciles": 0, "trusted_clean_close": 0}

    # --- connection ----------------------------------------------------------------------------

    def _retry(self) -> Retry:
        """How the client retries a failed command (a restarted server drops the connection)."""
        return Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)

    def _client(self) -> redis.Redis:
        def on_connect(conn: redis.connection.AbstractConnection) -> None:
            conn.on_connect()
            self._connected()

        return redis.Redis.from_url(
            self.url,
            protocol=3,
            socket_timeout=self.cfg.socket_timeout,
            socket_connect_timeout=min(self.cfg.socket_timeout, 5.0),
            retry=self._retry(),
            redis_connect_func=on_connect,
            client_name="tierstore",
        )

    def _connected(self) -> None:
        """A new connection may be a restarted or flushed server: verify before trusting it.
        Called from any thread; the count and the reset go together, under their own lock."""
        with self._conn_lock:
            self._conn_gen += 1
            self._verified = False

    @property
    def conn_gen(self) -> int:
        """How many connections the client has opened: a change during a call means Redis may
        have restarted in between (verify, then redo)."""
        return self._conn_gen

    @property
    def verified(self) -> bool:
        """Whether Redis was verified since the last new connection or sign of lost data."""
        return self._verified

    def invalidate(self) -> None:
        """Verify (and reconcile) before the next command."""
        self._verified = False

    def close(self) -> None:
        self._closing.set()
        for t in (self._standby_loader, self._warmer):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=30)
        self.r.close()

    def unavailable(self, exc: Exception) -> TierUnavailableError:
        where = "embedded redis-server" if self.server else redact_url(self.url)
        return TierUnavailableError(f"hot tier: Redis at {where} is unavailable: {exc}", tier="hot")

    def _stale_error(self, exc: redis.ResponseError) -> bool:
        """Does this error mean Redis lost what we verified (so re-verify and retry)?"""
        return False

    def call(self, fn, *, verify: bool = True):
        """Run ``fn`` against a verified Redis; retry once after reconnect/restart/re-verify.
        Raises :class:`InStandby` when Redis is loading or was restarted (the tier answers from
        the catalog until it is verified in the background)."""
        if self._standby is not None:
            raise InStandby(f"hot tier: answering from the catalog: {self._standby.reason}", tier="hot")
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
            except UNAVAILABLE as exc:
                last = exc
                self._verified = False
                restarts = self.stats["restarts"]
                loading = isinstance(exc, redis.BusyLoadingError)
                if not loading and not self._restart_embedded():
                    break
                if self.standby_ok and not self.read_only and (loading or self.stats["restarts"] != restarts):
                    why = "Redis is loading its data" if loading else "the embedded redis-server died and was restarted"
                    self._enter_standby(why)
                    raise InStandby(f"hot tier: answering from the catalog: {why}", tier="hot") from exc
                if loading:
                    time.sleep(0.1)
            except (redis.ResponseError, Stale) as exc:
                if isinstance(exc, redis.ResponseError) and not self._stale_error(exc):
                    # e.g. OOM under maxmemory: the tier cannot serve; say so in the typed error
                    raise TierUnavailableError(f"hot tier: Redis refused the command: {exc}", tier="hot") from exc
                last = exc
                self._verified = False
        raise self.unavailable(last) from last

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
            owner, backend, clean = self.r.hmget(self.meta_key, ["uuid", "backend", "clean"])
            if clean is not None:
                # One use only, and gone before this process can write anything to Redis (every
                # write goes through call(), which verifies first): a crash from now on leaves
                # no marker, so the next open reconciles.
                self.r.hdel(self.meta_key, "clean")
            if owner is None:
                # Empty server, FLUSHALL, or our keys were removed: rebuild everything.
                self.rebuild()
            elif as_str(owner) != self.catalog.uuid:
                raise IntegrityError(
                    f"hot tier: Redis keys under prefix {self.prefix!r} belong to another store "
                    f"(uuid {as_str(owner)}, this store is {self.catalog.uuid}); set hot.prefix"
                )
            elif as_str(backend or b"search") != self.backend:
                # hot.backend changed (stores from before vector sets have no backend field):
                # free what the other backend left in Redis, then index from the catalog.
                self._purge()
                self.rebuild()
            else:
                self._check_index()
                # A server that restarted (new run_id; first contact included) may have lost its
                # last second of AOF: writes AND removals, which equal counts would not reveal.
                run_id = as_str(self.r.info("server").get("run_id", ""))
                restarted, self._run_id = run_id != self._run_id, run_id
                # ... unless the last writer closed cleanly and nothing changed the catalog since:
                # its marker is the last thing it wrote, so a server that kept the marker kept
                # everything written before it (an AOF or RDB restores a prefix of the writes).
                trusted = (clean is not None and not self.sharded
                           and as_str(clean) == f"{self.catalog.uuid}:{self.catalog.generation()}")
                if (restarted and not trusted) or self.catalog.has_pending() or self.count() != self._catalog_hot_count():
                    self.reconcile()
                elif trusted:
                    self.stats["trusted_clean_close"] += 1
            if self._standby is None:  # (standing in: the warm-up stamps it once it switched back)
                self._stamp_serving()
            self._verified = True

    def note_unsynced(self) -> None:
        """Redis may hold a copy the catalog does not name and no pending mark covers (a
        relocation's undo failed): this run ends without a clean-close marker."""
        self._unsynced = True

    def mark_clean(self) -> bool:
        """At a clean close, once every pending change reached Redis: record that Redis agrees
        with the catalog at its current generation, so the next open need not diff the whole hot
        set against the catalog (a full reconcile: every key, every version). Not for a cluster
        (its slots may move between runs) or a tier that is not verified or stands in."""
        if self.read_only or self.sharded or not self._verified or self._standby is not None or self._unsynced:
            return False
        with self._lock:
            if self.catalog.has_pending():
                return False
            try:
                self.r.hset(self.meta_key, "clean", f"{self.catalog.uuid}:{self.catalog.generation()}")
            except redis.RedisError:
                return False
        return True

    def _stamp_serving(self) -> None:
        """Tell read-only processes that this Redis (by its run id) holds everything the
        catalog says is hot: the writer verified it and serves from it. A restarted server has
        another run id, and a rebuild removes the stamp first, so readers never search a Redis
        the writer is still refilling (they stand in from the catalog meanwhile)."""
        self._run_id = as_str(self.r.info("server").get("run_id", ""))
        self.r.hset(self.meta_key, "serving", self._run_id)

    def _verify_read_only(self) -> None:
        owner, backend, serving = self.r.hmget(self.meta_key, ["uuid", "backend", "serving"])
        if owner is not None and as_str(owner) == self.catalog.uuid and as_str(serving or b"") != as_str(
                self.r.info("server").get("run_id", "")):
            raise TierUnavailableError("hot tier (read-only): the writer has not verified this Redis since it "
                                       "(re)started or was refilled", tier="hot")
        if owner is None or as_str(owner) != self.catalog.uuid or as_str(backend or b"search") != self.backend:
            found = "nothing" if owner is None else f"store {as_str(owner)}, backend {as_str(backend or b'search')}"
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
            self.stats["reconciles"] += 1
            in_redis = self.keys()
            versions = {e.iid: e.version for e in self._iter_hot_entries()}
            in_catalog = set(versions)
            pending = set(self._own_pending())
            stale = self.stale({i: v for i, v in versions.items() if i in in_redis})
            self.stats["version_mismatch"] += len(stale)
            missing = (in_catalog - in_redis) | (pending & in_catalog) | stale
            # after keys(): an id copied in since was protected before its write
            protected = self.ids.protected_now()
            extra = ((in_redis - in_catalog) | (pending - in_catalog)) - protected
            # a protected id belongs to a move in progress: its mover syncs it after the reader grace
            self.sync_now(sorted((missing | extra) - protected))
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

    # A cluster shard (cluster_shard) holds only the vectors whose keys hash into its slots: these
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

    def rebuild(self, progress: ProgressFn | None = None) -> int:
        """Drop the index and every vector of this store, recreate, reload all hot records
        (``progress(done, total)``: vectors reloaded; about a minute per 100k with RediSearch)."""
        total = self._catalog_hot_count() if progress is not None else None
        with self._lock:
            self.r.hdel(self.meta_key, "serving")  # readers: not usable until refilled
            self._reset_index()
            self.r.hset(self.meta_key, mapping={"uuid": self.catalog.uuid, "backend": self.backend,
                                                "created": str(time.time()), **self._meta_fields()})
            n = 0
            for batch in chunks(self._iter_hot_entries(), 2000, progress, total):
                n += self.sync_now([e.iid for e in batch])
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
            if not (is_missing_index(exc) or is_unknown_command(exc)):
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
                n = self.call(lambda: self.sync_now(iids))
            except InStandby:
                n = 0
            if self._standby_sync(iids):
                return n
            self.catalog.clear_pending(iids)
        return n

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
            with contextlib.suppress(InStandby):
                n = self.call(lambda: self.write_now(iids, vectors, metas, versions))
        with self._standby_lock:
            if self._standby is not None:  # (also when Redis went away during this write)
                self._standby.put(iids, vectors, metas)
                self._dirty.update(iids)
                return n
        self.ids.add_synced(iids)
        return n

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
            raise Stale("hot tier: Redis was flushed during a write")
        return results

    def write_now(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]],
                   versions: Sequence[int]) -> int:
        """Write rows from memory (the :meth:`write` path) in pipelines that check our meta key."""
        for start in range(0, len(iids), CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for j in range(start, min(start + CHUNK, len(iids))):
                self._put(pipe, iids[j], vectors[j].tobytes(), metas[j] if self.schema else {}, versions[j])
            self._execute_checked(pipe)
        return len(iids)

    def sync_now(self, iids: Sequence[int]) -> int:
        """Write (or remove) ``iids`` in Redis as the catalog says now, without pending marks or
        verification (callers run it through :meth:`call`). Returns #written."""
        written = 0
        for start in range(0, len(iids), CHUNK):
            if self._closing.is_set():  # close() is waiting for the warm-up: leave the rest pending
                raise Stale("hot tier: closing")
            chunk = iids[start : start + CHUNK]
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


__all__ = ["HotTier"]
