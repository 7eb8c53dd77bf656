"""Test and benchmark harness: nothing here is used by a store at runtime.

* :mod:`tierstore.testing.servers`: :class:`~tierstore.testing.servers.RedisCluster`, a local
  Redis Cluster built from the store's own embedded :class:`~tierstore.services.RedisServer`.
* :mod:`tierstore.testing.memory_hot`: :class:`~tierstore.testing.memory_hot.MemoryHotTier`, the
  hot tier in process memory (exact search), for unit tests without Redis; :func:`memory_store`
  opens a whole store on it.

>>> import tempfile
>>> store = memory_store(tempfile.mkdtemp(), dim=3)
>>> store.upsert([1, 2], [[1, 0, 0], [0, 1, 0]])
2
>>> store.query([1, 0.1, 0], k=1).ids()
[1]
>>> store.close()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .memory_hot import MemoryHotTier

if TYPE_CHECKING:
    from ..config import Config
    from ..store import TierStore


def memory_store(tmp_path: str | os.PathLike[str], dim: int = 8, *,
                 config: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
                 env: Mapping[str, str] | None = None, **overrides: Any) -> TierStore:
    """Open (or reopen) a store whose hot tier is a :class:`MemoryHotTier`: no redis-server.

    The store lives in ``<tmp_path>/store`` (``path=`` overrides that); ``overrides`` are
    :func:`tierstore.open`'s (``metric=``, ``hot={"capacity": 10}``, ``schema={...}``, ...).
    The cold tier is disabled unless ``config`` or a ``cold=`` override configures it (an S3
    ``url``/``endpoint_url`` there: the embedded S3 server would otherwise start on first use).
    ``env`` is what the config reads ``TIERSTORE_*`` variables from: none by default, so a test
    does not depend on the environment it runs in.

    Closing and calling it again with the same arguments reopens the same store (the memory hot
    tier is refilled from the catalog, like a flushed Redis)."""
    from ..config import load_config
    from ..store import TierStore

    overrides.setdefault("path", str(Path(tmp_path) / "store"))
    if config is None and "cold" not in overrides:
        overrides["cold"] = {"enabled": False}
    cfg = load_config(config, env={} if env is None else env, dim=dim, **overrides)
    return TierStore(cfg, hot_factory=MemoryHotTier)


__all__ = ["MemoryHotTier", "memory_store"]
