"""verify(): the catalog against every tier and S3 (see TierStore.verify), in the writer or in
a read-only process (:func:`verify_shared`); and rebuild_hot, the repair of the hot tier."""

from __future__ import annotations

import inspect
import time
from typing import Any

import redis

from .. import tiers
from ..catalog import TIER_COLD, TIER_HOT, TIER_WARM
from ..errors import TierStoreError, TierUnavailableError
from ..progress import ProgressFn, Ticker, check

_SHARED_TRIES = 3  # a read-only verify repeated while the writer commits under it


def _verify_hot(engine: Any, hot_ids: set[int], versions: dict[int, int], pending: set[int], deep: bool,
                report: dict[str, Any]) -> list[str]:
    """Redis holds exactly the hot ids (minus pending work not yet applied), each at the
    catalog's version; ``deep``: and with the catalog's vector bytes."""
    problems = []
    try:
        in_redis = engine.hot.keys()
        settled = {i: v for i, v in versions.items() if i in in_redis and i not in pending}
        stale = engine.hot.stale(settled)
        wrong = engine.hot.differs(sorted(set(settled) - stale)) if deep else set()
    except redis.RedisError as exc:
        raise TierUnavailableError(f"hot tier: {exc}", tier="hot") from exc
    missing = hot_ids - in_redis - pending
    extra = in_redis - hot_ids - pending
    if missing:
        problems.append(f"{len(missing)} hot vectors are missing from Redis (rebuild-hot repairs it)")
    if extra:
        problems.append(f"{len(extra)} Redis keys name no hot vector")
    if stale:
        names = engine.catalog.user_ids(sorted(stale)[:5])
        problems.append(f"{len(stale)} Redis copies are of another version than the catalog's (e.g. {names}); "
                        "reopening the store or rebuild-hot repairs it")
    if wrong:
        names = engine.catalog.user_ids(sorted(wrong)[:5])
        problems.append(f"{len(wrong)} Redis copies hold other vector bytes than the catalog (e.g. {names}); "
                        "rebuild-hot repairs it")
    report["hot"] = {"catalog": len(hot_ids), "redis": len(in_redis), "pending": len(pending),
                     "version_checked": len(settled), "content_checked": len(settled) - len(stale) if deep else 0}
    return problems


def _cold_checked(engine: Any) -> bool:
    return engine.cold is not None and (engine.cold.connected or engine.cold.needs_connect_at_open())


def verify(engine: Any, deep: bool = True, repair: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Catalog vs tiers vs S3 (see TierStore.verify). ``progress(done, total)`` counts vectors
    through four phases: the warm segments' files (``warm`` vectors), the catalog walk (every
    entry), the Redis check (``hot``), the cold objects (``cold``); a phase the tier runs on its
    own (file hashing, S3 downloads) reports when it ends."""
    tick = Ticker(progress)
    report = _check(engine, deep, repair, tick)
    tick.finish(tick.total)
    return report


def _check(engine: Any, deep: bool, repair: bool, tick: Ticker) -> dict[str, Any]:
    cat = engine.catalog
    problems: list[str] = []
    counts = cat.counts()
    report: dict[str, Any] = {"counts": counts}
    tick.set(0, counts["warm"] + sum(counts.values()) + counts["hot"]
             + (counts.get("cold", 0) if _cold_checked(engine) else 0))
    # warm files first (``deep``: every byte against its checksums; a failing segment stops being
    # served), and ``repair`` rebuilds from the catalog, so the row checks below see the result
    warm_rep = engine.warm.verify(deep)
    if repair and (warm_rep["damaged"] or warm_rep["no_checksums"]):
        report["repaired"] = {"warm": engine.warm.repair()}
        warm_rep = engine.warm.verify(deep)
    problems += warm_rep.pop("problems")
    tick.add(counts["warm"])
    # hot: Redis holds exactly the hot ids (minus pending work not yet applied)
    pending = set(cat.pending(limit=10_000_000))
    hot_ids, warm_rows = set(), 0
    hot_versions: dict[int, int] = {}
    for batch in cat.entry_batches():
        with cat.read() as txn:
            for e in batch:
                has_vec = cat.vector_raw(txn, e.iid) is not None
                if e.tier == TIER_HOT:
                    hot_ids.add(e.iid)
                    hot_versions[e.iid] = e.version
                if e.tier != TIER_COLD and not has_vec:
                    problems.append(f"{e.uid!r}: {tiers.NAMES[e.tier]} but no durable vector in LMDB")
                if e.tier == TIER_COLD and has_vec:
                    problems.append(f"{e.uid!r}: cold but still holds an LMDB vector")
                if e.tier == TIER_WARM:
                    warm_rows += 1
                    where = engine.warm.missing_row(e)
                    if where is not None:
                        problems.append(f"{e.uid!r}: {where}")
        tick.add(len(batch))
    standby = engine.hot.standby_reason
    if standby is not None:
        # Redis is loading or being refilled; the catalog answers for it meanwhile (not a fault)
        report["hot"] = {"catalog": len(hot_ids), "standby": standby, "pending": len(pending)}
    else:
        try:
            problems += _verify_hot(engine, hot_ids, hot_versions, pending, deep, report)
        except TierStoreError as exc:
            if not engine.read_only:
                problems.append(f"hot tier not checked: {exc}")
            else:  # no writer serves Redis now: this process answers from the catalog (not a fault)
                report["hot"] = {"catalog": len(hot_ids), "standby": f"Redis not readable ({exc})",
                                 "pending": len(pending)}
    tick.add(counts["hot"])
    report["warm"] = {"catalog": warm_rows, **warm_rep}
    if _cold_checked(engine):
        try:
            rep = engine.cold.verify(deep, repair)
            problems += rep.pop("problems")
            rep.pop("ok")
            if "repaired" in rep:
                report.setdefault("repaired", {})["cold"] = rep.pop("repaired")
            report["cold"] = rep
        except TierStoreError as exc:
            problems.append(f"cold tier not checked: {exc}")
    report["problems"] = problems[:200]
    report["ok"] = not problems
    return report


def verify_shared(engine: Any, refresh: Any, deep: bool = True, progress: ProgressFn | None = None) -> dict[str, Any]:
    """verify() in a read-only process (no repair: that writes). The writer may commit while it
    runs, and a check that straddles a commit can see, say, a Redis key the catalog does not list
    yet: so the check is repeated (``refresh`` brings this process's view of the tiers up to the
    catalog first) until no commit landed during it, up to 3 times; a report that never got a
    quiet run says so (``concurrent_writes``) instead of presenting a race as damage."""
    rep: dict[str, Any] = {}
    tick = Ticker(progress)
    for _ in range(_SHARED_TRIES):
        before = engine.catalog.view_state()
        refresh()
        rep = _check(engine, deep, False, tick)  # (a repeat starts the count again)
        rep["read_only"] = True
        if engine.catalog.view_state() == before:
            break
    else:
        rep["concurrent_writes"] = True
        if rep["problems"]:
            rep["problems"].append("the writer committed during each of 3 checks: the problems above may be "
                                   "writes in flight; rerun verify in the writer (or while it is idle) to be sure")
    tick.finish(tick.total)
    return rep


_STANDBY_WAIT = 1800.0  # seconds rebuild_hot waits for Redis to load (~1 min per 100k vectors)


def rebuild_hot(engine: Any, progress: ProgressFn | None = None) -> int:
    """``TierStore.rebuild_hot``: drop the Redis index and reload it from the catalog, reporting
    vectors reloaded to ``progress``. A hot tier whose ``rebuild`` takes no progress (a Redis
    Cluster, the in-memory test tier) reports only when it is done.

    While the catalog stands in for Redis (an embedded server loading its data -- which every CLI
    run that opens a store with a large AOF meets -- or being refilled), it first waits for the
    background warm-up to switch back (which needs the write lock, so it is taken only after),
    reporting ``(0, total)``; a Redis that is still not back after 30 min is an error."""
    hot = engine.hot
    check(progress)
    total = engine.catalog.count(TIER_HOT)
    tick = Ticker(progress, total)
    deadline = time.monotonic() + _STANDBY_WAIT
    while hot.standby_reason is not None:
        if time.monotonic() > deadline:
            raise TierUnavailableError(f"hot tier: rebuild_hot waited {_STANDBY_WAIT:.0f}s for Redis: "
                                       f"{hot.standby_reason}", tier="hot")
        tick.set(0)
        time.sleep(0.2)
    with engine.write_lock:
        if progress is None:
            return hot.rebuild()
        if "progress" in inspect.signature(hot.rebuild).parameters:
            return hot.rebuild(progress=progress)
        tick.set(0)
        n = hot.rebuild()
    tick.finish(n)
    return n


__all__ = ["rebuild_hot", "verify", "verify_shared"]
