"""verify(): the catalog against every tier and S3 (see TierStore.verify)."""

from __future__ import annotations

from typing import Any

import redis

from .. import tiers
from ..catalog import TIER_COLD, TIER_HOT, TIER_WARM
from ..errors import TierStoreError, TierUnavailableError


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


def verify(engine: Any, deep: bool = True, repair: bool = False) -> dict[str, Any]:
    """Catalog vs tiers vs S3 (see TierStore.verify)."""
    cat = engine.catalog
    problems: list[str] = []
    report: dict[str, Any] = {"counts": cat.counts()}
    # warm files first (``deep``: every byte against its checksums; a failing segment stops being
    # served), and ``repair`` rebuilds from the catalog, so the row checks below see the result
    warm_rep = engine.warm.verify(deep)
    if repair and (warm_rep["damaged"] or warm_rep["no_checksums"]):
        report["repaired"] = {"warm": engine.warm.repair()}
        warm_rep = engine.warm.verify(deep)
    problems += warm_rep.pop("problems")
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
    standby = engine.hot.standby_reason
    if standby is not None:
        # Redis is loading or being refilled; the catalog answers for it meanwhile (not a fault)
        report["hot"] = {"catalog": len(hot_ids), "standby": standby, "pending": len(pending)}
    else:
        try:
            problems += _verify_hot(engine, hot_ids, hot_versions, pending, deep, report)
        except TierStoreError as exc:
            problems.append(f"hot tier not checked: {exc}")
    report["warm"] = {"catalog": warm_rows, **warm_rep}
    if engine.cold is not None and (engine.cold.connected or engine.cold.needs_connect_at_open()):
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


__all__ = ["verify"]
