"""tierstore.aio's bridge: every TierStore method has a coroutine twin with its signature, and
cancellation, close and errors behave as documented.

The bridge is driven through a small fake store whose calls block on events the test releases, so
the order of events is forced, never timed. One test runs the real engine (the in-memory hot
tier of tierstore.testing); tests/integration/test_aio.py runs it on Redis and S3.
"""

from __future__ import annotations

import asyncio
import inspect
import threading

import numpy as np
import pytest

import tierstore
from tierstore import aio
from tierstore.errors import ClosedError, DimensionError, InvalidInputError
from tierstore.testing import memory_store


def public_methods() -> list[str]:
    return sorted(n for n, v in vars(tierstore.TierStore).items()
                  if not n.startswith("_") and inspect.isfunction(v))


def test_every_public_method_has_an_async_twin_with_its_signature():
    names = public_methods()
    assert {"upsert", "query", "scan", "close"} <= set(names)
    for name in names:
        twin = getattr(aio.AsyncTierStore, name)
        if name == "scan":
            assert inspect.isasyncgenfunction(twin)
        else:
            assert inspect.iscoroutinefunction(twin), name
        if name != "close":
            sync = inspect.signature(getattr(tierstore.TierStore, name))
            assert list(inspect.signature(twin).parameters.values()) == list(sync.parameters.values()), name
            assert f"TierStore.{name}" in twin.__doc__
    # len(store) has no async form: count() is its twin
    assert inspect.iscoroutinefunction(aio.AsyncTierStore.count)


class FakeStore:
    """The duck type AsyncTierStore drives: records calls; ``query`` blocks until released."""

    path, dim, metric, read_only, closed = "/fake", 4, "cosine", False, False

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.scan_closed = False
        self.closed_event = threading.Event()

    def query(self, vector, k=10, **kw):
        self.started.set()
        self.release.wait(30)
        self.calls.append(f"query:{vector}")
        return [vector] * k

    def upsert(self, ids, vectors, metadata=None, tier=None):
        self.calls.append(f"upsert:{ids}")
        return len(ids)

    def get(self, ids):
        if ids == "bad":
            raise DimensionError("ids: bad")
        self.calls.append(f"get:{ids}")
        return ids

    def scan(self, batch_size=2):
        try:
            for i in range(0, 6, batch_size):
                yield list(range(i, min(6, i + batch_size)))
        finally:
            self.scan_closed = True

    def close(self):
        self.calls.append("close")
        self.closed = True
        self.closed_event.set()


def test_cancel_queued_and_running_reads_a_queued_write_still_runs():
    fake = FakeStore()
    store = aio.AsyncTierStore(fake, max_workers=1)

    async def main():
        running = asyncio.ensure_future(store.query("a", k=1))
        await asyncio.to_thread(fake.started.wait, 30)
        queued = asyncio.ensure_future(store.query("b", k=1))
        write = asyncio.ensure_future(store.upsert(["x"], None))
        await asyncio.sleep(0)
        for t in (running, queued, write):
            t.cancel()
        for t in (running, queued, write):
            with pytest.raises(asyncio.CancelledError):
                await t
        fake.release.set()
        assert await store.get([1]) == [1]  # the store keeps working
        await store.close()

    asyncio.run(main())
    # the running query finished on its worker (answer dropped), the queued one never ran, the
    # cancelled write ran whole; close came after every accepted call
    assert fake.calls == ["query:a", "upsert:['x']", "get:[1]", "close"]


def test_close_waits_for_calls_in_flight_then_refuses_new_ones():
    fake = FakeStore()
    store = aio.AsyncTierStore(fake, max_workers=2)

    async def main():
        q = asyncio.ensure_future(store.query("a", k=2))
        await asyncio.to_thread(fake.started.wait, 30)
        closing = asyncio.ensure_future(store.close())
        await asyncio.sleep(0)
        assert store.closed and not closing.done() and "close" not in fake.calls
        with pytest.raises(ClosedError, match="get: the async store"):
            await store.get([1])
        fake.release.set()
        assert await q == ["a", "a"]
        await closing
        await store.close()  # idempotent

    asyncio.run(main())
    assert fake.calls == ["query:a", "close"]


def test_close_store_false_leaves_the_sync_store_open():
    fake = FakeStore()
    store = aio.AsyncTierStore(fake, close_store=False)
    assert asyncio.run(store.get([2])) == [2]
    asyncio.run(store.close())
    assert store.closed and not fake.closed and fake.calls == ["get:[2]"]


def test_errors_propagate_unchanged_and_max_workers_is_checked():
    fake = FakeStore()
    store = aio.AsyncTierStore(fake)
    assert store.max_workers == aio.default_workers()
    with pytest.raises(DimensionError, match="ids: bad"):
        asyncio.run(store.get("bad"))
    asyncio.run(store.close())
    for bad in (0, -1, True, 1.5, "4", aio.MAX_WORKERS + 1):
        with pytest.raises(InvalidInputError, match="max_workers"):
            aio.AsyncTierStore(FakeStore(), max_workers=bad)
        with pytest.raises(InvalidInputError, match="max_workers"):
            aio.open(path="/nonexistent", dim=4, max_workers=bad)


def test_scan_is_an_async_generator_and_closes_the_sync_iterator():
    fake = FakeStore()
    store = aio.AsyncTierStore(fake)

    async def main():
        assert [b async for b in store.scan(batch_size=4)] == [[0, 1, 2, 3], [4, 5]]
        fake.scan_closed = False
        agen = store.scan()
        assert await agen.__anext__() == [0, 1]
        await agen.aclose()  # a consumer that stops early
        assert fake.scan_closed
        await store.close()

    asyncio.run(main())


def test_real_engine_across_event_loops(tmp_path):
    """The engine behind it (in-memory hot tier, warm on disk): answers equal the sync store's,
    and the async store is not tied to the loop that made it."""
    store = aio.AsyncTierStore(memory_store(tmp_path, dim=8), max_workers=4)
    vecs = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    assert asyncio.run(store.upsert(list(range(25)), vecs[:25], tier="hot")) == 25
    assert asyncio.run(store.upsert(list(range(25, 50)), vecs[25:], tier="warm")) == 25

    async def queries():
        return await asyncio.gather(*(store.query(v, k=5) for v in vecs))

    got = asyncio.run(queries())
    want = [store.sync.query(v, k=5) for v in vecs]
    assert [h.ids() for h in got] == [h.ids() for h in want]
    assert [h.ids()[0] for h in got] == list(range(50))
    assert asyncio.run(store.count()) == len(store.sync) == 50
    asyncio.run(store.close())
    assert store.sync.closed


def test_a_cancelled_open_closes_the_store_it_opened(monkeypatch):
    fake, release, started = FakeStore(), threading.Event(), threading.Event()

    def slow_open(config=None, **kw):
        started.set()
        release.wait(30)
        return fake

    monkeypatch.setattr(tierstore.store, "open", slow_open)

    async def main():
        opening = asyncio.ensure_future(aio.open(path="/fake", dim=4))
        await asyncio.to_thread(started.wait, 30)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        release.set()
        await asyncio.to_thread(fake.closed_event.wait, 30)  # closed on the opener's thread

    asyncio.run(main())
    assert fake.calls == ["close"]
    # and an open that is not cancelled: a coroutine (asyncio.run takes it) and an async context manager
    fake2 = FakeStore()
    monkeypatch.setattr(tierstore.store, "open", lambda config=None, **kw: fake2)
    store = asyncio.run(aio.open(max_workers=3))
    assert store.sync is fake2 and store.max_workers == 3
    asyncio.run(store.close())

    async def ctx():
        async with aio.open() as s:
            assert s.sync is fake2
        return s

    assert asyncio.run(ctx()).closed

