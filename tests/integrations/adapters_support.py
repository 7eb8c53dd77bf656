"""Helpers shared by the adapter tests (a module of its own: ``conftest`` is not importable by
name when several test folders have one)."""

from __future__ import annotations

import uuid
from pathlib import Path

import tierstore
from tierstore.services import RedisServer, S3Server

PLACEMENTS = ["hot", "warm", "cold"]
# no policy cycle and no promotion on access during a test: records stay where they were written
IDLE_POLICY = {"interval": "1h", "promote_interval": 0}

def store_config(redis: RedisServer, s3: S3Server, path: Path, **kw) -> dict:
    """Keywords for ``tierstore.open`` of a store on the session servers (fresh prefixes)."""
    kw.setdefault("dim", 6)
    return {"path": str(path), "env": {},
            "hot": {"backend": "search", "redis_url": redis.url, **kw.pop("hot", {})},
            "cold": {"url": f"s3://tierstore/i-{uuid.uuid4().hex[:12]}", "endpoint_url": s3.endpoint_url,
                     "max_attempts": 2, "timeout": "5s", **kw.pop("cold", {})},
            **kw}

def empty(store: tierstore.TierStore) -> None:
    """Delete every record (between tests that share a store), and check it worked."""
    for batch in store.scan(batch_size=1000):
        store.delete([r.id for r in batch])
    assert len(store) == 0
