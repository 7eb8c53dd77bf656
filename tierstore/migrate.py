"""Offline migration of a selection (``tierstore migrate``): a resumable job over the public
store API. The moves themselves are tierstore.engine.moves (one relocation protocol).

>>> job = {"tier": "cold", "filter": {"lang": "de"}, "from": ["hot", "warm"]}   # doctest: +SKIP
>>> run_job(store, job, select(store, job), batch_size=5000)                 # doctest: +SKIP
MoveReport(tier='cold', moved=1200, already=0, missing=0, seconds=3.1)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import tiers
from .results import MoveReport

if TYPE_CHECKING:
    from .store import TierStore


_JOB = b"migrate_job"


def saved_job(store: TierStore) -> dict[str, Any] | None:
    """The selection of an interrupted ``tierstore migrate`` (None when there is none)."""
    raw = store.catalog.get_meta(_JOB)
    return None if raw is None else json.loads(raw)


def select(store: TierStore, job: dict[str, Any]) -> list[str | int]:
    """The user ids a migrate job names: its id list, or every vector matching its filter
    (optionally only those now in ``job["from"]`` tiers), in internal-id order."""
    from . import filters
    from .catalog import normalize_ids

    if job.get("ids") is not None:
        return normalize_ids(job["ids"])
    node = filters.compile_filter(job.get("filter"), store.schema)
    codes = [tiers.CODES[t] for t in job["from"]] if job.get("from") else None
    return [e.uid for batch in store.catalog.entry_batches(tiers=codes) for e in batch
            if filters.matches(node, e.metadata)]


def run_job(store: TierStore, job: dict[str, Any], ids: list[str | int], batch_size: int,
            progress: Callable[[int], None] | None = None) -> MoveReport:
    """Move ``ids`` to ``job["tier"]`` in batches, saving the job in the catalog first so an
    interrupted run can be resumed (moves are idempotent: what already moved counts as
    ``already`` the second time). Batches to cold are whole segments (``cold.segment_size``)."""
    tier = job["tier"]
    size = store.config.cold.segment_size if tier == "cold" else max(1, batch_size)
    total = MoveReport(tier)
    store.catalog.set_meta(_JOB, json.dumps(job).encode())
    for s in range(0, len(ids), size):
        rep = store.move(ids[s : s + size], tier)
        total.moved += rep.moved
        total.already += rep.already
        total.missing += rep.missing
        total.seconds += rep.seconds
        job["done"] = min(len(ids), s + size)
        store.catalog.set_meta(_JOB, json.dumps(job).encode())
        if progress is not None:
            progress(len(ids[s : s + size]))
    store.catalog.delete_meta(_JOB)
    return total


__all__ = ["run_job", "saved_job", "select"]
