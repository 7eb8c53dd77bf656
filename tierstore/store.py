"""TierStore: the facade a host service uses. Wires config, catalog, tiers and access statistics.

Writes go to the catalog (LMDB) first -- durable and acknowledged there -- and then to the tier
indexes; reads search the tiers and keep only what the catalog confirms (see query.py).

>>> import tierstore, tempfile, numpy as np                                  # doctest: +SKIP
>>> with tierstore.open(path=tempfile.mkdtemp(), dim=4) as store:           # doctest: +SKIP
...     store.upsert(["a", "b"], np.eye(4)[:2], metadata=[{"kind": "x"}, None])
...     store.query([1, 0, 0, 0], k=1).ids()
2
['a']
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import filters, inputs, migrate, paths, policy, query, shared
from .catalog import (
    FLAG_PINNED,
    TIER_CODES,
    TIER_COLD,
    TIER_HOT,
    TIER_NAMES,
    TIER_WARM,
    Catalog,
    Entry,
    normalize_ids,
)
from .cold import ColdTier
from .config import Config, load_config
from .errors import (
    CapacityError,
    ClosedError,
    ConfigError,
    IntegrityError,
    InvalidInputError,
    ReadOnlyError,
    StoreLockedError,
    TierStoreError,
    TierUnavailableError,
)
from .hot import HotTier, make_hot_tier
from .metrics import StoreMetrics
from .policy import AccessStats
from .results import Hits, MoveReport, PolicyReport, Record
from .services import MissingBinaryError, RedisServer, redisearch_module
from .warm import GROWING, WarmTier

log = logging.getLogger("tierstore")

_LATENCY_WINDOW = 4096  # recent query latencies kept for stats() percentiles
_SHARED_TRIES = 8  # a read-only query repeated while moves keep landing under it (then partial)


def open(config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None, *,
         registry: Any = None, read_only: bool = False, **overrides: Any) -> TierStore:
    """Open (or create) a store.

    ``read_only=True`` opens a store another process has open for writing (or nobody has):
    queries, ``get``, ``scan``, ``touch`` and ``stats`` work and follow the writer's changes
    without reopening; every write raises :class:`ReadOnlyError`. Without it, a store another
    process holds raises :class:`StoreLockedError` (see README, "Several processes, one store").

    ``config`` is a TOML file, a TOML-shaped dict or a :class:`Config`; ``overrides`` are store
    keys (``path=``, ``dim=``, ``metric=``) or whole sections (``hot={"capacity": 10}``). Without a
    ``hot.redis_url`` the store starts and owns a private redis-server under ``<path>/redis``.
    ``registry``: a ``prometheus_client.CollectorRegistry`` to export the store's metrics through
    as well as ``store.metrics.registry`` (see tierstore.metrics).
    """
    if config is None and "TIERSTORE_CONFIG" in os.environ:
        config = os.environ["TIERSTORE_CONFIG"]
    return TierStore(load_config(config, **overrides), registry=registry, read_only=read_only)


def _counted(op: str) -> Any:
    """Count the errors a public method raises in ``tierstore_errors_total{op, type}``."""

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def method(self: TierStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                self.metrics.error(op, exc)
                raise

        return method

    return wrap


def _embedded_search(backend: str) -> bool:
    """Whether the embedded redis-server loads RediSearch: not for vector sets (built into
    Redis 8), and for "auto" only when the module is installed (else auto picks vector sets)."""
    if backend == "vectorset":
        return False
    if backend == "auto":
        try:
            redisearch_module()
        except MissingBinaryError:
            return False
    return True


class _InFlight:
    """Context manager of :meth:`TierStore._op` (a class: cheaper than @contextmanager on the
    query path)."""

    __slots__ = ("store",)

    def __init__(self, store: TierStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        st = self.store
        with st._ops_cv:
            if st._closed:
                raise ClosedError(f"store at {str(st.path)!r} is closed")
            st._ops += 1

    def __exit__(self, *exc: object) -> None:
        st = self.store
        with st._ops_cv:
            st._ops -= 1
            if not st._ops:
                st._ops_cv.notify_all()


def _release_memory() -> None:
    """Give freed heap back to the OS (glibc's malloc_trim). Bulk work -- ingest into segments,
    seals, compaction, policy moves -- allocates and frees large buffers on several threads, and
    glibc keeps what each thread's arena freed: measured +250 MiB of RSS after a 100k ingest and a
    policy run, all of it free memory. Called only after such work (it walks the heap: tens of ms)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # musl and macOS have none
    except OSError:
        return None


_LIBC = _load_libc()


class TierStore:
    """A tiered vector store. Thread-safe; use as a context manager or call :meth:`close`."""

    _release_memory = staticmethod(_release_memory)  # for the policy cycle

    def __init__(self, config: Config, registry: Any = None, read_only: bool = False, *,
                 hot_factory: Any = None) -> None:
        self.config = cfg = config
        # hot_factory(catalog=, config=, schema=, metric=) -> a hot tier: the seam fast unit tests
        # use to run a whole store on tierstore.testing.MemoryHotTier (no Redis is started)
        self._hot_factory = hot_factory
        self.path = Path(cfg.store.path)
        self.dim, self.metric = cfg.store.dim, cfg.store.metric
        self.schema = dict(cfg.schema)
        self.read_only = bool(read_only)
        self._claim: str | None = None
        self._view: tuple[int, int, int] | None = None  # read-only: catalog state the tiers were refreshed at
        self._view_lock = threading.Lock()
        self._drain: shared.AccessDrain | None = None
        self._closed = False
        self._closed_cleanly = False
        self._server: RedisServer | None = None
        self._lock_fd: int | None = None
        self._write_lock = threading.RLock()
        self._ops = 0
        self._ops_cv = threading.Condition(threading.Lock())  # a plain Lock: cheaper than the default RLock
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._unlinking: dict[int, Future] = {}  # iid -> its background Redis removal (policy runs)
        self._counters = {"queries": 0, "partial": 0, "upserted": 0, "deleted": 0, "touched": 0, "spilled": 0}
        self.catalog: Catalog | None = None
        self.hot: HotTier | None = None
        self.warm: WarmTier | None = None
        self.cold: ColdTier | None = None
        self.metrics = StoreMetrics(self, cfg.store.name or str(self.path), registry)
        self._new_store: paths.NewStore | None = None  # set by _open when it creates the store
        try:
            self._open()
        except BaseException:
            # a failed open that created the store removes what it created, once its servers are
            # stopped -- only when it held the store's lock (else another opener owns the files)
            created = self._new_store if self._claim is not None and not self.read_only else None
            self._shutdown()
            paths.remove_created(created)
            raise

    def _open(self) -> None:
        cfg = self.config
        if self.read_only:
            self._open_read_only()
            return
        self._new_store = paths.check_new_store_path(self.path, cfg.source)  # a file, a foreign dir: ConfigError
        if cfg.policy.ingest_tier == "cold" and not cfg.cold.enabled:
            raise ConfigError("policy.ingest_tier: 'cold' is not allowed: the cold tier is disabled (cold.enabled = false)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(
                f"store at {str(self.path)!r} is open for writing in another process (or another TierStore "
                "in this one); close it first, or open it with read_only=True to query it alongside "
                "that writer (several processes, one store: see the README)"
            ) from None
        self._claim = shared.claim(self.path)
        self._drain = shared.AccessDrain(self.path / "access")
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        self.catalog = Catalog(self.path / "catalog", dim=self.dim, metric=self.metric, schema=self.schema)
        raw = self.catalog.get_meta(b"access")
        self.access = (AccessStats.loads(raw, cfg.policy.half_life) if raw
                       else AccessStats(cfg.policy.half_life, size=self.catalog.slot_limit()))
        url = cfg.hot.redis_url
        if url is None and self._hot_factory is None:
            self._server = RedisServer(self.path / "redis", search=_embedded_search(cfg.hot.backend))
            for attempt in range(3):  # a server killed while it starts is started again
                try:
                    self._server.start()
                    break
                except TierUnavailableError as exc:
                    if attempt == 2 or "exited with code -" not in str(exc):  # (a signal; not e.g. a bad AOF)
                        raise
                    log.warning("the embedded redis-server died while starting (%s); starting it again",
                                str(exc).splitlines()[0])
            url = self._server.url
        self.gate = query.ReaderGate()
        if cfg.cold.enabled:
            # An external bucket (or one already holding this store's data) is checked now, so a
            # wrong URL or credentials fail at open; an embedded S3 server starts when first needed.
            self.cold = ColdTier(self.path / "cold", self.catalog, cfg.cold, self.schema, self.metric, self.gate.wait)
            if self.cold.needs_connect_at_open():
                self.cold.connect()
        elif self.catalog.count(TIER_COLD):
            raise ConfigError(f"cold.enabled: false is not allowed: the store holds {self.catalog.count(TIER_COLD)} "
                              "cold vectors (move them to warm first)")
        if self._hot_factory is not None:
            self.hot = self._hot_factory(catalog=self.catalog, config=cfg.hot, schema=self.schema, metric=self.metric)
        else:
            self.hot = make_hot_tier(url, catalog=self.catalog, config=cfg.hot, schema=self.schema,
                                     metric=self.metric, server=self._server)
        self.hot.exclusive = self._write_lock  # no write in flight when it switches back from standby
        # verify now, so the first query is not the slow one; a Redis that is loading its data or
        # must be refilled is verified in the background while the catalog answers for it
        self.hot.open()
        self.warm = WarmTier(self.path / "warm", self.catalog, cfg.warm, self.schema, self.metric, self.gate.wait)
        self.tiers: dict[str, Any] = {"hot": self.hot, "warm": self.warm}
        if self.cold is not None:
            self.tiers["cold"] = self.cold
        self._all_tiers = list(self.tiers.values())
        size = cfg.store.repeat_cache
        self.repeat = query.RepeatCache(size, self.metric) if size else None
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="tierstore-query")
        self.policy = policy.PolicyEngine(self)
        self.policy.interrupted = migrate.interrupted_run(self)
        if self.policy.interrupted is not None:
            log.warning("a policy run was interrupted (pid %s); its open batch was rolled back at open and the "
                        "next cycle re-plans the rest", self.policy.interrupted.get("pid"))
        self.policy.start()
        if cfg.metrics.port is not None:
            self.metrics.serve(cfg.metrics.port, cfg.metrics.addr)

    def _open_read_only(self) -> None:
        """Open alongside the writer: the catalog read-only (LMDB's multi-process readers), the
        writer's Redis and S3, the tiers in read-only mode; no policy thread, no repair, no
        index creation, no LMDB write, no file deletion (but the shared block cache's own files)."""
        cfg = self.config
        if not (self.path / "catalog").is_dir():
            raise ConfigError(f"store.path: {str(self.path)!r} holds no tierstore store (read_only=True "
                              "opens an existing store; create it by opening it once for writing)")
        self._claim = shared.claim(self.path)
        self.catalog = Catalog(self.path / "catalog", dim=self.dim, metric=self.metric, schema=self.schema,
                               read_only=True)
        stored = dict(self.catalog.identity["schema"])
        if stored != self.schema:
            log.info("read-only store: using the store's [schema] %s (the config says %s)", stored, self.schema)
            self.schema = stored
        self.access = shared.AccessLog(self.path / "access")
        url, embedded = cfg.hot.redis_url, None
        if url is None:  # the writer's embedded server, never one of our own
            embedded = RedisServer(self.path / "redis", search=_embedded_search(cfg.hot.backend))
            url = embedded.url
        self.gate = query.ReaderGate()
        if cfg.cold.enabled:
            self.cold = ColdTier(self.path / "cold", self.catalog, cfg.cold, self.schema, self.metric,
                                 self.gate.wait, read_only=True)
        self.hot = make_hot_tier(url, catalog=self.catalog, config=cfg.hot, schema=self.schema,
                                 metric=self.metric, server=None, embedded=embedded)
        self.hot.read_only = True
        try:
            self.hot.open()
        except TierUnavailableError as exc:  # queries say partial=True until it is back
            log.warning("read-only store: %s", exc)
        self.warm = WarmTier(self.path / "warm", self.catalog, cfg.warm, self.schema, self.metric, self.gate.wait,
                             read_only=True)
        self.tiers = {"hot": self.hot, "warm": self.warm}
        if self.cold is not None:
            self.tiers["cold"] = self.cold
        self._all_tiers = list(self.tiers.values())
        self.repeat = None  # (the repeat cache is fed by this process's own writes)
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="tierstore-query")
        self.policy = policy.PolicyEngine(self)  # never started: its hit window feeds stats()
        self._refresh_view()
        if cfg.metrics.port is not None:
            self.metrics.serve(cfg.metrics.port, cfg.metrics.addr)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyError(
                f"{what}: the store at {str(self.path)!r} is open read-only in this process; writes go "
                "through the process that has it open for writing")

    def _refresh_view(self) -> int:
        """Read-only: bring the tiers' view up to the catalog if it changed since the last
        refresh (cheap when it did not: one LMDB read). Returns the move generation the view
        is current for (compared by queries before and after they search)."""
        state = self.catalog.view_state()
        if state == self._view:
            return state[1]
        with self._view_lock:
            if state == self._view:
                return state[1]
            moved = self._view is None or state[1] != self._view[1]
            self.warm.refresh(sealed=moved)
            if self.cold is not None:
                try:
                    self.cold.refresh()
                except TierStoreError as exc:  # S3 down: cold queries report it (partial=True)
                    log.warning("read-only store: cold tier refresh failed: %s", exc)
                    return state[1]  # not recorded: the next query tries again
            self._view = state
        return state[1]

    def drain_shared_accesses(self) -> int:
        """Writer: apply the accesses read-only processes recorded (each policy cycle and
        ``stats()`` call this). Returns how many were applied."""
        if self._drain is None or self.catalog is None:
            return 0
        return self._drain.drain(self.access.record, self.catalog.slot_limit())

    # --- lifecycle -------------------------------------------------------------------------------

    def _op(self) -> _InFlight:
        """Count an operation in flight, so close() waits for it instead of pulling the floor."""
        return _InFlight(self)

    def __enter__(self) -> TierStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flush, stop owned servers, release the store. Idempotent; waits for operations in flight."""
        if getattr(self, "policy", None) is not None and not self._closed:
            self.policy.stop()  # first: a cycle stops between batches, before the store goes
        with self._ops_cv:
            if self._closed:
                return
            self._closed = True
            self._ops_cv.wait_for(lambda: self._ops == 0, timeout=60)
        if self.read_only:
            try:
                if isinstance(getattr(self, "access", None), shared.AccessLog):
                    self.access.close()
            finally:
                self._shutdown()
            return
        try:
            with self._write_lock:
                if self.warm is not None:
                    self.warm.seal()  # a clean close leaves nothing to rebuild at the next open
            self._checkpoint()
            self._sync_pending(raise_errors=False)
            self._closed_cleanly = True
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self.metrics.stop()  # the exporter, and every registry the store joined
        if getattr(self, "policy", None) is not None:
            self.policy.stop()
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=True)
        if self.hot is not None:
            self.hot.close()
        if self.cold is not None:
            self.cold.close()
        if self._server is not None:
            if self._closed_cleanly and self.hot is not None and self.hot.standby_reason is None:
                self._server.rewrite_aof()  # so the next open loads an RDB base, not one command per vector
            self._server.stop()
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        shared.release(self._claim)
        self._claim = None

    @_counted("flush")
    def flush(self) -> None:
        """Make everything durable and every index current: apply queued index work, persist
        access statistics, fsync the catalog. (Read-only: hand recorded accesses to the writer.)"""
        if self.read_only:
            with self._op():
                self.access.flush()
            return
        with self._op():
            with self._write_lock:
                self.warm.seal()
                if self.cold is not None and self.catalog.cold_queue_len():
                    migrate.flush_cold_queue(self)
            self._sync_pending(raise_errors=True)
            self._checkpoint()
        _release_memory()

    def _checkpoint(self) -> None:
        if self.catalog is not None:
            self.catalog.set_meta(b"access", self.access.dumps())
            self.catalog.sync()

    def _sync_pending(self, raise_errors: bool) -> None:
        if self.hot is None or self.catalog is None:
            return
        self.catalog.clear_pending(self.hot.take_synced())
        if not self.catalog.has_pending():
            return
        try:
            with self._write_lock:
                self.hot.sync(self.catalog.pending())
        except TierUnavailableError:
            if raise_errors:
                raise
            log.warning("hot tier unavailable; %d index updates stay queued for the next open",
                        len(self.catalog.pending()))

    # --- writes ----------------------------------------------------------------------------------

    @_counted("upsert")
    def upsert(
        self,
        ids: Sequence[str | int] | np.ndarray,
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        tier: str | None = None,
    ) -> int:
        """Insert or replace vectors; returns how many were written.

        ``tier`` places the whole batch ("hot", "warm" or "cold"; default ``policy.ingest_tier``).
        An update is a new version and is placed the same way, wherever the old one lived (the old
        copy is removed once no running query can still want it). ``tier="cold"`` writes the batch
        as one S3 segment (acknowledged once the segment and the manifest are in S3): use large
        batches, and ``compact()`` to merge small segments.

        The batch is validated first (dims, NaN/inf, duplicate ids -> error, metadata types);
        a rejected batch writes nothing. Once this returns, the batch is durable and searchable.
        Without ``tier``, rows that do not fit the target tier's capacity spill to the next tier
        (one commit per tier: if a later tier fails, e.g. S3 for the cold overflow, the rows
        already committed to the earlier ones stay written -- retrying the batch is safe).
        If Redis fails after the durable commit, :class:`TierUnavailableError` is raised with
        ``durable=True``: the data is safe and is indexed when Redis is back (retrying is safe).
        """
        self._writable("upsert")
        ids = normalize_ids(ids)
        n = len(ids)
        if n == 0:
            raise InvalidInputError("upsert: empty batch (no ids); nothing to write")
        vecs = inputs.vectors_2d(vectors, dim=self.dim, metric=self.metric)
        if vecs.shape[0] != n:
            raise InvalidInputError(f"upsert: {n} ids but {vecs.shape[0]} vectors")
        inputs.check_unique(ids)
        metas = inputs.clean_metadata(metadata, n, self.schema)
        target = self._target_tier(tier)
        cat = self.catalog
        with self._op(), self._write_lock:
            iids = [cat.iid(u) for u in ids]
            with cat.read() as txn:
                old = [cat.entry(txn, iid) for iid in iids]
                for uid, e in zip(ids, old, strict=True):
                    cat.check_collision(e, uid)
                if tier is not None:
                    self._check_capacity(txn, old, target)
                    groups = {target: list(range(n))}
                else:
                    groups = self._spill(txn, old, target)
            if len(groups) > 1:
                self._counters["spilled"] += n - len(groups.get(target, []))
                log.info("upsert: %s tier full; %s", target,
                         ", ".join(f"{len(v)} to {t}" for t, v in groups.items()))
            error: TierUnavailableError | None = None
            for t, rows in groups.items():
                try:
                    slots = self._write_batch(t, [ids[i] for i in rows], [iids[i] for i in rows],
                                              [old[i] for i in rows], vecs[rows], [metas[i] for i in rows])
                except TierUnavailableError as exc:
                    if not exc.durable:
                        raise
                    error = exc  # durable: keep writing the other groups, then report it
                    continue
                # grace: the policy may promote them, not demote them below ``t`` for a while
                self.access.mark_placed(np.asarray(slots, dtype=np.int64), TIER_CODES[t])
            self._counters["upserted"] += n
            if error is not None:
                raise error
        return n

    def _spill(self, txn: Any, old: list[Entry | None], target: str) -> dict[str, list[int]]:
        """Rows of a batch per tier when ingest (no explicit tier) meets a full tier: the hot
        tier never goes past its capacity, and with a cold tier neither does warm; the overflow
        goes to the next tier down instead of failing."""
        chain = [t for t in ("hot", "warm", "cold")[TIER_CODES[target]:] if t in self.tiers]
        room = {t: (self.capacity(t) - self.catalog.count(TIER_CODES[t], txn)
                    if t == "hot" or (t == "warm" and "cold" in self.tiers) else len(old)) for t in chain}
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(old):
            for t in chain:
                if (e is not None and e.tier == TIER_CODES[t]) or room[t] > 0 or t == chain[-1]:
                    if not (e is not None and e.tier == TIER_CODES[t]):
                        room[t] -= 1
                    groups.setdefault(t, []).append(i)
                    break
        return groups

    def capacity(self, tier: str) -> int:
        """The vector budget of ``tier``: ``<tier>.capacity``, lowered by ``<tier>.capacity_bytes``
        (estimated bytes per vector, see policy.bytes_per_vector and the hot backend's
        bytes_per_vector) where that is set."""
        cfg = getattr(self.config, tier)
        if tier == "cold":
            return 2**62
        cap = cfg.capacity
        if cfg.capacity_bytes:
            per = self.hot.bytes_per_vector() if tier == "hot" else policy.bytes_per_vector(tier, self.dim, cfg.m)
            cap = min(cap, cfg.capacity_bytes // per)
        return cap

    def _write_batch(self, target: str, ids: list[str | int], iids: list[int], old: list[Entry | None],
                     vecs: np.ndarray, metas: list[tuple[dict, bytes]]) -> list[int]:
        """Write one batch to one tier (the caller holds the write lock and has validated it);
        returns the policy slots of the rows."""
        n = len(ids)
        code = TIER_CODES[target]
        cat = self.catalog
        clean = [m[0] for m in metas]
        slots = [0] * n
        labels = [0] * n
        leaving_hot = [e.iid for e in old if e is not None and e.tier == TIER_HOT] if target != "hot" else []
        arriving_hot = iids if target == "hot" else []
        self._await_unlinks(arriving_hot)
        # Redis keeps the old copies until the reader grace, and new copies written before the
        # flip are not "extra" to a concurrent reconciliation.
        self.hot.protect(leaving_hot + arriving_hot)
        redis_error: TierUnavailableError | None = None
        reserved = False
        written = None
        try:
            # Copy before the flip: the new home holds the rows before the catalog names them
            # (a query whose snapshot predates the flip drops them by the catalog check).
            if target == "warm":
                labels = self.warm.reserve(n)
                reserved = True
                self.warm.add(labels, iids, vecs, clean)
            elif target == "cold":
                written = self.cold.write(np.asarray(iids, np.uint64), vecs, clean, ids, op="ingest")
                self.cold.activate(written)
                labels = written.rows.tolist()
            else:
                try:
                    self.hot.write(iids, vecs, clean, [1 if e is None else e.version + 1 for e in old])
                except TierUnavailableError as exc:
                    redis_error = exc  # still commit: durable now, indexed when Redis is back
            synced = self.hot.take_synced()  # never take hot's lock inside a catalog write
            with cat.write() as txn:
                change = cat.lower_change(txn)
                cat.clear_pending(synced, txn)
                new_slots = iter(cat.alloc_slots(txn, sum(e is None for e in old)))
                seg = {"warm": GROWING, "hot": 0}.get(target) if written is None else written.seg.sid
                for i, (iid, e) in enumerate(zip(iids, old, strict=True)):
                    slot = slots[i] = next(new_slots) if e is None else e.slot
                    flags = 0 if e is None else e.flags
                    version = 1 if e is None else e.version + 1
                    if written is None:
                        cat.put_vector(txn, iid, vecs[i].tobytes())
                    else:  # cold vectors are durable in S3, not in LMDB
                        cat.delete_vector(txn, iid)
                    cat.put_entry(txn, Entry(iid, code, flags, slot, seg, labels[i], version, ids[i], metas[i][1]))
                # Redis work that must survive a crash: rows not yet indexed (Redis failed, or the
                # catalog stands in for it while it loads), old copies to remove
                unindexed = target == "hot" and (redis_error is not None or self.hot.standby_reason is not None)
                cat.add_pending(txn, (iids if unindexed else []) + leaving_hot)
                cat.unqueue_cold(txn, iids)  # placed explicitly: no longer waiting for demotion
                if written is not None:
                    self.cold.commit(txn, written)
        except BaseException:
            if reserved:
                self.warm.discard(labels)
            if arriving_hot and redis_error is None:
                # the copy reached Redis but its commit failed: put back what the catalog holds
                with contextlib.suppress(Exception):
                    self.hot.sync(arriving_hot)
            self.hot.unprotect(leaving_hot + arriving_hot)
            if written is not None:
                try:
                    self.cold.abort(written)
                except Exception as exc:  # keep the original error; the next open repairs the manifest
                    log.warning("cold tier: abort of segment %d failed: %s", written.seg.sid, exc)
            raise
        self.hot.unprotect(arriving_hot)
        if target != "hot":
            self._note_lower(change, vecs)
        # Old versions that lived elsewhere (another tier, or another warm row) go after the
        # reader grace; a hot -> hot update overwrote its hash in place.
        displaced = [e for e in old if e is not None and (e.tier != TIER_HOT or target != "hot")]
        if displaced:
            self._remove_old(displaced)
        if redis_error is not None:
            raise TierUnavailableError(
                f"{redis_error}. The write IS durable in the catalog and will be indexed when Redis is "
                "back (retrying it is safe)", tier="hot", durable=True) from redis_error
        if target == "warm" and self.warm.needs_seal():
            self.warm.seal()
        return slots

    def _note_lower(self, change: tuple[int, int], vecs: np.ndarray) -> None:
        """After a committed write that placed ``vecs`` in warm or cold: lets repeated queries
        keep skipping those tiers when the new vectors are farther than their hot answer."""
        if self.repeat is not None:
            self.repeat.note(change[0], change[1], vecs)

    def _remove_old(self, entries: list[Entry], background: Executor | None = None) -> Future | None:
        """Remove superseded copies once no query that could still want them is running. Hot
        copies were protected from reconciliation by the caller before its catalog flip.

        With ``background``, the Redis removals run there (returns the future): RediSearch
        deletes an HNSW node synchronously, about as slowly as it inserts one, so the policy's
        executor overlaps them with its next batch. Their pending marks are durable already."""
        self.gate.wait()
        self.warm.kill([e for e in entries if e.tier == TIER_WARM])
        gone_hot = [e.iid for e in entries if e.tier == TIER_HOT]
        if not gone_hot:
            return None
        if background is not None:
            fut = background.submit(self._unlink_hot, gone_hot)
            for iid in gone_hot:
                self._unlinking[iid] = fut
            fut.add_done_callback(lambda f, ids=gone_hot: [self._unlinking.pop(i, None) for i in ids
                                                           if self._unlinking.get(i) is f])
            return fut
        self._unlink_hot(gone_hot)
        return None

    def _await_unlinks(self, iids: Sequence[int]) -> None:
        """Wait for background Redis removals of any of ``iids`` (a vector coming back to hot
        must not have its new key unlinked by a removal queued for its old one)."""
        if self._unlinking:
            for fut in {self._unlinking.get(i) for i in iids} - {None}:
                fut.result()

    def _unlink_hot(self, gone_hot: list[int]) -> None:
        try:
            self.hot.sync(gone_hot)  # state-based: unlinks, clears the pending marks
        except TierUnavailableError as exc:
            log.warning("Redis removal of %d moved vectors deferred: %s", len(gone_hot), exc)
        finally:
            self.hot.unprotect(gone_hot)

    def _target_tier(self, tier: str | None) -> str:
        target = tier or self.config.policy.ingest_tier
        if target not in TIER_CODES:
            raise InvalidInputError(f"tier: unknown tier {target!r}; tiers are 'hot', 'warm', 'cold'")
        if target not in self.tiers:
            raise InvalidInputError(
                f"tier: {target!r} is not enabled in this store (enabled: {list(self.tiers)})"
                + (" -- set policy.ingest_tier" if tier is None else "")
            )
        return target

    def _check_capacity(self, txn: Any, old: list[Entry | None], target: str) -> None:
        if target == "cold" or (target == "warm" and self.cold is None):
            return  # S3 has no limit; without a cold tier, warm takes what does not fit hot
        cap = self.capacity(target)
        code = TIER_CODES[target]
        incoming = sum(1 for e in old if e is None or e.tier != code)
        have = self.catalog.count(code, txn)
        if have + incoming > cap:
            raise CapacityError(
                f"{target} tier is full: it holds {have} of {target}.capacity = {cap} vectors and "
                f"this batch adds {incoming}; nothing was written (raise {target}.capacity, delete, or "
                "leave tier= unset: ingest then spills to the next tier)"
            )

    @_counted("delete")
    def delete(self, ids: Sequence[str | int] | np.ndarray) -> int:
        """Delete vectors; returns how many existed. Unknown ids are ignored.

        The catalog tombstone is the delete (durable, immediately invisible to queries); removal
        from Redis follows, and is retried later if Redis is down -- never an error here."""
        self._writable("delete")
        ids = normalize_ids(ids)
        if not ids:
            return 0
        cat = self.catalog
        with self._op(), self._write_lock:
            gone: list[Entry] = []
            synced = self.hot.take_synced()  # consumed before new marks: a late clear must not hit them
            with cat.write() as txn:
                cat.clear_pending(synced, txn)
                for uid in ids:
                    iid = cat.iid(uid)
                    e = cat.entry(txn, iid)
                    if e is None or e.uid != uid:
                        continue
                    cat.delete_entry(txn, iid)
                    cat.delete_vector(txn, iid)
                    gone.append(e)
                # a cold vector's row becomes dead in its segment (compact reclaims it)
                cat.unqueue_cold(txn, [e.iid for e in gone])
                cat.add_pending(txn, [e.iid for e in gone if e.tier == TIER_HOT])
            self.access.forget(np.asarray([e.slot for e in gone], dtype=np.int64))
            self._counters["deleted"] += len(gone)
            # A query that began before the delete may miss the vector or not: both are answers
            # of a moment around the delete, so no reader grace is needed here.
            self.warm.kill([e for e in gone if e.tier == TIER_WARM], reusable=False)
            try:
                self.hot.sync([e.iid for e in gone if e.tier == TIER_HOT])
            except TierUnavailableError as exc:
                log.warning("delete is durable; Redis removal deferred: %s", exc)
        return len(gone)

    @_counted("move")
    def move(self, ids: Sequence[str | int] | np.ndarray, tier: str, *, defer: bool = False) -> MoveReport:
        """Move vectors to ``tier`` ("hot", "warm" or "cold"): copy, flip the catalog entry, remove
        the old copy. Queries running meanwhile see each vector exactly once. Ids already there or
        unknown are counted, not errors.

        Moving to cold writes the vectors as new S3 segments before returning. ``defer=True``
        instead queues them durably (``MoveReport.queued``) and writes one segment when the queue
        reaches ``cold.segment_size`` or on :meth:`flush` -- fewer, larger segments."""
        self._writable("move")
        ids = normalize_ids(ids)
        report = migrate.move(self, ids, tier, defer=defer)
        # the policy leaves them there (up or down) for the grace period
        self.access.mark_placed(self._slots_of(ids), TIER_CODES[report.tier], explicit=True)
        return report

    def pin(self, ids: Sequence[str | int] | np.ndarray, tier: str | None = None) -> int:
        """Keep vectors where they are (or first :meth:`move` them to ``tier``): the policy never
        moves a pinned vector. Returns how many ids exist. Pins survive updates and restarts;
        config-level pins are ``policy.pin_hot`` / ``pin_warm`` / ``pin_cold`` filters."""
        self._writable("pin")
        ids = normalize_ids(ids)
        if tier is not None:
            self.move(ids, tier)
        with self._op(), self._write_lock:
            iids = [self.catalog.iid(u) for u in ids]
            self.catalog.set_flags(iids, FLAG_PINNED, 0)
            return len(self._slots_of(ids))

    def unpin(self, ids: Sequence[str | int] | np.ndarray) -> int:
        """Hand vectors back to the policy. Returns how many were pinned."""
        self._writable("unpin")
        ids = normalize_ids(ids)
        with self._op(), self._write_lock:
            return self.catalog.set_flags([self.catalog.iid(u) for u in ids], 0, FLAG_PINNED)

    def run_policy(self, dry_run: bool = False, examples: int = 20) -> PolicyReport:
        """Run one policy cycle now: score every vector by its decayed access count, fill the hot
        budget with the most used, warm with the next, the rest cold (hysteresis, pins, grace
        period and ``policy.max_moves_per_cycle`` apply), and carry out the moves in batches.
        ``dry_run=True`` only plans: the report says what would move and why (``examples``
        moves per direction are listed with their reasons).

        >>> report = store.run_policy(dry_run=True)                        # doctest: +SKIP
        >>> report.planned, report.thresholds                              # doctest: +SKIP
        ({'cold->hot': 120, 'hot->warm': 120}, {'hot': 3.2, 'warm': 0.4})
        """
        self._writable("run_policy")
        with self._op():
            return self.policy.run(dry_run=dry_run, examples=examples)

    # --- reads -----------------------------------------------------------------------------------

    @_counted("get")
    def get(self, ids: Sequence[str | int] | np.ndarray) -> list[Record | None]:
        """The stored records of ``ids`` (``None`` for ids that do not exist), in order."""
        ids = normalize_ids(ids)
        with self._op():
            with self.catalog.read() as txn:
                found = [self.catalog.entry(txn, self.catalog.iid(uid)) for uid in ids]
                found = [e if e is not None and e.uid == uid else None for e, uid in zip(found, ids, strict=True)]
            return self._records(found)

    def _records(self, entries: list[Entry | None], locked: bool = False) -> list[Record | None]:
        """Records of catalog entries: hot and warm vectors from LMDB, cold ones from S3 (one
        ranged GET per partition involved, through the block cache). An entry that changed since
        it was read is re-read, so each record is the current version."""
        out: list[Record | None] = [None] * len(entries)
        cold: list[tuple[int, Entry]] = []
        with self.catalog.read() as txn:
            for i, e in enumerate(entries):
                if e is None:
                    continue
                now = self.catalog.entry(txn, e.iid)
                if now is None:
                    continue
                if now.tier == TIER_COLD:
                    cold.append((i, now))
                    continue
                vec = self.catalog.vector(txn, e.iid)
                if vec is not None:
                    out[i] = Record(now.uid, vec, now.metadata, TIER_NAMES[now.tier])
        if cold:
            try:
                vecs = self.cold.fetch([e for _, e in cold])
            except IntegrityError:
                if locked:
                    raise
                if self.read_only:  # retired under us: follow the catalog and read again
                    self._view = None
                    self._refresh_view()
                    time.sleep(0.05)
                    return self._records(entries, locked=True)
                # a compaction may have retired the segment after our read: read again under the
                # write lock, so that cannot repeat (a real corruption raises again)
                with self._write_lock:
                    return self._records(entries, locked=True)
            for i, e in cold:
                out[i] = Record(e.uid, vecs[e.iid], e.metadata, "cold")
        return out

    @_counted("query")
    def query(
        self,
        vector: Any,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        tiers: Sequence[str] | str | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
        strict: bool = False,
    ) -> Hits:
        """The ``k`` nearest stored vectors to ``vector`` over every tier (or ``tiers``).

        ``filter`` uses the DESIGN filter language over ``[schema]`` fields; ``ef`` overrides the
        HNSW search breadth, ``nprobe`` the cold partitions probed. The result is sorted by
        distance (lower is closer); ``hits.partial`` is true when a tier failed or timed out --
        or, with ``strict=True``, the tier's error is raised instead.
        """
        q = inputs.query_vector(vector, dim=self.dim, metric=self.metric)
        return self._search(q.reshape(1, -1), k, filter, tiers, ef, nprobe, strict)[0]

    @_counted("query")
    def query_batch(
        self,
        vectors: Any,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        tiers: Sequence[str] | str | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
        strict: bool = False,
    ) -> list[Hits]:
        """:meth:`query` for each row of ``vectors`` (n, dim), in pipelined round trips. No rows
        (``[]``, an array of shape ``(0, dim)``): no queries, ``[]`` (like ``get([])``)."""
        if (isinstance(vectors, list | tuple) and not vectors) or (isinstance(vectors, np.ndarray)
                                                                    and vectors.shape == (0,)):
            vectors = np.empty((0, self.dim), np.float32)
        qs = inputs.vectors_2d(vectors, dim=self.dim, metric=self.metric)
        return self._search(qs, k, filter, tiers, ef, nprobe, strict)

    def _search(self, qs: np.ndarray, k: Any, flt: Any, tiers: Any, ef: Any, nprobe: Any, strict: bool) -> list[Hits]:
        if type(k) is not int or not 0 < k <= inputs.MAX_K:
            k = inputs.check_k(k)
        if ef is not None:
            ef = inputs.check_positive(ef, "ef")
        if nprobe is not None:
            nprobe = inputs.check_positive(nprobe, "nprobe")
        node = filters.TRUE if flt is None else filters.compile_filter(flt, self.schema)
        searched = self._all_tiers if tiers is None else [self.tiers[n] for n in inputs.check_tiers(tiers, list(self.tiers))]
        if not len(qs):  # query_batch of no rows: the arguments are checked, nothing is searched
            with self._op():
                return []
        t0 = time.perf_counter()
        with self._op():
            key = None
            if self.repeat is not None and len(qs) == 1:
                key = xxhash.xxh3_128_digest(b"%r|%r|%r|%r|%r|" % (k, ef, nprobe, flt and sorted(flt.items()), [
                    t.name for t in searched]) + qs.tobytes())
            if self.read_only:
                out, slots = self._search_shared(qs, k, node, ef, nprobe, strict, searched, key)
            else:
                epoch = self.gate.enter()
                try:
                    out, slots = query.run(self.catalog, searched, qs, k, node, ef=ef, nprobe=nprobe,
                                           executor=self._executor, strict=strict,
                                           repeat=self.repeat if key else None, repeat_key=key)
                finally:
                    self.gate.exit(epoch)
        dt = (time.perf_counter() - t0) / len(out)
        if len(out) == 1:
            self._latencies.append(dt)
        else:
            self._latencies.extend([dt] * len(out))
        self._counters["queries"] += len(out)
        self._counters["partial"] += sum(h.partial for h in out)
        self.metrics.observe_queries(out, dt)
        self.policy.hits.add(out)
        if self.config.policy.access == "top1":
            flat = [s[0] for s in slots if s]
        else:
            flat = slots[0] if len(slots) == 1 else [x for s in slots for x in s]
        self.access.record(flat)
        return out

    def _search_shared(self, qs: np.ndarray, k: int, node: Any, ef: Any, nprobe: Any, strict: bool,
                       searched: list[Any], key: bytes | None) -> tuple[list[Hits], list[list[int]]]:
        """A read-only process's query. The writer removes an old copy (a Redis key, a compacted
        segment) once *its own* queries are done, not ours, so a query here is checked from
        outside: the tiers' view is refreshed to the catalog's move generation, the catalog
        snapshot must still be at that generation (query.StaleView otherwise) and so must the
        catalog after the search -- a move that committed meanwhile may have removed a copy the
        snapshot pointed at, so the query is repeated on a fresh view. Writes that only add
        vectors do not count as moves: they never remove anything."""
        out: Any = None
        for _attempt in range(_SHARED_TRIES):
            gen = self._refresh_view()
            try:
                out, slots = query.run(self.catalog, searched, qs, k, node, ef=ef, nprobe=nprobe,
                                       executor=self._executor, strict=strict,
                                       repeat=self.repeat if key else None, repeat_key=key, move_gen=gen)
            except query.StaleView:
                continue
            except TierStoreError:
                if self.catalog.move_generation() != gen:
                    continue  # e.g. a cold object retired under us: not an error of the store
                raise
            if self.catalog.move_generation() == gen:
                return out, slots
        if out is None:  # every attempt was overtaken: one last, unchecked answer
            out, slots = query.run(self.catalog, searched, qs, k, node, ef=ef, nprobe=nprobe,
                                   executor=self._executor, strict=strict, move_gen=None)
        log.warning("read-only query: moves kept committing under it (%d tries); answer flagged partial",
                    _SHARED_TRIES)
        for h in out:
            h.partial = True
        return out, slots

    def _slots_of(self, ids: list[str | int]) -> np.ndarray:
        out = []
        with self.catalog.read() as txn:
            for uid in ids:
                e = self.catalog.entry(txn, self.catalog.iid(uid))
                if e is not None and e.uid == uid:
                    out.append(e.slot)
        return np.asarray(out, dtype=np.int64)

    @_counted("touch")
    def touch(self, ids: Sequence[str | int] | np.ndarray) -> int:
        """Record an access to each id without a query (e.g. the item a user clicked).
        Returns how many of the ids exist."""
        ids = normalize_ids(ids)
        with self._op():
            slots = self._slots_of(ids)
            self.access.record(slots)
            self._counters["touched"] += len(slots)
        return len(slots)

    def scan(self, batch_size: int = 10_000, tiers: Sequence[str] | str | None = None) -> Iterator[list[Record]]:
        """Every live record exactly once, in batches, in internal-id order.

        Safe to run while writing: each batch is read in its own short transaction and the scan
        resumes after the last internal id it returned, so it never holds the catalog open."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size: {batch_size!r} must be a positive integer")
        codes = [TIER_CODES[n] for n in inputs.check_tiers(tiers, list(self.tiers))]
        last: int | None = None
        while True:
            with self._op():
                entries = self.catalog.iter_entries(tiers=codes, start_after=last, limit=batch_size)
                if not entries:
                    return
                # re-read now: skip what was deleted since the listing; a moved one is read where it is
                batch = [r for r in self._records(list(entries)) if r is not None]
                if tiers is not None:
                    batch = [r for r in batch if TIER_CODES[r.tier] in codes]
                last = entries[-1].iid
            if batch:
                yield batch

    def __len__(self) -> int:
        with self._op():
            return sum(self.catalog.counts().values())

    # --- maintenance -----------------------------------------------------------------------------

    @_counted("compact")
    def compact(self, threshold: float | None = None) -> dict[str, Any]:
        """Rewrite warm and cold segments whose dead fraction exceeds ``threshold`` (default
        ``warm.compact_threshold`` / ``cold.compact_threshold``; 0 rewrites every segment with any
        dead row), merge small ones, and delete S3 objects no manifest lists (crash leftovers)."""
        self._writable("compact")
        with self._op(), self._write_lock:
            out = {"warm": self.warm.compact(threshold)}
            if self.cold is not None and (self.cold.connected or self.cold.needs_connect_at_open()):
                out["cold"] = migrate.compact_cold(self, threshold)
        _release_memory()
        return out

    def verify(self, deep: bool = True, repair: bool = False) -> dict[str, Any]:
        """Check that the catalog, the tiers and S3 agree: every hot id is in Redis and nothing
        else is, every warm id's segment row holds it, every cold object's checksums (``deep``
        downloads every object) and the manifest. ``deep`` also hashes every byte of every warm
        segment file and of the local cold caches (a damaged warm segment stops being served, a
        damaged cache file is dropped). ``repair``: rebuild damaged warm segments (and those
        written before checksums existed) from the catalog; ``report["repaired"]`` says which.
        Returns a report; ``report["ok"]`` says if all is well (after any repair),
        ``report["problems"]`` lists what is not."""
        self._writable("verify (it repairs what it can; run it in the writer)")
        with self._op(), self._write_lock:
            return migrate.verify(self, deep, repair)

    def rebuild_hot(self) -> int:
        """Drop and rebuild the Redis index from the catalog's durable records. Returns #vectors."""
        self._writable("rebuild_hot")
        with self._op(), self._write_lock:
            return self.hot.rebuild()

    def stats(self) -> dict[str, Any]:
        """Counts, bytes and latencies per tier, plus query counters (a JSON-able dict)."""
        with self._op():
            if self.read_only:
                self._refresh_view()
            else:
                self.drain_shared_accesses()
            self.access.apply()
            counts = self.catalog.counts()
            lat = np.asarray(self._latencies, dtype=np.float64) * 1000.0
            hot: dict[str, Any] = {"count": counts["hot"], "capacity": self.capacity("hot"),
                                   "embedded": self._server is not None}
            if self.hot.standby_reason is not None:  # answered from the catalog until Redis is verified
                hot.update(ok=True, standby=self.hot.standby_reason)
            else:
                try:
                    hot.update(self.hot.info())
                    hot["ok"] = True
                except TierUnavailableError as exc:
                    hot.update(ok=False, error=str(exc))
            tiers = {"hot": hot, "warm": {"count": counts["warm"], "capacity": self.capacity("warm"),
                                          **self.warm.info()}}
            if self.cold is not None:
                tiers["cold"] = {"count": counts["cold"], **self.cold.info()}
            return {
                "store": {"path": str(self.path), "dim": self.dim, "metric": self.metric, "read_only": self.read_only,
                          "uuid": self.catalog.uuid, "vectors": sum(counts.values()),
                          "schema": dict(self.schema)},
                "tiers": tiers,
                "catalog": {"disk_bytes": self.catalog.disk_bytes(),
                            "pending_index_updates": len(self.catalog.pending(limit=1_000_000)),
                            "generation": self.catalog.generation()},
                "queries": {
                    **self._counters,
                    "latency_ms": {p: float(np.percentile(lat, q)) if len(lat) else None
                                   for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
                },
                "repeat_cache": {"size": self.repeat.size, "entries": len(self.repeat), "skips": self.repeat.skips,
                                 "misses": self.repeat.misses, "carried": self.repeat.carried} if self.repeat else {"size": 0},
                # half_life: in accesses under half_life = "auto" (logical time), else seconds;
                # half_life_s only for a fixed (wall-time) half-life
                "access": {"recorded": self.access.total_accesses, "half_life": self.access.half_life,
                           "half_life_unit": "accesses" if self.access.auto else "seconds",
                           "half_life_s": None if self.access.auto else self.access.half_life,
                           "from_readers": self._drain.drained if self._drain is not None else 0},
                "policy": self.policy.stats(),
            }

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} vectors"
        return f"<TierStore {str(self.path)!r} dim={self.dim} metric={self.metric} {state}>"


__all__ = ["TierStore", "open"]
