"""tierstore.aio on real Redis + RediSearch and S3: the async store gives the sync store's answers.

One scenario, written once against the async interface, runs on a sync store (through an adapter
whose coroutines call it directly) and on an async store opened by ``tierstore.aio.open`` with the
same config; the transcripts must be equal. Then 64 concurrent queries on one loop against
sequential sync queries, and cancellation mid-flight followed by a clean close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tierstore
import tierstore.aio
from tierstore.errors import TierStoreError

DIM = 8
SCHEMA = {"kind": "tag", "n": "numeric"}
# the policy off: nothing moves by itself, so both stores go through the same states
POLICY = {"interval": 0, "promote_interval": 0}


@pytest.fixture
def open_async_store(tmp_path: Path, redis_server, s3_server, hot_backend: str, hot_target, cold_section,
                     request: pytest.FixtureRequest) -> Iterator[Callable[..., tierstore.aio.AsyncTierStore]]:
    """``open_store``'s async twin: the same config (session Redis and S3, a fresh S3 prefix),
    opened with ``tierstore.aio.open`` (each call on its own ``asyncio.run``: the async store is
    not tied to a loop)."""
    opened: list[tierstore.aio.AsyncTierStore] = []

    def make(*, max_workers: int | None = None, **kw: Any) -> tierstore.aio.AsyncTierStore:
        kw.setdefault("dim", DIM)
        hot = dict(kw.pop("hot", {}))
        target = hot_target(request, hot_backend, redis_server)
        hot.setdefault("backend", target["backend"])
        hot.setdefault("redis_url", target["redis_url"])
        kw["cold"] = {**cold_section(s3_server), **kw.get("cold", {})}
        store = asyncio.run(tierstore.aio.open(path=str(tmp_path / f"astore{len(opened)}"), hot=hot, env={},
                                               max_workers=max_workers, **kw))
        opened.append(store)
        return store

    yield make
    for s in opened:
        asyncio.run(s.close())


class SyncAdapter:
    """The async store's interface over a sync store: each coroutine calls the method directly."""

    def __init__(self, store: tierstore.TierStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return call

    async def scan(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[tierstore.Record]]:
        for batch in self.store.scan(*args, **kwargs):
            yield batch


def data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    return vecs, [{"kind": "abc"[i % 3], "n": i} for i in range(n)]


def hits(h: tierstore.Hits) -> tuple:
    return h.partial, [(x.id, round(x.distance, 5), x.tier, x.metadata, x.text,
                        None if x.vector is None else np.round(x.vector, 5).tolist()) for x in h]


def record(r: tierstore.Record | None) -> tuple | None:
    return None if r is None else (r.id, r.tier, r.metadata, r.text, np.round(r.vector, 5).tolist())


async def scenario(s: Any) -> list[tuple[str, Any]]:
    """Writes to every tier, reads, moves, deletes, a scan, stats and bad input; returns what each
    step answered (an error as its class and message)."""
    out: list[tuple[str, Any]] = []
    vecs, metas = data()

    async def step(name: str, call: Any, shape: Callable[[Any], Any] = lambda x: x) -> None:
        try:
            out.append((name, shape(await call)))
        except TierStoreError as exc:
            out.append((name, (type(exc).__name__, str(exc))))

    texts = [f"doc {i}" for i in range(len(vecs))]
    for tier, lo in (("hot", 0), ("warm", 20), ("cold", 40)):
        rows = slice(lo, lo + 20)
        await step(f"upsert {tier}", s.upsert(list(range(lo, lo + 20)), vecs[rows], metas[rows], tier=tier,
                                              texts=texts[rows]))
    await step("query", s.query(vecs[5], k=5), hits)
    await step("query vectors", s.query(vecs[26], k=3, include_vectors=True), hits)
    await step("query cold", s.query(vecs[45], k=3), hits)
    await step("query filter", s.query(vecs[5], k=6, filter={"kind": "b", "n": {"$gte": 10}}), hits)
    await step("query tiers", s.query(vecs[25], k=4, tiers=["warm", "cold"]), hits)
    await step("query_batch", s.query_batch(vecs[[3, 23, 43]], k=4), lambda hs: [hits(h) for h in hs])
    await step("get", s.get([0, 25, 45, 999]), lambda rs: [record(r) for r in rs])
    await step("delete", s.delete([1, 21, 41, 999]))
    await step("move warm", s.move([2, 3], "warm"), lambda r: (r.tier, r.moved, r.already, r.missing))
    await step("move cold", s.move([22], "cold"), lambda r: (r.tier, r.moved, r.already, r.missing))
    await step("move hot", s.move([42, 0], "hot"), lambda r: (r.tier, r.moved, r.already, r.missing))
    await step("touch", s.touch([4, 24, 998]))
    await step("pin", s.pin([4]))
    await step("unpin", s.unpin([4]))
    await step("update_metadata", s.update_metadata([6, 26, 46, 997], {"n": 1000, "note": "x"}))
    await step("update_metadata replace", s.update_metadata([7], {"kind": "c"}, replace=True, text="seven"))
    await step("count", s.count())
    await step("count filter", s.count(filter={"n": {"$gte": 1000}}))
    await step("capacity", s.capacity("warm"))
    await step("query after", s.query(vecs[2], k=5), hits)
    batches = []
    async for b in s.scan(batch_size=16):
        batches.append([(r.id, r.tier) for r in b])
    out.append(("scan", batches))
    out.append(("scan filter", [[record(r) for r in b] async for b in s.scan(batch_size=2, filter={"kind": "c"})]))
    await step("stats", s.stats(), lambda st: (st["store"]["vectors"], {t: v["count"] for t, v in st["tiers"].items()}))
    # bad input: the same typed errors, nothing written
    await step("bad dim", s.query(np.ones(3, np.float32)))
    await step("bad nan", s.upsert([100], np.full((1, DIM), np.nan, np.float32)))
    await step("bad dup", s.upsert([100, 100], vecs[:2]))
    await step("bad filter", s.query(vecs[0], filter={"colour": "red"}))
    await step("bad tier", s.move([5], "lukewarm"))
    await step("bad k", s.query(vecs[0], k=0))
    await step("bad patch", s.update_metadata([8], {"n": "many"}))
    try:
        async for _b in s.scan(batch_size=0):
            pass
    except TierStoreError as exc:
        out.append(("bad scan", (type(exc).__name__, str(exc))))
    await step("count after", s.count())
    return out


def test_async_answers_equal_sync(open_store, open_async_store):
    sync_store = open_store(schema=SCHEMA, policy=POLICY)
    async_store = open_async_store(schema=SCHEMA, policy=POLICY)
    want = asyncio.run(scenario(SyncAdapter(sync_store)))
    got = asyncio.run(scenario(async_store))
    assert [name for name, _ in got] == [name for name, _ in want]
    for (name, g), (_, w) in zip(got, want, strict=True):
        assert g == w, name
    steps = dict(want)
    # the scenario did what it says (not two equally empty transcripts)
    assert steps["upsert cold"] == 20 and steps["delete"] == 3 and steps["count"] == 57 == steps["count after"]
    assert steps["query"][1][0][:3] == (5, 0.0, "hot")
    assert steps["query cold"][1][0][0] == 45 and steps["query cold"][1][0][2] == "cold"
    assert {h[2] for h in steps["query tiers"][1]} <= {"warm", "cold"}
    assert all(m["kind"] == "b" and m["n"] >= 10 for _i, _d, _t, m, *_x in steps["query filter"][1])
    assert steps["move cold"] == ("cold", 1, 0, 0) and steps["move hot"] == ("hot", 1, 1, 0)
    assert steps["stats"] == (57, {"hot": 18, "warm": 20, "cold": 19})
    assert steps["update_metadata"] == 3 and steps["count filter"] == 3
    assert [r[0] for b in steps["scan filter"] for r in b] and all(r[2]["kind"] == "c" for b in steps["scan filter"] for r in b)
    assert steps["query vectors"][1][0][4:] == ("doc 26", np.round(data()[0][26], 5).tolist())
    assert sorted(i for b in steps["scan"] for i, _t in b) == sorted(set(range(60)) - {1, 21, 41})
    assert [steps[k][0] for k in ("bad dim", "bad nan", "bad dup", "bad filter", "bad tier", "bad k", "bad scan",
                                  "bad patch")] == [
        "DimensionError", "DimensionError", "InvalidInputError", "SchemaError", "InvalidInputError",
        "InvalidInputError", "InvalidInputError", "SchemaError"]


def fill(store: tierstore.TierStore, n: int = 300) -> np.ndarray:
    """A third of ``n`` rows in each tier."""
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((n, 16)).astype(np.float32)
    metas = [{"kind": "abc"[i % 3], "n": i} for i in range(n)]
    third = n // 3
    for tier, lo, hi in (("hot", 0, third), ("warm", third, 2 * third), ("cold", 2 * third, n)):
        store.upsert(list(range(lo, hi)), vecs[lo:hi], metas[lo:hi], tier=tier)
    return vecs


def test_64_concurrent_queries_equal_sequential_sync(open_async_store):
    store = open_async_store(dim=16, schema=SCHEMA, policy=POLICY)
    vecs = fill(store.sync)
    rng = np.random.default_rng(3)
    qs = (vecs[rng.integers(0, len(vecs), 64)] + 0.1 * rng.standard_normal((64, 16))).astype(np.float32)
    flts = [None, {"kind": "a"}, {"n": {"$lt": 150}}, None]

    async def all_at_once() -> list[tierstore.Hits]:
        return await asyncio.gather(*(store.query(q, k=10, filter=flts[i % 4]) for i, q in enumerate(qs)))

    got = asyncio.run(all_at_once())
    want = [store.sync.query(q, k=10, filter=flts[i % 4]) for i, q in enumerate(qs)]
    assert [hits(h) for h in got] == [hits(h) for h in want]
    assert {x.tier for h in got for x in h} == {"hot", "warm", "cold"}
    assert store.max_workers < 64  # calls queued for the pool as well as ran in parallel


def test_cancelled_queries_and_write_leave_the_store_working(open_async_store):
    store = open_async_store(dim=16, schema=SCHEMA, policy=POLICY)
    vecs = fill(store.sync)
    qs = vecs[:64] + np.float32(0.05)
    # a second async front on the same engine, closed on its own (close_store=False): its close
    # is the point after which every call it accepted -- the cancelled write too -- has finished
    front = tierstore.aio.AsyncTierStore(store.sync, max_workers=4, close_store=False)

    async def main() -> None:
        tasks = [asyncio.ensure_future(front.query(q, k=10)) for q in qs]
        batch = asyncio.ensure_future(front.query_batch(qs, k=10))
        write = asyncio.ensure_future(front.upsert(["late-a", "late-b"], -vecs[:2], tier="warm"))
        for done, fut in enumerate(asyncio.as_completed(tasks), 1):
            await fut
            if done == 8:  # mid-flight: some queries running on workers, the rest queued
                break
        for t in [*tasks, batch, write]:
            t.cancel()
        for t in [*tasks, batch, write]:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await front.close()
        with pytest.raises(tierstore.ClosedError):
            await front.query(qs[0])
        # the engine keeps working and answers as before; the cancelled write was applied whole
        again = await asyncio.gather(*(store.query(q, k=10) for q in qs[:16]))
        assert [h.ids() for h in again] == [store.sync.query(q, k=10).ids() for q in qs[:16]]
        assert [r.tier for r in await store.get(["late-a", "late-b"])] == ["warm", "warm"]
        assert await store.count() == 302

    asyncio.run(main())
    assert not store.sync.closed  # the front's close left the store open
    asyncio.run(store.close())
    assert store.closed and store.sync.closed
    with pytest.raises(tierstore.ClosedError):
        asyncio.run(store.query(qs[0]))


def test_open_as_context_manager_and_reopen(open_async_store, tmp_path, redis_server, s3_server, cold_section):
    """``async with tierstore.aio.open(...)`` closes on exit; a reopen sees what was written."""
    cfg = {"path": str(tmp_path / "ctx"), "dim": DIM, "env": {}, "hot": {"redis_url": redis_server.url},
           "cold": cold_section(s3_server), "policy": POLICY}
    vecs, _ = data(10)

    async def first() -> tierstore.aio.AsyncTierStore:
        async with tierstore.aio.open(**cfg, max_workers=2) as store:
            await store.upsert(list(range(10)), vecs)
            await store.move([9], "cold")
        return store

    async def second() -> list[str]:
        async with await tierstore.aio.open(**cfg) as store:
            return [h.tier for h in await store.query(vecs[9], k=1)]

    closed = asyncio.run(first())
    assert closed.closed and closed.sync.closed
    assert asyncio.run(second()) == ["cold"]
