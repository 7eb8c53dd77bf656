"""The unified query: fan out to the tiers, keep what the catalog confirms, merge the top k.

Each tier's index may lag the catalog for a moment (a write between the LMDB commit and the
index update, a move in flight, a delete not yet removed from Redis). So every candidate is
kept only if the catalog *currently* places it in the tier that returned it; that makes a moving
vector appear exactly once and a deleted one never. When the check drops candidates from a full
page, that tier is asked again for a larger page, so ``k`` results are still returned.

A tier that fails is reported in ``Hits.tiers[name]`` (``ok=False``) and the answer is flagged
``partial``; when every searched tier fails the query raises :class:`TierUnavailableError`.

Tiers implement ``search_many(queries, k, node, ef) -> [(iids, distances, incomplete), ...]``
(plain lists: per-query work here is a few dozen items, where numpy's per-call cost dominates).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from . import filters
from .catalog import TIER_CODES, TIER_NAMES, Catalog
from .errors import TierStoreError, TierUnavailableError
from .results import Hit, Hits, TierReport

_REFETCH_ROUNDS = 4
# internal ids, distances (ascending), incomplete[, locations: seg | pos << 32 for segment tiers]
TierAnswer = tuple


class SearchableTier(Protocol):
    name: str

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]: ...


class ReaderGate:
    """Lets a writer wait until every query that began before a point in time has finished.

    Queries ``enter()`` (noting the current epoch) before taking their catalog snapshot and
    ``exit()`` after; a mover calls ``wait()`` after its catalog flip and before removing the
    old copy, so no query that may still look for the old copy loses it."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._epoch = 0
        self._active: dict[int, int] = {}

    def enter(self) -> int:
        with self._cv:
            e = self._epoch
            self._active[e] = self._active.get(e, 0) + 1
            return e

    def exit(self, epoch: int) -> None:
        with self._cv:
            left = self._active[epoch] - 1
            if left:
                self._active[epoch] = left
            else:
                del self._active[epoch]
                self._cv.notify_all()

    def wait(self, timeout: float = 60.0) -> bool:
        """True when every earlier query finished; False after ``timeout`` (a query stuck that
        long, e.g. waiting on Redis, then risks missing a vector that moved meanwhile)."""
        with self._cv:
            self._epoch += 1
            now = self._epoch
            done = self._cv.wait_for(lambda: all(e >= now for e in self._active), timeout=timeout)
        if not done:
            logging.getLogger("tierstore").warning("reader grace timed out after %.0fs", timeout)
        return done


def run(
    catalog: Catalog,
    tiers: Sequence[SearchableTier],
    qs: np.ndarray,
    k: int,
    node: filters.Node,
    *,
    ef: int | None = None,
    executor: Executor | None = None,
) -> tuple[list[Hits], list[list[int]]]:
    """Search ``qs`` (m, dim) on ``tiers``; returns one Hits per query and, per query, the policy
    slots of its hits in rank order (for access statistics)."""
    if node == filters.FALSE:
        return [Hits([], tiers={t.name: TierReport(t.name, searched=False) for t in tiers}) for _ in qs], [
            [] for _ in qs]
    # The catalog snapshot is taken *before* the tiers are searched, and every move or
    # replacement removes a vector from its old place only after the queries that began before
    # its catalog flip have finished (the store's reader gate). So whatever version the snapshot
    # names is still findable where it names it: each live vector is returned exactly once.
    # Zero-copy reads: raw entries are used only inside this transaction.
    with catalog.read(buffers=True) as txn:
        if len(tiers) == 1:
            outcomes = [_call(tiers[0], qs, k, node, ef)]
            if isinstance(outcomes[0][1], Exception) and catalog.count(TIER_CODES[tiers[0].name], txn) == 0:
                outcomes = []  # the tier is down but holds nothing: nothing is missing from the answer
        else:
            live = [t for t in tiers if catalog.count(TIER_CODES[t.name], txn) > 0]  # skip empty tiers
            if len(live) > 1 and executor is not None:
                outcomes = list(executor.map(lambda t: _call(t, qs, k, node, ef), live))
            else:
                outcomes = [_call(t, qs, k, node, ef) for t in live]
        errors = [out for _t, out, _s in outcomes if isinstance(out, Exception)]
        if outcomes and len(errors) == len(outcomes):
            exc = errors[0]
            if isinstance(exc, TierUnavailableError):
                raise exc
            raise TierUnavailableError(f"no tier could answer the query: {exc}") from exc
        return _merge(catalog, txn, tiers, outcomes, bool(errors), qs, k, node, ef)


def _call(t: SearchableTier, qs: np.ndarray, k: int, node: filters.Node, ef: int | None) -> tuple[Any, Any, float]:
    t0 = time.perf_counter()
    try:
        return t, t.search_many(qs, k, node, ef), time.perf_counter() - t0
    except TierStoreError as exc:
        return t, exc, time.perf_counter() - t0


def _merge(
    catalog: Catalog, txn: Any, tiers: Sequence[SearchableTier], outcomes: list, failed: bool,
    qs: np.ndarray, k: int, node: filters.Node, ef: int | None,
) -> tuple[list[Hits], list[list[int]]]:
    results: list[Hits] = []
    hit_slots: list[list[int]] = []
    decode = catalog.decode_hit
    for i in range(qs.shape[0]):
        reports = {t.name: TierReport(t.name, searched=False) for t in tiers}
        cands: list[tuple[float, int, int, Any]] = []
        incomplete = False
        for t, out, secs in outcomes:
            rep = reports[t.name]
            rep.searched, rep.latency_ms = True, 1000.0 * secs
            if isinstance(out, Exception):
                rep.ok, rep.error = False, f"{type(out).__name__}: {out}"
                continue
            kept, n_cand, dropped, inc = _confirmed_page(catalog, txn, t, qs[i : i + 1], out[i], k, node, ef)
            rep.candidates, rep.dropped = n_cand, dropped
            rep.details["incomplete"] = inc
            incomplete |= inc
            cands += kept
        cands.sort()  # distance, then internal id: deterministic ties
        hits, slots = [], []
        for dist, _iid, code, raw in cands[:k]:
            uid, slot, meta = decode(raw)
            name = TIER_NAMES[code]
            hits.append(Hit(uid, dist, name, meta))
            reports[name].returned += 1
            slots.append(slot)
        results.append(Hits(hits, partial=failed or incomplete, tiers=reports))
        hit_slots.append(slots)
    return results, hit_slots


def _confirmed_page(
    catalog: Catalog, txn: Any, tier: SearchableTier, q: np.ndarray, answer: TierAnswer, k: int,
    node: filters.Node, ef: int | None,
) -> tuple[list[tuple[float, int, int, Any]], int, int, bool]:
    """Keep the candidates the catalog places in ``tier``; if that dropped some of a full page,
    ask the tier again for a larger one. -> (kept, candidates seen, dropped, incomplete)."""
    code = TIER_CODES[tier.name]
    get, db = txn.get, catalog.entries_db
    fetch = k
    for rounds in range(_REFETCH_ROUNDS + 1):
        iids, dists, inc = answer[:3]
        locs = answer[3] if len(answer) > 3 else None
        kept = []
        for j, (iid, d) in enumerate(zip(iids, dists, strict=True)):
            raw = get(iid.to_bytes(8, "big"), db=db)
            # same tier and, for segment tiers, the very row the catalog names (not an old version)
            if raw is not None and raw[0] == code and (locs is None or int.from_bytes(raw[8:16], "little") == locs[j]):
                kept.append((d, iid, code, raw))
        dropped = len(iids) - len(kept)
        if not dropped or len(kept) >= k or len(iids) < fetch or rounds == _REFETCH_ROUNDS:
            return kept, len(iids), dropped, inc
        fetch = min(4 * fetch + dropped, 10_000)
        answer = tier.search_many(q, fetch, node, ef)[0]
    raise AssertionError("unreachable")


__all__ = ["ReaderGate", "SearchableTier", "TierAnswer", "run"]
