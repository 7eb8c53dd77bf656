"""Real servers for the integration tests, started once per session.

Nothing here skips: if a server binary is missing, the fixture raises (MissingBinaryError names the
package to install), so a CI run without the servers fails loudly instead of passing vacuously.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tierstore
from tierstore import datasets
from tierstore.services import RedisServer, S3Server
from tierstore.testing.servers import RedisCluster


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server + RediSearch on a free loopback port, shared by the tests' stores (each
    store uses its own key prefix, derived from its uuid)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local Redis Cluster of three masters (RediSearch on each), started on first use and
    shared by the tests' stores (each under its own key prefix)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


def _hot_target(request: pytest.FixtureRequest, hot_backend: str, redis_server: RedisServer) -> dict:
    """``{"backend", "redis_url"}`` of a ``hot_backend`` value: "search", "vectorset", or
    "search-cluster" (RediSearch on the session's 3-master cluster)."""
    if hot_backend == "search-cluster":
        return {"backend": "search", "redis_url": request.getfixturevalue("redis_cluster").url}
    return {"backend": hot_backend, "redis_url": redis_server.url}


@pytest.fixture(scope="session")
def hot_target() -> Callable[[pytest.FixtureRequest, str, RedisServer], dict]:
    """``hot_target(request, hot_backend, redis_server)``: the ``[hot]`` keys for a backend param."""
    return _hot_target


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3 server (SeaweedFS ``weed mini``) with the bucket ``tierstore``; each store uses its
    own prefix. Its credentials go into the environment: stores find them through boto3's chain,
    like they would on a real deployment."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    os.environ["AWS_ACCESS_KEY_ID"] = server.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = server.secret_key
    yield server
    server.stop()


def _cold_section(server: S3Server, **kw) -> dict:
    """A ``[cold]`` section on ``server`` under a fresh prefix, failing fast in tests."""
    return {"url": f"s3://tierstore/t-{uuid.uuid4().hex[:12]}", "endpoint_url": server.endpoint_url,
            "max_attempts": 2, "timeout": "5s", **kw}


@pytest.fixture(scope="session")
def cold_section() -> Callable[..., dict]:
    """``cold_section(server, **keys)``: a ``[cold]`` config section under a fresh prefix."""
    return _cold_section


@pytest.fixture(scope="session")
def hot_backend() -> str:
    """The ``hot.backend`` that ``open_store`` uses. A test module runs its tests on both
    backends by overriding it: ``@pytest.fixture(scope="module", params=["search", "vectorset"])``
    (and on the Redis Cluster with "search-cluster")."""
    return "search"


@pytest.fixture(scope="session")
def redis_server_nosearch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server 8 *without* RediSearch (vector sets are built in): what "auto" meets on
    a plain Redis 8."""
    server = RedisServer(tmp_path_factory.mktemp("redis-nosearch"), port=0, search=False).start()
    yield server
    server.stop()


@pytest.fixture
def open_store(tmp_path: Path, redis_server: RedisServer, s3_server: S3Server, hot_backend: str,
               request: pytest.FixtureRequest) -> Iterator[Callable[..., tierstore.TierStore]]:
    """Factory: open a store on the session Redis and S3 (``embedded=True`` -> its own redis-server)."""
    opened: list[tierstore.TierStore] = []

    def make(*, path: Path | None = None, embedded: bool = False, **kw) -> tierstore.TierStore:
        kw.setdefault("dim", 8)
        hot = dict(kw.pop("hot", {}))
        target = _hot_target(request, hot_backend, redis_server)
        hot.setdefault("backend", target["backend"])
        if not embedded:
            hot.setdefault("redis_url", target["redis_url"])
        if "cold" not in kw or kw["cold"].get("enabled", True):
            kw["cold"] = {**_cold_section(s3_server), **kw.get("cold", {})}
        store = tierstore.open(path=str(path or tmp_path / f"store{len(opened)}"), hot=hot, env={}, **kw)
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture(scope="session")
def wordnet_20k() -> datasets.Dataset:
    """The first 20k rows of wordnet-minilm and 200 queries, with exact ground truth."""
    path = datasets.find_wordnet()
    if path is None:
        if os.environ.get("CI"):
            raise RuntimeError("wordnet-minilm not found next to the checkout (../shared/data); CI must have it")
        warnings.warn("wordnet-minilm not found: using generated clustered data", stacklevel=1)
        return datasets.clustered(20_000, 384, queries=200)
    return datasets.load_wordnet(path, n=20_000, queries=200)

