"""Real servers and stores for the framework adapters' tests (tierstore.integrations).

Like tests/integration/conftest.py (whose fixtures are not visible from this folder): one
redis-server + RediSearch and one S3 server (SeaweedFS) per session, each store under its own
key prefix and bucket prefix. Nothing skips: a missing server binary fails the fixture.

The standard LangChain suite's async tests are plain ``async def`` methods (LangChain's own repos
run them in pytest-asyncio's auto mode); the hook below marks the coroutine tests of this folder
for pytest-asyncio, so the project's strict mode stays as it is everywhere else.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator

import pytest
from adapters_support import IDLE_POLICY, PLACEMENTS, store_config

import tierstore
from tierstore.services import RedisServer, S3Server


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """Mark ``async def`` tests collected here with ``asyncio`` (inside pytest-asyncio's own
    wrapper, which then runs them on an event loop)."""
    outcome = yield
    result = outcome.get_result()
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.asyncio)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Its credentials go into the environment: stores find them through boto3's chain."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    os.environ["AWS_ACCESS_KEY_ID"] = server.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = server.secret_key
    yield server
    server.stop()


@pytest.fixture(scope="session")
def open_kwargs(redis_server: RedisServer, s3_server: S3Server,
                tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict]:
    """``open_kwargs(**overrides)``: keywords for ``tierstore.open`` (or an adapter's
    ``from_texts(..., **kw)``) of a new store on the session servers."""
    return lambda **kw: store_config(redis_server, s3_server, tmp_path_factory.mktemp("store"), **kw)


@pytest.fixture
def open_store(open_kwargs: Callable[..., dict]) -> Iterator[Callable[..., tierstore.TierStore]]:
    """Factory: open a store on the session servers; closed after the test."""
    opened: list[tierstore.TierStore] = []

    def make(**kw) -> tierstore.TierStore:
        store = tierstore.open(**open_kwargs(**kw))
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture(scope="module", params=PLACEMENTS)
def placed_store(request: pytest.FixtureRequest, open_kwargs: Callable[..., dict]) -> Iterator[tuple[str, tierstore.TierStore]]:
    """``(tier, store)`` per placement, shared by a module's tests (opening one per test would
    cost ~0.4 s each); the tests that use it empty it after themselves. The policy stays idle
    (no cycle, no promotion on access), so every record stays in the tier it was written to."""
    store = tierstore.open(**open_kwargs(schema={"id": "numeric", "kind": "tag"}, policy=IDLE_POLICY))
    yield request.param, store
    store.close()
