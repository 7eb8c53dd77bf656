"""The engine behind the :class:`~tierstore.store.TierStore` facade: what the store's parts share.

The facade validates input and answers the public API; moves, the policy and the metrics work
through this object's public methods, never through the facade's private state:

* ``write_lock`` -- every change of placement (upsert, delete, move, compaction, a policy batch)
  runs under it, so the catalog cannot change under a relocation between its read and its flip.
* ``operation()`` -- counts an operation in flight, so ``close()`` waits for it.
* the removal scheduler (``retire`` / ``await_unlinks``) -- old copies go once no query that could
  still want them is running (the reader gate), Redis removals optionally on a background worker.
* ``note_lower`` -- tells the repeat cache about vectors written below hot.
* ``counters`` -- the query/write counters of ``stats()`` and the metrics, under their own lock.
* capacity, the ingest target and the spill of a batch across full tiers.

Lock order (see ARCHITECTURE.md, "Locks"): ``write_lock`` before any tier lock and before a
catalog write transaction; ``_ops_cv`` and the counters' lock are leaves (nothing is taken while
holding them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from .. import costs, tiers
from ..catalog import TIER_HOT, TIER_WARM, Entry
from ..errors import CapacityError, ClosedError, InvalidInputError, TierUnavailableError

log = logging.getLogger("tierstore")


class Counters:
    """Monotonic counters bumped by writers and by query threads alike (a lock: ``+=`` on a dict
    entry is a read-modify-write the GIL does not make atomic)."""

    NAMES = ("queries", "partial", "upserted", "deleted", "touched", "spilled")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, n in deltas.items():
                self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class _InFlight:
    """Context manager of :meth:`Engine.operation` (a class: cheaper than @contextmanager on the
    query path)."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        e = self.engine
        with e._ops_cv:
            if e.closed:
                raise ClosedError(f"store at {str(e.path)!r} is closed")
            e._ops += 1

    def __exit__(self, *exc: object) -> None:
        e = self.engine
        with e._ops_cv:
            e._ops -= 1
            if not e._ops:
                e._ops_cv.notify_all()


def release_memory() -> None:
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


class Engine:
    """The store's shared machinery and its parts (catalog, tiers, access statistics, policy).
    The parts are set by the open path (``tierstore.engine.opening``); until then they are None."""

    def __init__(self, config: Any, read_only: bool = False) -> None:
        self.config = config
        self.path = config.store.path
        self.dim, self.metric = config.store.dim, config.store.metric
        self.schema: dict[str, str] = dict(config.schema)
        self.read_only = read_only
        self.closed = False
        self.write_lock = threading.RLock()
        self._ops = 0
        self._ops_cv = threading.Condition(threading.Lock())  # a plain Lock: cheaper than the default RLock
        self.counters = Counters()
        self._unlinking: dict[int, Future] = {}  # iid -> its background Redis removal (policy runs)
        self._unlinking_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()  # (see checkpoint)
        # the parts (see tierstore.engine.opening)
        self.catalog: Any = None
        self.hot: Any = None
        self.warm: Any = None
        self.cold: Any = None
        self.tiers: dict[str, Any] = {}
        self.gate: Any = None
        self.repeat: Any = None
        self.access: Any = None
        self.policy: Any = None
        self.maintenance: Any = None  # engine.maintenance.Maintenance (merges small cold segments)
        self.metrics: Any = None
        self.drain: Any = None  # the writer's reader-access drain (tierstore.shared.AccessDrain)
        self.placement: Any = None  # the writer's placement index (tierstore.engine.placement)

    # --- lifecycle ---------------------------------------------------------------------------

    def operation(self) -> _InFlight:
        """Count an operation in flight, so close() waits for it instead of pulling the floor."""
        return _InFlight(self)

    def close_operations(self, timeout: float = 60.0) -> bool:
        """Refuse new operations and wait for those in flight. Returns False if already closed."""
        with self._ops_cv:
            if self.closed:
                return False
            self.closed = True
            self._ops_cv.wait_for(lambda: self._ops == 0, timeout=timeout)
        return True

    def checkpoint(self) -> None:
        """Persist the access statistics (the slots changed since the last checkpoint, or a
        snapshot: ``AccessStats.checkpoint``) and fsync the catalog."""
        if self.catalog is not None and self.access is not None:
            # one at a time (a cycle's and a flush()'s): a record built first but committed
            # second would replay over the newer one at the next open, or be dropped by its snapshot
            with self._checkpoint_lock:
                header, snapshot, record = self.access.checkpoint()
                try:
                    self.catalog.save_access(header, snapshot, record)
                except BaseException:
                    self.access.save_failed()
                    raise
            self.catalog.sync()

    release_memory = staticmethod(release_memory)

    def drain_shared_accesses(self) -> int:
        """Writer: apply the accesses read-only processes recorded. Returns how many."""
        if self.drain is None or self.catalog is None:
            return 0
        return self.drain.drain(self.access.record, self.catalog.slot_limit())

    # --- placement ---------------------------------------------------------------------------

    def capacity(self, tier: str) -> int:
        """The vector budget of ``tier``: ``<tier>.capacity``, lowered by ``<tier>.capacity_bytes``
        (estimated bytes per vector, see costs.bytes_per_vector and the hot backend's
        bytes_per_vector) where that is set. Unbounded tiers (cold) have no budget."""
        spec = tiers.BY_NAME[tier]
        if not spec.bounded:
            return 2**62
        cfg = getattr(self.config, tier)
        cap = cfg.capacity
        if cfg.capacity_bytes:
            per = self.hot.bytes_per_vector() if tier == "hot" else costs.bytes_per_vector(tier, self.dim, cfg.m)
            cap = min(cap, cfg.capacity_bytes // per)
        return cap

    def limited(self, tier: str) -> bool:
        """Whether ``tier`` refuses what exceeds its capacity: hot always; a middle tier only when
        a tier below it can take the overflow (without a cold tier, warm takes everything)."""
        spec = tiers.BY_NAME[tier]
        return spec.bounded and (spec.code == 0 or any(t.code > spec.code for t in self.enabled()))

    def enabled(self) -> list[tiers.TierSpec]:
        """The enabled tiers, in order (fastest first)."""
        return [t for t in tiers.ORDER if t.name in self.tiers]

    def target_tier(self, tier: str | None) -> str:
        target = tier or self.config.policy.ingest_tier
        if target not in tiers.BY_NAME:
            raise InvalidInputError(f"tier: unknown tier {target!r}; tiers are {tiers.quoted_names()}")
        if target not in self.tiers:
            raise InvalidInputError(
                f"tier: {target!r} is not enabled in this store (enabled: {list(self.tiers)})"
                + (" -- set policy.ingest_tier" if tier is None else "")
            )
        return target

    def check_capacity(self, txn: Any, old: Sequence[Entry | None], target: str, what: str = "this batch adds") -> None:
        """Raise CapacityError (nothing written) when ``old``'s rows do not fit ``target``."""
        if not self.limited(target):
            return
        cap = self.capacity(target)
        code = tiers.BY_NAME[target].code
        incoming = sum(1 for e in old if e is None or e.tier != code)
        have = self.catalog.count(code, txn)
        if have + incoming > cap:
            raise CapacityError(
                f"{target} tier is full: it holds {have} of {target}.capacity = {cap} vectors and "
                f"{what} {incoming}; nothing was written (raise {target}.capacity, delete, or "
                "leave tier= unset: ingest then spills to the next tier)"
            )

    def spill(self, txn: Any, old: Sequence[Entry | None], target: str) -> dict[str, list[int]]:
        """Rows of a batch per tier when ingest (no explicit tier) meets a full tier: a limited
        tier never goes past its capacity; the overflow goes to the next tier down."""
        chain = [t.name for t in self.enabled() if t.code >= tiers.BY_NAME[target].code]
        room = {t: (self.capacity(t) - self.catalog.count(tiers.BY_NAME[t].code, txn) if self.limited(t) else len(old))
                for t in chain}
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(old):
            for t in chain:
                here = e is not None and e.tier == tiers.BY_NAME[t].code
                if here or room[t] > 0 or t == chain[-1]:
                    if not here:
                        room[t] -= 1
                    groups.setdefault(t, []).append(i)
                    break
        return groups

    def set_flags(self, iids: Sequence[int], set_bits: int, clear_bits: int) -> int:
        """Set/clear entry flag bits (pins) in the catalog and the placement index (the caller
        holds the write lock). Returns how many entries changed."""
        if self.placement is not None:
            self.placement.expect()
        n = self.catalog.set_flags(iids, set_bits, clear_bits)
        if self.placement is not None:
            with self.catalog.read() as txn:
                found = [e for e in (self.catalog.entry(txn, i) for i in iids) if e is not None]
            self.placement.set_flags([e.slot for e in found], [e.flags for e in found])
        return n

    # --- after a flip ------------------------------------------------------------------------

    def note_lower(self, change: tuple[int, int], vecs: np.ndarray) -> None:
        """After a committed write that placed ``vecs`` below hot: lets repeated queries keep
        skipping those tiers when the new vectors are farther than their hot answer."""
        if self.repeat is not None:
            self.repeat.note(change[0], change[1], vecs)

    def retire(self, entries: Sequence[Entry], background: Executor | None = None) -> Future | None:
        """Remove superseded copies once no query that could still want them is running. Hot
        copies were protected from reconciliation by the caller before its catalog flip (and are
        unprotected here once removed); cold rows need nothing (their segment is immutable; the
        row is dead and compaction reclaims it).

        With ``background``, the Redis removals run there (returns the future): RediSearch
        deletes an HNSW node synchronously, about as slowly as it inserts one, so the policy's
        executor overlaps them with its next batch. Their pending marks are durable already."""
        self.gate.wait()
        self.warm.kill([e for e in entries if e.tier == TIER_WARM])
        gone_hot = [e.iid for e in entries if e.tier == TIER_HOT]
        if not gone_hot:
            return None
        if background is None:
            self._unlink_hot(gone_hot)
            return None
        fut = background.submit(self._unlink_hot, gone_hot)
        with self._unlinking_lock:
            for iid in gone_hot:
                self._unlinking[iid] = fut
        fut.add_done_callback(lambda f, ids=gone_hot: self._forget_unlinks(ids, f))
        return fut

    def _forget_unlinks(self, iids: list[int], fut: Future) -> None:
        with self._unlinking_lock:
            for i in iids:
                if self._unlinking.get(i) is fut:
                    del self._unlinking[i]

    def await_unlinks(self, iids: Sequence[int]) -> None:
        """Wait for background Redis removals of any of ``iids`` (a vector coming back to hot
        must not have its new key unlinked by a removal queued for its old one)."""
        if not self._unlinking:
            return
        with self._unlinking_lock:
            futs = {self._unlinking.get(i) for i in iids} - {None}
        for fut in futs:
            fut.result()

    def _unlink_hot(self, gone_hot: list[int]) -> None:
        try:
            self.hot.sync(gone_hot)  # state-based: unlinks, clears the pending marks
        except TierUnavailableError as exc:
            log.warning("Redis removal of %d moved vectors deferred: %s", len(gone_hot), exc)
        finally:
            self.hot.unprotect(gone_hot)


__all__ = ["Counters", "Engine", "release_memory"]
