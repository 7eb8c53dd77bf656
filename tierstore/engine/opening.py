"""Open and close a store's engine: one path for the writer and for read-only processes.

The two roles differ in what they own, not in how the tiers are built:

==================  =========================================  ==========================================
                    writer                                     reader (``read_only=True``)
==================  =========================================  ==========================================
store lock          ``LOCK`` (flock, exclusive)                none (LMDB's multi-process readers)
catalog             read-write                                 read-only; the store's own ``[schema]``
Redis               starts the embedded server if no URL       the writer's (embedded or not), never its own
                                                               (none running: the catalog stands in)
embedded S3         started by the cold tier when needed       the writer's; while none runs, its own
                                                               (:class:`services.ServerKeeper`)
access recorder     :class:`policy.AccessStats` (in memory)    :class:`ReaderAccess` (files the writer drains)
policy thread       started                                    built for its hit window and dry runs, never started
repairs             at open (journals, pending marks)          none: nothing is written
==================  =========================================  ==========================================

Both recorders follow the :class:`AccessRecorder` protocol (``record``, ``apply``, ``flush``,
``total_accesses``).

A read-only process with no writer running still answers completely: the hot tier's vectors are
in the catalog (``records``), and the hot tier stands in for Redis with an exact scan of them (see
tiers/hot/standby.py); cold vectors exist only in S3, so where S3 is the store's embedded server
the reader runs that server itself from its data directory until a writer takes it over.
"""

from __future__ import annotations

import fcntl
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .. import paths, policy, shared
from ..catalog import TIER_COLD, Catalog
from ..errors import ConfigError, StoreLockedError, TierUnavailableError
from ..services import MissingBinaryError, RedisServer, S3Server, ServerKeeper, redisearch_module
from ..tiers.cold import ColdTier
from ..tiers.hot import make_hot_tier
from ..tiers.warm import WarmTier
from . import cycle, maintenance, moves, query
from .core import Engine
from .placement import PlacementIndex

log = logging.getLogger("tierstore")


class ReaderAccess(shared.AccessLog):
    """A read-only process's accesses: appended to files the writer's policy drains
    (:class:`shared.AccessLog`). A dry-run policy cycle here (``tierstore policy --dry-run
    --read-only``) plans from the access counts the writer last saved in the catalog (after each
    of its cycles, and at flush and close): ``columns``, ``grace`` and ``scale`` answer from that
    checkpoint, read afresh by ``columns`` (the first of them a plan asks), as do ``scale`` and
    ``scaled``."""

    def __init__(self, root: Any, catalog: Catalog, half_life: float | str) -> None:
        super().__init__(root)
        self._catalog, self._half_life = catalog, half_life
        self._saved: policy.AccessStats | None = None

    def saved(self) -> policy.AccessStats:
        """The writer's last checkpoint of the access counts (empty if it never saved one)."""
        return policy.AccessStats.restore(self._catalog.load_access(), self._half_life, self._catalog.slot_limit())

    def columns(self, slots: Any, now: float, grace: float) -> Any:
        self._saved = self.saved()
        return self._saved.columns(slots, now, grace)

    def grace(self, slots: Any, now: float, grace: float) -> Any:
        return (self._saved or self.saved()).grace(slots, now, grace)

    def scale(self, now: float) -> float:
        return (self._saved or self.saved()).scale(now)

    def scaled(self, accesses: float, now: float) -> float:
        return (self._saved or self.saved()).scaled(accesses, now)


class ReaderPlacement(PlacementIndex):
    """A read-only process's placement index: the writer changes entries without telling it, so
    it never counts as built, and each dry-run plan reads the catalog afresh."""

    built = property(lambda self: False, lambda self, value: None)


class AccessRecorder(Protocol):
    """Where queries and ``touch`` record accesses (by policy slot)."""

    total_accesses: int

    def record(self, slots: Any, now: float | None = None) -> None: ...
    def apply(self) -> None: ...


def embedded_search(backend: str) -> bool:
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


class Opened:
    """What an open acquired beyond the engine's parts, for :func:`shutdown`."""

    def __init__(self) -> None:
        self.claim: str | None = None
        self.lock_fd: int | None = None
        self.server: RedisServer | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.new_store: paths.NewStore | None = None  # set when this open created the store
        self.keeper: ServerKeeper | None = None  # read-only: the embedded S3 server while no writer runs it


def _lock_store(eng: Engine, op: Opened) -> None:
    """Take the store's flock. ``op.lock_fd`` is set only once it is held: a failed open cleans
    up what it created only if it held the lock (else the files are another opener's)."""
    fd = os.open(eng.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(
            f"store at {str(eng.path)!r} is open for writing in another process (or another TierStore "
            "in this one); close it first, or open it with read_only=True to query it alongside "
            "that writer (several processes, one store: see the README)"
        ) from None
    op.lock_fd = fd


def _start_embedded_redis(eng: Engine, op: Opened) -> str:
    op.server = RedisServer(eng.path / "redis", search=embedded_search(eng.config.hot.backend))
    for attempt in range(3):  # a server killed while it starts is started again
        try:
            op.server.start()
            break
        except TierUnavailableError as exc:
            if attempt == 2 or "exited with code -" not in str(exc):  # (a signal; not e.g. a bad AOF)
                raise
            log.warning("the embedded redis-server died while starting (%s); starting it again",
                        str(exc).splitlines()[0])
    return op.server.url


_EMBEDDED_S3_BUCKET = "tierstore"  # the embedded S3 server's bucket (tiers/cold/tier.py)


def _keep_embedded_s3(eng: Engine, op: Opened) -> None:
    """A read-only process of a store on its embedded S3 server: the cold vectors are only there,
    and only the writer starts that server. With none running (no writer), run it ourselves --
    started now, so the first query is complete, and kept running by a thread (a writer that
    opens takes it over on the same port; one that closes leaves it to us again). Only while the
    catalog lists cold segments: else there is nothing to serve. (If it cannot start, the cold
    tier says so in every answer: ``partial``.)"""
    root = eng.path / "cold"
    catalog = eng.catalog
    server = S3Server(root / "s3", buckets=(_EMBEDDED_S3_BUCKET,), endpoint_file=root / "s3.json")
    op.keeper = ServerKeeper(server, wanted=lambda: bool(catalog.cold_segments()))
    op.keeper.check()
    op.keeper.start()


def open_engine(eng: Engine, op: Opened, hot_factory: Any = None) -> None:
    """Build the engine's parts (the writer when ``eng.read_only`` is false). ``hot_factory``
    replaces the Redis-backed hot tier (tierstore.testing.MemoryHotTier)."""
    cfg, ro = eng.config, eng.read_only
    if ro:
        if not (eng.path / "catalog").is_dir():
            raise ConfigError(f"store.path: {str(eng.path)!r} holds no tierstore store (read_only=True "
                              "opens an existing store; create it by opening it once for writing)")
    else:
        op.new_store = paths.check_new_store_path(eng.path, cfg.source)  # a file, a foreign dir: ConfigError
        if cfg.policy.ingest_tier == "cold" and not cfg.cold.enabled:
            raise ConfigError("policy.ingest_tier: 'cold' is not allowed: the cold tier is disabled "
                              "(cold.enabled = false)")
        eng.path.mkdir(parents=True, exist_ok=True)
        _lock_store(eng, op)
    op.claim = shared.claim(eng.path)
    if not ro:
        eng.drain = shared.AccessDrain(eng.path / "access")
        os.ftruncate(op.lock_fd, 0)
        os.write(op.lock_fd, f"{os.getpid()}\n".encode())
    eng.catalog = Catalog(eng.path / "catalog", dim=eng.dim, metric=eng.metric, schema=eng.schema, read_only=ro)
    if ro:
        stored = dict(eng.catalog.identity["schema"])
        if stored != eng.schema:
            log.info("read-only store: using the store's [schema] %s (the config says %s)", stored, eng.schema)
            eng.schema = stored
        eng.access = ReaderAccess(eng.path / "access", eng.catalog, cfg.policy.half_life)
    else:
        eng.access = policy.AccessStats.restore(eng.catalog.load_access(), cfg.policy.half_life,
                                                eng.catalog.slot_limit())
    url, embedded = cfg.hot.redis_url, None
    if url is None and hot_factory is None:
        if ro:  # the writer's embedded server, never one of our own
            embedded = RedisServer(eng.path / "redis", search=embedded_search(cfg.hot.backend))
            url = embedded.url
        else:
            url = _start_embedded_redis(eng, op)
    eng.gate = query.ReaderGate()
    if ro and cfg.cold.enabled and cfg.cold.url is None:
        _keep_embedded_s3(eng, op)
    if cfg.cold.enabled:
        # An external bucket (or one already holding this store's data) is checked now, so a
        # wrong URL or credentials fail at open; an embedded S3 server starts when first needed.
        eng.cold = ColdTier(eng.path / "cold", eng.catalog, cfg.cold, eng.schema, eng.metric, eng.gate.wait,
                            read_only=ro)
        if not ro and eng.cold.needs_connect_at_open():
            eng.cold.connect()
    elif not ro and eng.catalog.count(TIER_COLD):
        raise ConfigError(f"cold.enabled: false is not allowed: the store holds {eng.catalog.count(TIER_COLD)} "
                          "cold vectors (move them to warm first)")
    if hot_factory is not None:
        eng.hot = hot_factory(catalog=eng.catalog, config=cfg.hot, schema=eng.schema, metric=eng.metric)
    else:
        eng.hot = make_hot_tier(url, catalog=eng.catalog, config=cfg.hot, schema=eng.schema, metric=eng.metric,
                                server=op.server, embedded=embedded)
    if ro:
        eng.hot.read_only = True
        try:
            eng.hot.open()
        except TierUnavailableError as exc:  # queries say partial=True until it is back
            log.warning("read-only store: %s", exc)
    else:
        eng.hot.exclusive = eng.write_lock  # no write in flight when it switches back from standby
        # verify now, so the first query is not the slow one; a Redis that is loading its data or
        # must be refilled is verified in the background while the catalog answers for it
        eng.hot.open()
    eng.warm = WarmTier(eng.path / "warm", eng.catalog, cfg.warm, eng.schema, eng.metric, eng.gate.wait, read_only=ro)
    eng.tiers = {"hot": eng.hot, "warm": eng.warm}
    if eng.cold is not None:
        eng.tiers["cold"] = eng.cold
    size = cfg.store.repeat_cache
    # (a reader's repeat cache would need this process's own writes: it has none)
    eng.repeat = query.RepeatCache(size, eng.metric) if size and not ro else None
    op.executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="tierstore-query")
    eng.policy = cycle.PolicyEngine(eng)  # a reader never starts it: its hit window feeds stats()
    eng.maintenance = maintenance.Maintenance(eng)  # (started for a writer only)
    # (a reader's is built only when it plans a dry run, from the catalog each time)
    eng.placement = (ReaderPlacement if ro else PlacementIndex)(eng.policy.pin_of if eng.policy.has_pins else None)
    if not ro:
        eng.policy.interrupted = moves.interrupted_run(eng)
        if eng.policy.interrupted is not None:
            if eng.policy.interrupted.get("compacting") or "merge" in eng.policy.interrupted:
                log.warning("a cold merge was interrupted (pid %s); the catalog still names one copy of each vector "
                            "(the old segments, or the new one if the flip was done; the other is garbage for "
                            "compact) and maintenance merges again", eng.policy.interrupted.get("pid"))
            if not eng.policy.interrupted.get("compacting"):
                log.warning("a policy run was interrupted (pid %s); its open batch was rolled back at open and "
                            "the next cycle re-plans the rest", eng.policy.interrupted.get("pid"))
        eng.policy.start()
        eng.maintenance.start()
    if cfg.metrics.port is not None:
        eng.metrics.serve(cfg.metrics.port, cfg.metrics.addr)


def close_engine(eng: Engine, op: Opened) -> None:
    """Flush and release (the caller stopped the policy and waited for operations in flight)."""
    clean = False
    try:
        if eng.read_only:
            if isinstance(eng.access, shared.AccessLog):
                eng.access.close()
        else:
            with eng.write_lock:
                if eng.warm is not None:
                    eng.warm.seal()  # a clean close leaves nothing to rebuild at the next open
                    eng.warm.save_alive()  # ... and nothing to re-read row by row
            eng.checkpoint()
            sync_pending(eng, raise_errors=False)
            if eng.hot is not None:
                eng.hot.mark_clean()  # the last catalog write is done: the next open may trust Redis
            clean = True
    finally:
        shutdown(eng, op, clean)


def sync_pending(eng: Engine, raise_errors: bool) -> None:
    """Apply queued Redis work (pending marks) now."""
    if eng.hot is None or eng.catalog is None:
        return
    eng.catalog.clear_pending(eng.hot.take_synced())
    if not eng.catalog.has_pending():
        return
    try:
        with eng.write_lock:
            eng.hot.sync(eng.catalog.pending())
    except TierUnavailableError:
        if raise_errors:
            raise
        log.warning("hot tier unavailable; %d index updates stay queued for the next open",
                    len(eng.catalog.pending()))


def shutdown(eng: Engine, op: Opened, clean: bool = False) -> None:
    """Stop threads and servers and release the store (also after a failed open)."""
    eng.closed = True
    if eng.metrics is not None:
        eng.metrics.stop()  # the exporter, and every registry the store joined
    if eng.policy is not None:
        eng.policy.stop()
    if eng.maintenance is not None:
        eng.maintenance.stop()
    if op.executor is not None:
        op.executor.shutdown(wait=True)
    if eng.hot is not None:
        eng.hot.close()
    if eng.cold is not None:
        eng.cold.close()
    if op.keeper is not None:
        op.keeper.stop()
        op.keeper = None
    if op.server is not None:
        if clean and eng.hot is not None and eng.hot.standby_reason is None:
            op.server.rewrite_aof()  # so the next open loads an RDB base, not one command per vector
        op.server.stop()
    if eng.catalog is not None:
        eng.catalog.close()
        eng.catalog = None
    if op.lock_fd is not None:
        os.close(op.lock_fd)  # releases the flock
        op.lock_fd = None
    shared.release(op.claim)
    op.claim = None


__all__ = ["AccessRecorder", "Opened", "ReaderAccess", "ReaderPlacement", "close_engine", "embedded_search", "open_engine", "shutdown", "sync_pending"]
