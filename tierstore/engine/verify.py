"""verify(): the catalog against every tier and S3 (see TierStore.verify), in the writer or in
a read-only process (:func:`verify_shared`); and rebuild_hot, the repair of the hot tier."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from .. import tiers
from ..catalog import TIER_COLD, TIER_HOT, TIER_WARM, Entry
from ..errors import TierStoreError, TierUnavailableError
from ..progress import ProgressFn, Ticker, check

# A read-only verify re-checks what it flagged (a write in flight looks like damage for a moment):
# up to this many rounds, after these pauses (seconds); a finding persists only if every round
# confirms it. The cold tier's own check is repeated at most _COLD_RECHECKS times (a deep one
# downloads every object again).
_SETTLE_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)
_COLD_RECHECKS = 2


@dataclass
class _Found:
    """What one check found, kept by kind so that a read-only verify can check each finding
    again (:func:`_recheck`); :meth:`problems` words them the way the report lists them."""

    warm: list[str] = field(default_factory=list)  # warm segment files (warm.verify)
    rows: dict[int, list[str]] = field(default_factory=dict)  # iid -> catalog-walk findings
    hot: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in _HOT_KINDS})
    cold: list[str] = field(default_factory=list)  # the cold tier's own check (and "not checked")
    other: list[str] = field(default_factory=list)  # e.g. "hot tier not checked": not rechecked

    def problems(self, engine: Any) -> list[str]:
        out = list(self.warm)
        for msgs in self.rows.values():
            out += msgs
        out += _hot_problems(engine, self.hot)
        return out + self.other + self.cold

    def count(self) -> int:
        return len(self.warm) + len(self.rows) + sum(map(len, self.hot.values())) + len(self.cold)


_HOT_KINDS = ("missing", "extra", "stale", "wrong")


def _hot_problems(engine: Any, hot: dict[str, set[int]]) -> list[str]:
    problems = []
    missing, extra, stale, wrong = (hot[k] for k in _HOT_KINDS)
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
    return problems


def _verify_hot(engine: Any, hot_ids: set[int], versions: dict[int, int], pending: set[int], deep: bool,
                report: dict[str, Any], found: _Found) -> None:
    """Redis holds exactly the hot ids (minus pending work not yet applied), each at the
    catalog's version; ``deep``: and with the catalog's vector bytes."""
    try:
        in_redis = engine.hot.keys()
        settled = {i: v for i, v in versions.items() if i in in_redis and i not in pending}
        stale = engine.hot.stale(settled)
        wrong = engine.hot.differs(sorted(set(settled) - stale)) if deep else set()
    except redis.RedisError as exc:
        raise TierUnavailableError(f"hot tier: {exc}", tier="hot") from exc
    found.hot = {"missing": hot_ids - in_redis - pending, "extra": in_redis - hot_ids - pending,
                 "stale": stale, "wrong": wrong}
    report["hot"] = {"catalog": len(hot_ids), "redis": len(in_redis), "pending": len(pending),
                     "version_checked": len(settled), "content_checked": len(settled) - len(stale) if deep else 0}


def _row_problems(engine: Any, txn: Any, e: Entry) -> list[str]:
    """The catalog walk's findings about one entry: its durable vector in LMDB (read in ``txn``,
    the transaction ``e`` was read in or a later one) and, for a warm entry, its segment row."""
    has_vec = engine.catalog.vector_raw(txn, e.iid) is not None
    out = []
    if e.tier != TIER_COLD and not has_vec:
        out.append(f"{e.uid!r}: {tiers.NAMES[e.tier]} but no durable vector in LMDB")
    if e.tier == TIER_COLD and has_vec:
        out.append(f"{e.uid!r}: cold but still holds an LMDB vector")
    if e.tier == TIER_WARM:
        where = engine.warm.missing_row(e)
        if where is not None:
            out.append(f"{e.uid!r}: {where}")
    return out


def _cold_checked(engine: Any) -> bool:
    return engine.cold is not None and (engine.cold.connected or engine.cold.needs_connect_at_open())


def verify(engine: Any, deep: bool = True, repair: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Catalog vs tiers vs S3 (see TierStore.verify). ``progress(done, total)`` counts vectors
    through four phases: the warm segments' files (``warm`` vectors), the catalog walk (every
    entry), the Redis check (``hot``), the cold objects (``cold``); a phase the tier runs on its
    own (file hashing, S3 downloads) reports when it ends."""
    tick = Ticker(progress)
    report, _ = _check(engine, deep, repair, tick)
    tick.finish(tick.total)
    return report


def _check(engine: Any, deep: bool, repair: bool, tick: Ticker) -> tuple[dict[str, Any], _Found]:
    cat = engine.catalog
    found = _Found()
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
    found.warm = warm_rep.pop("problems")
    tick.add(counts["warm"])
    # hot: Redis holds exactly the hot ids (minus pending work not yet applied)
    pending = set(cat.pending(limit=10_000_000))
    hot_ids, warm_rows = set(), 0
    hot_versions: dict[int, int] = {}
    for batch in cat.entry_batches():
        with cat.read() as txn:
            for e in batch:
                if e.tier == TIER_HOT:
                    hot_ids.add(e.iid)
                    hot_versions[e.iid] = e.version
                elif e.tier == TIER_WARM:
                    warm_rows += 1
                msgs = _row_problems(engine, txn, e)
                if msgs:
                    found.rows[e.iid] = msgs
        tick.add(len(batch))
    standby = engine.hot.standby_reason
    if standby is not None:
        # Redis is loading or being refilled; the catalog answers for it meanwhile (not a fault)
        report["hot"] = {"catalog": len(hot_ids), "standby": standby, "pending": len(pending)}
    else:
        try:
            _verify_hot(engine, hot_ids, hot_versions, pending, deep, report, found)
        except TierStoreError as exc:
            if not engine.read_only:
                found.other.append(f"hot tier not checked: {exc}")
            else:  # no writer serves Redis now: this process answers from the catalog (not a fault)
                report["hot"] = {"catalog": len(hot_ids), "standby": f"Redis not readable ({exc})",
                                 "pending": len(pending)}
    tick.add(counts["hot"])
    report["warm"] = {"catalog": warm_rows, **warm_rep}
    if _cold_checked(engine):
        found.cold = _verify_cold(engine, deep, repair, report)
    problems = found.problems(engine)
    report["problems"] = problems[:200]
    report["ok"] = not problems
    return report, found


_COLD_NOT_CHECKED = "cold tier not checked: "  # (S3 unreachable: its message may differ between rounds)


def _verify_cold(engine: Any, deep: bool, repair: bool, report: dict[str, Any]) -> list[str]:
    """The cold tier's own check, its counts into ``report["cold"]``; returns its problems."""
    try:
        rep = engine.cold.verify(deep, repair)
    except TierStoreError as exc:
        return [f"{_COLD_NOT_CHECKED}{exc}"]
    problems = rep.pop("problems")
    rep.pop("ok")
    if "repaired" in rep:
        report.setdefault("repaired", {})["cold"] = rep.pop("repaired")
    report["cold"] = rep
    return problems


def verify_shared(engine: Any, refresh: Any, deep: bool = True, progress: ProgressFn | None = None) -> dict[str, Any]:
    """verify() in a read-only process (no repair: that writes). The writer may move vectors while it runs: a
    move copies the vector, flips its catalog entry, then removes the old copy, and a check that
    lands in between sees a copy the catalog does not name yet, or one it no longer names. So
    every finding is checked again (:func:`_recheck`: ``refresh`` brings this process's view of
    the tiers up to the catalog, the flagged entries are read afresh, their copies looked at
    again) after short pauses, and only what every round confirms is reported;
    ``report["rechecked"]`` counts the findings that turned out to be writes in flight.

    ``report["quiet"]``: no commit landed from the start of the check to the end of the
    rechecks. When one did and problems remain, the report says so (``concurrent_writes``, and
    a last line in ``problems``) instead of presenting them as certain damage: rerun verify in
    the writer, or while it is idle, to be sure."""
    tick = Ticker(progress)
    before = engine.catalog.view_state()
    refresh()
    rep, found = _check(engine, deep, False, tick)
    rep["read_only"] = True
    flagged = found.count()
    rounds = 0
    if flagged:
        for pause in _SETTLE_PAUSES:
            time.sleep(pause)
            rounds += 1
            _recheck(engine, refresh, deep, found, rep, cold=rounds <= _COLD_RECHECKS)
            if not found.count():
                break
        problems = found.problems(engine)
        rep["problems"] = problems[:200]
        rep["ok"] = not problems
    rep["rechecked"] = {"flagged": flagged, "in_flight": flagged - found.count(), "rounds": rounds}
    rep["quiet"] = engine.catalog.view_state() == before
    if not rep["quiet"]:
        rep["concurrent_writes"] = True
        if rep["problems"]:
            rep["problems"].append(f"the writer committed during this check: the problems above persisted "
                                   f"through {rounds} rechecks, but may still be writes in flight; rerun verify "
                                   "in the writer (or while it is idle) to be sure")
    tick.finish(tick.total)
    return rep


def _recheck(engine: Any, refresh: Any, deep: bool, found: _Found, rep: dict[str, Any], cold: bool) -> None:
    """One round of :func:`verify_shared`'s second look: drop from ``found`` what a fresh read
    no longer confirms. A finding about an entry the writer changed during the round is a write
    in flight (the write places a new copy); a tier-level finding must come back word for word."""
    cat = engine.catalog
    refresh()
    if found.warm:  # (quick: a segment found damaged stays so; one the writer dropped is gone)
        again = set(engine.warm.verify(False)["problems"])
        found.warm = [p for p in found.warm if p in again]
    suspects = set(found.rows).union(*found.hot.values())
    if not suspects and not (cold and found.cold):
        return
    with cat.read() as txn:
        first = {i: cat.entry(txn, i) for i in suspects}
    rows: dict[int, list[str]] = {}
    if found.rows:
        with cat.read() as txn:
            for iid in found.rows:
                e = cat.entry(txn, iid)
                msgs = [] if e is None else _row_problems(engine, txn, e)
                if msgs:
                    rows[iid] = msgs
    hot = {k: set() for k in _HOT_KINDS}
    hot_suspects = set().union(*found.hot.values())
    if hot_suspects and engine.hot.standby_reason is None:
        try:
            hot = _recheck_hot(engine, {i: first[i] for i in hot_suspects}, deep)
        except (redis.RedisError, TierStoreError):
            hot = found.hot  # Redis not readable now: nothing settled
    elif hot_suspects:
        hot = found.hot
    with cat.read() as txn:  # an entry the writer changed meanwhile: a write in flight
        moved = {i for i, e in first.items() if cat.entry(txn, i) != e}
    found.rows = {i: m for i, m in rows.items() if i not in moved}
    found.hot = {k: {i for i in v if i not in moved} for k, v in hot.items()}
    if cold and any(not _local_cache(p) for p in found.cold) and _cold_checked(engine):
        # (into the report: a recheck that reaches S3 where the first check could not is the
        # check whose counts the report must show)
        again = set(_verify_cold(engine, deep, False, rep))
        unreachable = any(q.startswith(_COLD_NOT_CHECKED) for q in again)
        found.cold = [p for p in found.cold if p in again or _local_cache(p)
                      or (unreachable and p.startswith(_COLD_NOT_CHECKED))]


def _local_cache(problem: str) -> bool:
    """A cold finding about a local cache file (``ColdTier._verify_local``): damage on this
    machine's disk, never a write in flight (cache files are replaced whole), so it is not
    rechecked -- a recheck would not see it again where the first check dropped the file."""
    return ": the local footer cache " in problem or ": cached " in problem


def _recheck_hot(engine: Any, entries: dict[int, Entry | None], deep: bool) -> dict[str, set[int]]:
    """:func:`_verify_hot` for the flagged ids only, against their fresh ``entries``."""
    pending = set(engine.catalog.pending(limit=10_000_000))
    in_redis = engine.hot.keys()
    out: dict[str, set[int]] = {k: set() for k in _HOT_KINDS}
    versions = {}
    for iid, e in entries.items():
        if iid in pending:
            continue
        is_hot = e is not None and e.tier == TIER_HOT
        if is_hot and iid not in in_redis:
            out["missing"].add(iid)
        elif not is_hot and iid in in_redis:
            out["extra"].add(iid)
        elif is_hot:
            versions[iid] = e.version
    out["stale"] = engine.hot.stale(versions)
    if deep:
        out["wrong"] = engine.hot.differs(sorted(set(versions) - out["stale"]))
    return out


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
