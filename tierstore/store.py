"""TierStore: the facade a host service uses. Wires config, catalog, tiers and access statistics.

Writes go to the catalog (LMDB) first -- durable and acknowledged there -- and then to the tier
indexes; reads search the tiers and keep only what the catalog confirms (see engine/query.py).

>>> import tierstore, tempfile, numpy as np                                  # doctest: +SKIP
>>> with tierstore.open(path=tempfile.mkdtemp(), dim=4) as store:           # doctest: +SKIP
...     store.upsert(["a", "b"], np.eye(4)[:2], metadata=[{"kind": "x"}, None])
...     store.query([1, 0, 0, 0], k=1).ids()
2
['a']
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import filters, inputs, paths
from .catalog import FLAG_PINNED, TIER_CODES, TIER_HOT, TIER_WARM, Entry, normalize_ids
from .config import Config, load_config
from .engine import moves, opening, updates, verify
from .engine.core import Engine, release_memory
from .engine.reads import Reader
from .engine.relocate import Batch, relocate
from .errors import InvalidInputError, ReadOnlyError, TierUnavailableError
from .metrics import StoreMetrics
from .results import Hits, MoveReport, PolicyReport, Record

log = logging.getLogger("tierstore")


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


class TierStore:
    """A tiered vector store. Thread-safe; use as a context manager or call :meth:`close`.

    The facade: it validates input and answers the public API. The machinery it shares with
    moves, the policy and the metrics is its engine (tierstore.engine.core.Engine); the parts
    (catalog, tiers, access statistics, policy) are the engine's, read here as properties."""

    def __init__(self, config: Config, registry: Any = None, read_only: bool = False, *,
                 hot_factory: Any = None) -> None:
        self.config = config
        self.path = Path(config.store.path)
        self.dim, self.metric = config.store.dim, config.store.metric
        self.read_only = bool(read_only)
        self._engine = eng = Engine(config, read_only=self.read_only)
        eng.path = self.path
        eng.metrics = self.metrics = StoreMetrics(eng, config.store.name or str(self.path), registry)
        self._opened = opening.Opened()
        try:
            # hot_factory(catalog=, config=, schema=, metric=) -> a hot tier: the seam fast unit
            # tests use to run a whole store on tierstore.testing.MemoryHotTier (no Redis started)
            opening.open_engine(eng, self._opened, hot_factory)
            self._reader = Reader(eng, self._opened.executor)
        except BaseException:
            # a failed open that created the store removes what it created, once its servers are
            # stopped -- only when it held the store's lock (else another opener owns the files)
            created = self._opened.new_store if self._opened.lock_fd is not None else None
            opening.shutdown(eng, self._opened)
            paths.remove_created(created)
            raise

    # the engine's parts
    catalog = property(lambda self: self._engine.catalog)
    hot = property(lambda self: self._engine.hot)
    warm = property(lambda self: self._engine.warm)
    cold = property(lambda self: self._engine.cold)
    tiers = property(lambda self: self._engine.tiers, doc="enabled tiers by name, fastest first")
    access = property(lambda self: self._engine.access)
    policy = property(lambda self: self._engine.policy)
    schema = property(lambda self: self._engine.schema)
    gate = property(lambda self: self._engine.gate)
    repeat = property(lambda self: self._engine.repeat)
    _server = property(lambda self: self._opened.server)

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyError(
                f"{what}: the store at {str(self.path)!r} is open read-only in this process; writes go "
                "through the process that has it open for writing")

    def drain_shared_accesses(self) -> int:
        """Writer: apply the accesses read-only processes recorded (each policy cycle and
        ``stats()`` call this). Returns how many were applied."""
        return self._engine.drain_shared_accesses()

    def capacity(self, tier: str) -> int:
        """The vector budget of ``tier`` (see Engine.capacity)."""
        return self._engine.capacity(tier)

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> TierStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def close(self) -> None:
        """Flush, stop owned servers, release the store. Idempotent; waits for operations in flight."""
        eng = self._engine
        if eng.policy is not None and not eng.closed:
            eng.policy.stop()  # first: a cycle stops between batches, before the store goes
            eng.maintenance.stop()  # (a merge in flight finishes)
        if eng.close_operations(timeout=60):
            opening.close_engine(eng, self._opened)

    @_counted("flush")
    def flush(self) -> None:
        """Make everything durable and every index current: apply queued index work, persist
        access statistics, fsync the catalog. (Read-only: hand recorded accesses to the writer.)"""
        eng = self._engine
        with eng.operation():
            if self.read_only:
                eng.access.flush()
                return
            with eng.write_lock:
                eng.warm.seal()
                if eng.cold is not None and eng.catalog.cold_queue_len():
                    moves.flush_cold_queue(eng)
            opening.sync_pending(eng, raise_errors=True)
            eng.checkpoint()
        release_memory()

    # --- writes ----------------------------------------------------------------------------------

    @_counted("upsert")
    def upsert(
        self,
        ids: Sequence[str | int] | np.ndarray,
        vectors: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        tier: str | None = None,
        *,
        texts: Sequence[str | None] | None = None,
    ) -> int:
        """Insert or replace vectors; returns how many were written.

        ``metadata``: one dict (or None) per vector, any JSON value (see :meth:`get` for how it
        reads back); ``texts``: one document text (or None) per vector, kept apart from the
        metadata and returned as ``Record.text`` / ``Hit.text``.

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
        metas = inputs.clean_metadata(metadata, n, self.schema, inputs.check_texts(texts, n))
        eng = self._engine
        target = eng.target_tier(tier)
        cat = eng.catalog
        with eng.operation(), eng.write_lock:
            iids = [cat.iid(u) for u in ids]
            with cat.read() as txn:
                old = [cat.entry(txn, iid) for iid in iids]
                for uid, e in zip(ids, old, strict=True):
                    cat.check_collision(e, uid)
                if tier is not None:
                    eng.check_capacity(txn, old, target)
                    groups = {target: list(range(n))}
                else:
                    groups = eng.spill(txn, old, target)
            if len(groups) > 1:
                eng.counters.add(spilled=n - len(groups.get(target, [])))
                log.info("upsert: %s tier full; %s", target,
                         ", ".join(f"{len(v)} to {t}" for t, v in groups.items()))
            error: TierUnavailableError | None = None
            for t, rows in groups.items():
                batch = Batch([iids[i] for i in rows], [ids[i] for i in rows], [old[i] for i in rows], vecs[rows],
                              [metas[i][0] for i in rows], [metas[i][1] for i in rows])
                done = relocate(eng, batch, t, origin="upsert")
                error = done.error or error  # durable: keep writing the other groups, then report it
                slots = done.slots
                # grace: the policy may promote them, not demote them below ``t`` for a while
                eng.access.mark_placed(np.asarray(slots, dtype=np.int64), TIER_CODES[t])
            eng.counters.add(upserted=n)
            if error is not None:
                raise error
        return n

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
        with self._engine.operation(), self._engine.write_lock:
            gone: list[Entry] = []
            synced = self.hot.take_synced()  # consumed before new marks: a late clear must not hit them
            if self._engine.placement is not None:
                self._engine.placement.expect()
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
            if self._engine.placement is not None:
                self._engine.placement.drop([e.slot for e in gone])
            self._engine.counters.add(deleted=len(gone))
            # A query that began before the delete may miss the vector or not: both are answers
            # of a moment around the delete, so no reader grace is needed here.
            self.warm.kill([e for e in gone if e.tier == TIER_WARM], reusable=False)
            try:
                self.hot.sync([e.iid for e in gone if e.tier == TIER_HOT])
            except TierUnavailableError as exc:
                log.warning("delete is durable; Redis removal deferred: %s", exc)
        return len(gone)

    @_counted("update_metadata")
    def update_metadata(self, ids: Sequence[str | int] | np.ndarray, patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                        *, replace: bool = False, text: Any = ...) -> int:
        """Change the metadata of ``ids`` without sending their vectors; returns how many exist
        (unknown ids are skipped).

        ``patch``: one dict for every id, or one per id; its keys are merged into the stored
        metadata (a key set to None stays, with None), or with ``replace=True`` it becomes the
        whole metadata. ``text=`` sets the records' text too (default: kept). Validated like an
        upsert first: a rejected patch writes nothing. A change to free-form fields or the text
        rewrites the catalog entry only; a change to a ``[schema]`` field re-writes the vector
        into the tier it lives in (a cold one into a new segment: batch such updates)."""
        self._writable("update_metadata")
        if not isinstance(replace, bool):
            raise InvalidInputError(f"replace: expected True or False, got {replace!r}")
        return updates.update_metadata(self._engine, self._reader, normalize_ids(ids), patch,
                                       replace=replace, text=text)

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
        report = moves.move(self._engine, ids, tier, defer=defer)
        # the policy leaves them there (up or down) for the grace period
        self.access.mark_placed(self._reader.slots_of(ids), TIER_CODES[report.tier], explicit=True)
        return report

    def pin(self, ids: Sequence[str | int] | np.ndarray, tier: str | None = None) -> int:
        """Keep vectors where they are (or first :meth:`move` them to ``tier``): the policy never
        moves a pinned vector. Returns how many ids exist. Pins survive updates and restarts;
        config-level pins are ``policy.pin_hot`` / ``pin_warm`` / ``pin_cold`` filters."""
        self._writable("pin")
        ids = normalize_ids(ids)
        if tier is not None:
            self.move(ids, tier)
        with self._engine.operation(), self._engine.write_lock:
            iids = [self.catalog.iid(u) for u in ids]
            self._engine.set_flags(iids, FLAG_PINNED, 0)
            return len(self._reader.slots_of(ids))

    def unpin(self, ids: Sequence[str | int] | np.ndarray) -> int:
        """Hand vectors back to the policy. Returns how many were pinned."""
        self._writable("unpin")
        ids = normalize_ids(ids)
        with self._engine.operation(), self._engine.write_lock:
            return self._engine.set_flags([self.catalog.iid(u) for u in ids], 0, FLAG_PINNED)

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
        if not dry_run:  # (a read-only process may plan: from the access counts the writer saved)
            self._writable("run_policy")
        with self._engine.operation():
            return self.policy.run(dry_run=dry_run, examples=examples)

    # --- reads -----------------------------------------------------------------------------------

    @_counted("get")
    def get(self, ids: Sequence[str | int] | np.ndarray) -> list[Record | None]:
        """The stored records of ``ids`` (``None`` for ids that do not exist), in order."""
        ids = normalize_ids(ids)
        with self._engine.operation():
            with self.catalog.read() as txn:
                found = [self.catalog.entry(txn, self.catalog.iid(uid)) for uid in ids]
                found = [e if e is not None and e.uid == uid else None for e, uid in zip(found, ids, strict=True)]
            return self._reader.records(found)

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
        include_vectors: bool = False,
    ) -> Hits:
        """The ``k`` nearest stored vectors to ``vector`` over every tier (or ``tiers``).

        ``filter`` uses the filter language over ``[schema]`` fields (README: Filters); ``ef``
        overrides the HNSW search breadth, ``nprobe`` the cold partitions probed. The result is
        sorted by distance (lower is closer); ``hits.partial`` is true when a tier failed or timed
        out -- or, with ``strict=True``, the tier's error is raised instead.
        ``include_vectors=True`` fills each ``Hit.vector`` with the stored vector (hot and warm
        ones from the local record store, cold ones through the block cache: e.g. for MMR).
        """
        q = inputs.query_vector(vector, dim=self.dim, metric=self.metric)
        return self._reader.search(q.reshape(1, -1), k, filter, tiers, ef, nprobe, strict,
                                   include_vectors=include_vectors)[0]

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
        include_vectors: bool = False,
    ) -> list[Hits]:
        """:meth:`query` for each row of ``vectors`` (n, dim), in pipelined round trips. No rows
        (``[]``, an array of shape ``(0, dim)``): no queries, ``[]`` (like ``get([])``)."""
        if (isinstance(vectors, list | tuple) and not vectors) or (isinstance(vectors, np.ndarray)
                                                                    and vectors.shape == (0,)):
            vectors = np.empty((0, self.dim), np.float32)
        qs = inputs.vectors_2d(vectors, dim=self.dim, metric=self.metric)
        return self._reader.search(qs, k, filter, tiers, ef, nprobe, strict, include_vectors=include_vectors)

    @_counted("touch")
    def touch(self, ids: Sequence[str | int] | np.ndarray) -> int:
        """Record an access to each id without a query (e.g. the item a user clicked).
        Returns how many of the ids exist."""
        ids = normalize_ids(ids)
        with self._engine.operation():
            slots = self._reader.slots_of(ids)
            self._engine.access.record(slots)
            self._engine.counters.add(touched=len(slots))
        return len(slots)

    def scan(self, batch_size: int = 10_000, tiers: Sequence[str] | str | None = None,
             filter: Mapping[str, Any] | None = None) -> Iterator[list[Record]]:
        """Every live record (of ``tiers``, matching ``filter``) exactly once, in batches of up
        to ``batch_size``, in internal-id order.

        Safe to run while writing: each batch is read in its own short transaction and the scan
        resumes after the last internal id it returned, so it never holds the catalog open. The
        filter is evaluated on the catalog's metadata before any vector is read."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size: {batch_size!r} must be a positive integer")
        codes = [TIER_CODES[n] for n in inputs.check_tiers(tiers, list(self.tiers))]
        node = filters.compile_filter(filter, self.schema)
        last: int | None = None
        while True:
            with self._engine.operation():
                entries = self.catalog.iter_entries(tiers=codes, start_after=last, limit=batch_size)
                if not entries:
                    return
                last = entries[-1].iid
                if node != filters.TRUE:
                    entries = [e for e in entries if filters.matches(node, e.metadata)]
                # re-read now: skip what was deleted since the listing; a moved one is read where it is
                batch = [r for r in self._reader.records(list(entries)) if r is not None]
                if tiers is not None:
                    batch = [r for r in batch if TIER_CODES[r.tier] in codes]
                if node != filters.TRUE:  # updated since the listing
                    batch = [r for r in batch if filters.matches(node, r.metadata)]
            if batch:
                yield batch

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """How many records there are (``len(store)``), or how many match ``filter``: a pass
        over the catalog's metadata (about 1 s per million records), no vector read."""
        node = filters.compile_filter(filter, self.schema)
        with self._engine.operation():
            if node == filters.TRUE:
                return sum(self.catalog.counts().values())
            return sum(sum(1 for e in batch if filters.matches(node, e.metadata))
                       for batch in self.catalog.entry_batches())

    def __len__(self) -> int:
        return self.count()

    # --- maintenance -----------------------------------------------------------------------------

    @_counted("compact")
    def compact(self, threshold: float | None = None,
                progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
        """Rewrite warm and cold segments whose dead fraction exceeds ``threshold`` (default
        ``warm.compact_threshold`` / ``cold.compact_threshold``; 0 rewrites every segment with any
        dead row), merge small ones, and delete S3 objects no manifest lists (crash leftovers).
        ``progress(done, total)``: rows rewritten (at most every 0.2 s, and once at the end)."""
        self._writable("compact")
        with self._engine.operation(), self._engine.write_lock:
            out = moves.compact(self._engine, threshold, progress)
        release_memory()
        return out

    def verify(self, deep: bool = True, repair: bool = False,
               progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
        """Check that the catalog, the tiers and S3 agree: every hot id is in Redis and nothing
        else is, every warm id's segment row holds it, every cold object's checksums (``deep``
        downloads every object) and the manifest. ``deep`` also hashes every byte of every warm
        segment file and of the local cold caches (a damaged warm segment stops being served, a
        damaged cache file is dropped). ``repair``: rebuild damaged warm segments (and those
        written before checksums existed) from the catalog; ``report["repaired"]`` says which.
        Returns a report; ``report["ok"]`` says if all is well (after any repair),
        ``report["problems"]`` lists what is not. A read-only process may verify (not repair):
        the check is repeated if the writer commits under it (see engine.verify.verify_shared).
        ``progress(done, total)``: vectors checked (at most every 0.2 s, and once at the end)."""
        if repair:
            self._writable("verify(repair=True) (it rewrites damaged segments; run it in the writer)")
        with self._engine.operation():
            if self.read_only:
                return verify.verify_shared(self._engine, self._reader.refresh, deep, progress)
            with self._engine.write_lock:
                return verify.verify(self._engine, deep, repair, progress)

    def rebuild_hot(self, progress: Callable[[int, int | None], None] | None = None) -> int:
        """Drop and rebuild the Redis index from the catalog's durable records. Returns #vectors.
        ``progress(done, total)``: vectors reloaded (at most every 0.2 s, and once at the end)."""
        self._writable("rebuild_hot")
        with self._engine.operation():  # (the write lock is taken inside, once Redis has loaded)
            return verify.rebuild_hot(self._engine, progress)

    def stats(self) -> dict[str, Any]:
        """Counts, bytes and latencies per tier, plus query counters (a JSON-able dict)."""
        with self._engine.operation():
            if self.read_only:
                self._reader.refresh()
            else:
                self.drain_shared_accesses()
            self.access.apply()
            counts = self.catalog.counts()
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
                    **self._engine.counters.snapshot(),
                    "latency_ms": self._reader.latency_ms(),
                },
                "repeat_cache": {"size": self.repeat.size, "entries": len(self.repeat), "skips": self.repeat.skips,
                                 "misses": self.repeat.misses, "carried": self.repeat.carried} if self.repeat else {"size": 0},
                # half_life: in accesses under half_life = "auto" (logical time), else seconds;
                # half_life_s only for a fixed (wall-time) half-life
                "access": {"recorded": self.access.total_accesses, "half_life": self.access.half_life,
                           "half_life_unit": "accesses" if self.access.auto else "seconds",
                           "half_life_s": None if self.access.auto else self.access.half_life,
                           "from_readers": self._engine.drain.drained if self._engine.drain is not None else 0,
                           # the last checkpoint: a snapshot of every slot, or a log record of those changed
                           "checkpoint": dict(getattr(self.access, "last_checkpoint", {}))},
                "policy": self.policy.stats(),
                "maintenance": self._engine.maintenance.stats(),
            }

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} vectors"
        return f"<TierStore {str(self.path)!r} dim={self.dim} metric={self.metric} {state}>"


__all__ = ["TierStore", "open"]
