"""The store for asyncio hosts (FastAPI, aiohttp, ...): the same engine, each call on a worker pool.

:func:`open` opens a :class:`tierstore.TierStore` and wraps it in an :class:`AsyncTierStore`
whose methods are coroutines with the sync methods' signatures. Each call runs the sync method on
a bounded thread pool the async store owns, so the event loop never waits on Redis, S3, LMDB or
a numba kernel: it only hands the call over and is woken when the answer is ready.

Why threads and not ``redis.asyncio`` + an async S3 client: what would block a loop is a query's
CPU work, not its sockets. The Redis round trip, the warm tier's numba kernels and the cold tier's
GETs already wait without the GIL. What holds the GIL is the Python that confirms and merges
candidates (~1.8 ms a query here). It would block the loop wherever it ran, and an async hot tier
would be a second copy of the query path to keep exact. Measured (``python -m benchmarks.aio``,
benchmarks/RESULTS.md): with 64 queries in flight the async store matches the sync store on a
thread pool, and the loop spends ~0.1 ms per query. The loop's stalls under load are the GIL's:
the same for an idle loop beside the sync store's threads. They grow with the worker count, hence
the small default pool.

>>> import asyncio, tempfile, tierstore.aio                                 # doctest: +SKIP
>>> async def main():
...     async with tierstore.aio.open(path=tempfile.mkdtemp(), dim=4) as store:
...         await store.upsert(["a", "b"], [[1, 0, 0, 0], [0, 1, 0, 0]])
...         return (await store.query([1, 0, 0, 0], k=1)).ids()
>>> asyncio.run(main())                                                    # doctest: +SKIP
['a']
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import inspect
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator, Mapping
from typing import Any

from . import store as sync_store
from .errors import ClosedError, InvalidInputError
from .results import Record
from .store import TierStore

log = logging.getLogger("tierstore")

#: Each worker may hold one LMDB read slot while it runs; the catalog has 512 for every process
#: sharing the store (read-only readers included), so a pool may not take more than half.
MAX_WORKERS = 256


def default_workers() -> int:
    """``min(8, 4 * cpus)``. A query's Python work holds the GIL, so however many cores there are,
    one process runs about one core of it; 8 calls in flight keep that busy while others wait on
    Redis, S3 or a numba kernel. More workers add no throughput but lengthen the loop's waits for
    the GIL (measured by benchmarks/aio.py); raise ``max_workers`` when queries mostly wait on a
    remote S3."""
    return min(8, 4 * (os.cpu_count() or 1))


def open(config: Any = None, *, max_workers: int | None = None, **kwargs: Any) -> Opening:
    """Open (or create) a store for use from asyncio; the arguments are those of
    :func:`tierstore.open` (``registry=``, ``read_only=``, config overrides), plus ``max_workers``:
    the size of the store's worker pool (default :func:`default_workers`), i.e. how many of its
    calls run at once; the rest wait their turn in order.

    Both ``store = await tierstore.aio.open(...)`` and ``async with tierstore.aio.open(...) as
    store:`` work (the latter closes the store on exit). Opening runs on a thread too: starting
    the embedded servers takes seconds and never blocks the loop."""
    return Opening(config, _check_workers(max_workers), kwargs)


def _check_workers(max_workers: Any) -> int:
    workers = default_workers() if max_workers is None else max_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InvalidInputError(f"max_workers: {max_workers!r} must be an integer from 1 to {MAX_WORKERS}")
    return workers


class Opening(Coroutine[Any, Any, "AsyncTierStore"]):
    """What :func:`open` returns: a coroutine (await it, or hand it to ``asyncio.run``) whose
    result is the :class:`AsyncTierStore`, and an async context manager (open on enter, close on
    exit). Like any coroutine it runs once."""

    def __init__(self, config: Any, workers: int, kwargs: Mapping[str, Any]) -> None:
        self._coro = self._open(config, workers, dict(kwargs))
        self._store: AsyncTierStore | None = None

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, AsyncTierStore]:
        return self._coro.__await__()

    async def __aenter__(self) -> AsyncTierStore:
        self._store = await self._coro
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()

    @staticmethod
    async def _open(config: Any, workers: int, kwargs: dict[str, Any]) -> AsyncTierStore:
        # its own thread: the store's pool is made once the store exists
        opener = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierstore-aio-open")
        fut = opener.submit(sync_store.open, config, **kwargs)
        try:
            opened = await _settled(fut)
        except asyncio.CancelledError:
            # the open runs on (it may be starting servers); nobody will use the store: close it
            opener.submit(_discard, fut)
            raise
        finally:
            opener.shutdown(wait=False)
        return AsyncTierStore(opened, max_workers=workers)


def _discard(fut: cf.Future) -> None:
    """After a cancelled open, on the opener's thread: close the store it opened."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


def _settled(fut: cf.Future) -> asyncio.Future:
    """An asyncio future of the running loop that takes ``fut``'s outcome. Unlike
    ``asyncio.wrap_future`` it never cancels ``fut`` (the caller decides) and it tolerates a loop
    closed before the worker finished (nobody is waiting then)."""
    loop = asyncio.get_running_loop()
    out = loop.create_future()

    def settle(f: cf.Future) -> None:  # on the loop
        if out.cancelled():
            return
        if f.cancelled():
            out.cancel()
        elif (exc := f.exception()) is not None:
            out.set_exception(exc)
        else:
            out.set_result(f.result())

    def done(f: cf.Future) -> None:  # on the worker that ran it (or here, if it already ran)
        with contextlib.suppress(RuntimeError):  # the loop is closed: its awaiter is gone
            loop.call_soon_threadsafe(settle, f)

    fut.add_done_callback(done)
    return out


def _log_orphan(op: str) -> Callable[[cf.Future], None]:
    def report(f: cf.Future) -> None:
        if not f.cancelled() and (exc := f.exception()) is not None:
            log.warning("aio: %s, whose await was cancelled, failed: %r", op, exc)

    return report


_END = object()


def _next_batch(it: Iterator[list[Record]]) -> Any:
    """``next(it)`` on a worker; a StopIteration cannot cross a future, so the end is a sentinel."""
    return next(it, _END)


def _twin(name: str, *, write: bool) -> Callable[..., Any]:
    """The coroutine method that runs ``TierStore.<name>`` on the pool, with its signature.

    Arguments are forwarded as given, so a parameter the sync method gains works here unchanged.
    The sync method is looked up at call time on the wrapped store."""

    async def method(self: AsyncTierStore, *args: Any, **kwargs: Any) -> Any:
        return await self._run(name, getattr(self.sync, name), args, kwargs, write=write)

    return _describe(method, name, write)


def _describe(method: Any, name: str, write: bool) -> Any:
    """Name ``method`` after ``TierStore.<name>``, copy its signature, point its docstring there."""
    method.__name__ = name
    method.__qualname__ = f"AsyncTierStore.{name}"
    sync = getattr(TierStore, name, None)
    if sync is not None:
        method.__signature__ = inspect.signature(sync)
    first = (inspect.getdoc(sync) or "").split("\n\n")[0]
    how = ("A write: once called it runs to completion even if the awaiting task is cancelled "
           "(the engine applies a write whole or not at all, never half; a failure after a "
           "cancellation is logged)." if write else
           "Cancelling the await drops the answer: a call still queued never runs, one already "
           "running finishes on its worker (nothing is left half-done).")
    method.__doc__ = f"Async :meth:`tierstore.TierStore.{name}` (run on the store's worker pool).\n\n{first}\n\n{how}"
    return method


class AsyncTierStore:
    """A :class:`tierstore.TierStore` for asyncio: every public method is a coroutine of the same
    name and signature that runs the sync method on the store's worker pool (``count()`` is
    ``len()``; :meth:`scan` is an async generator). Errors are the sync store's, unchanged.

    Made by :func:`open`, or around an open sync store: ``AsyncTierStore(store)`` (then
    :meth:`close` closes that store too, unless ``close_store=False``: sync code that shares the
    store keeps it). ``sync`` is the wrapped store, for attributes such as ``metrics`` and for
    sync code sharing it (the engine is thread-safe).

    Concurrency is the engine's: queries run in parallel, writes serialise on its write lock.
    ``max_workers`` bounds how many calls run at once; the others wait, in order, without
    blocking the loop. A store is not tied to one event loop. Callbacks passed to a method
    (``progress=``) are called on the worker thread: hand results to the loop with
    ``loop.call_soon_threadsafe``."""

    def __init__(self, store: TierStore, *, max_workers: int | None = None, close_store: bool = True) -> None:
        workers = _check_workers(max_workers)
        self.sync = store
        self.close_store = close_store
        self.max_workers = workers
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tierstore-aio")
        self._lock = threading.Lock()
        self._inflight: set[cf.Future] = set()
        self._closing: cf.Future | None = None

    # plain attributes of the sync store (no I/O: read here, not on the pool)
    path = property(lambda self: self.sync.path)
    dim = property(lambda self: self.sync.dim)
    metric = property(lambda self: self.sync.metric)
    config = property(lambda self: self.sync.config)
    read_only = property(lambda self: self.sync.read_only)
    metrics = property(lambda self: self.sync.metrics)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (new calls raise :class:`ClosedError`)."""
        return self._closing is not None or self.sync.closed

    # --- the bridge ------------------------------------------------------------------------------

    def _submit(self, op: str, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> cf.Future:
        with self._lock:
            if self._closing is not None:
                raise ClosedError(f"{op}: the async store at {str(self.sync.path)!r} is closed")
            fut = self._pool.submit(fn, *args, **kwargs)
            self._inflight.add(fut)
        fut.add_done_callback(self._finished)
        return fut

    def _finished(self, fut: cf.Future) -> None:
        with self._lock:
            self._inflight.discard(fut)

    async def _run(self, op: str, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], *,
                   write: bool) -> Any:
        fut = self._submit(op, fn, args, kwargs)
        try:
            return await _settled(fut)
        except asyncio.CancelledError:
            if write:
                fut.add_done_callback(_log_orphan(op))
            else:
                fut.cancel()  # still queued: it never runs; running: it finishes, the answer is dropped
            raise

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTierStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Refuse new calls, wait for the calls in flight (queued ones included: each was
        accepted), close the sync store (flush, stop owned servers; not with
        ``close_store=False``), then stop the pool.
        Idempotent; cancelling the await does not stop the close."""
        with self._lock:
            if self._closing is None:
                waiting = list(self._inflight)
                # on the pool, after every accepted call (FIFO): the close never blocks the loop
                self._closing = self._pool.submit(self._close_sync, waiting)
                self._closing.add_done_callback(lambda _f: self._pool.shutdown(wait=False))
            closing = self._closing
        await asyncio.shield(_settled(closing))

    def _close_sync(self, waiting: list[cf.Future]) -> None:
        cf.wait(waiting)
        if self.close_store:
            self.sync.close()

    def __repr__(self) -> str:
        return f"<AsyncTierStore {str(self.sync.path)!r} dim={self.dim} metric={self.metric} " \
               f"{'closed' if self.closed else 'open'} workers={self.max_workers}>"

    # --- the API: one coroutine per TierStore method -----------------------------------------------

    upsert = _twin("upsert", write=True)
    update_metadata = _twin("update_metadata", write=True)
    delete = _twin("delete", write=True)
    move = _twin("move", write=True)
    pin = _twin("pin", write=True)
    unpin = _twin("unpin", write=True)
    run_policy = _twin("run_policy", write=True)
    compact = _twin("compact", write=True)
    verify = _twin("verify", write=True)
    rebuild_hot = _twin("rebuild_hot", write=True)
    flush = _twin("flush", write=True)
    drain_shared_accesses = _twin("drain_shared_accesses", write=True)
    get = _twin("get", write=False)
    query = _twin("query", write=False)
    query_batch = _twin("query_batch", write=False)
    touch = _twin("touch", write=False)
    stats = _twin("stats", write=False)
    capacity = _twin("capacity", write=False)
    count = _twin("count", write=False)

    async def scan(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[Record]]:
        it = self.sync.scan(*args, **kwargs)  # a generator: nothing runs until the first next()
        pending: cf.Future | None = None
        try:
            while True:
                pending = self._submit("scan", _next_batch, (it,), {})
                try:
                    batch = await _settled(pending)
                except asyncio.CancelledError:
                    pending.cancel()
                    raise
                if batch is _END:
                    return
                yield batch
        finally:
            # a next() still running on its worker: close the iterator once it returns
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _f: it.close())
            else:
                it.close()

    _describe(scan, "scan", False)
    scan.__signature__ = scan.__signature__.replace(return_annotation="AsyncIterator[list[Record]]")
    scan.__doc__ += ("\n\nAn async generator: ``async for batch in store.scan(...)``. Each batch is "
                     "read on a worker; nothing is held open between batches.")


__all__ = ["AsyncTierStore", "Opening", "default_workers", "open"]
