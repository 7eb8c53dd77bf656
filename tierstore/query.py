"""The unified query: fan out to the tiers, keep what the catalog confirms, merge the top k.

Each tier's index may lag the catalog for a moment (a write between the LMDB commit and the
index update, a move in flight, a delete not yet removed from Redis). So every candidate is
kept only if the catalog *currently* places it in the tier that returned it; that makes a moving
vector appear exactly once and a deleted one never. When the check drops candidates from a full
page, that tier is asked again for a larger page, so ``k`` results are still returned.

A tier that fails is reported in ``Hits.tiers[name]`` (``ok=False``) and the answer is flagged
``partial``; when every searched tier fails the query raises :class:`TierUnavailableError`.

Tiers implement ``search_many(queries, k, node, ef) -> [(iids, distances, incomplete), ...]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from . import filters
from .catalog import TIER_CODES, Catalog
from .errors import TierStoreError, TierUnavailableError
from .results import Hit, Hits, TierReport

_REFETCH_ROUNDS = 4


class SearchableTier(Protocol):
    name: str

    def search_many(
        self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None
    ) -> list[tuple[np.ndarray, np.ndarray, bool]]: ...


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
    m = qs.shape[0]
    with catalog.read() as txn:
        live = [t for t in tiers if catalog.count(TIER_CODES[t.name], txn) > 0]
    reports: dict[str, TierReport] = {t.name: TierReport(t.name, searched=False) for t in tiers}
    answers: dict[str, list[tuple[np.ndarray, np.ndarray, bool]]] = {}

    def call(t: SearchableTier) -> tuple[str, Any, float]:
        t0 = time.perf_counter()
        try:
            return t.name, t.search_many(qs, k, node, ef), time.perf_counter() - t0
        except TierStoreError as exc:
            return t.name, exc, time.perf_counter() - t0

    if node == filters.FALSE:
        live = []
    if len(live) > 1 and executor is not None:
        outcomes = list(executor.map(call, live))
    else:
        outcomes = [call(t) for t in live]
    errors: list[Exception] = []
    for name, out, secs in outcomes:
        rep = reports[name]
        rep.searched = True
        rep.latency_ms = 1000.0 * secs
        if isinstance(out, Exception):
            rep.ok, rep.error = False, f"{type(out).__name__}: {out}"
            errors.append(out)
        else:
            answers[name] = out
    if live and len(errors) == len(live):
        exc = errors[0]
        if isinstance(exc, TierUnavailableError):
            raise exc
        raise TierUnavailableError(f"no tier could answer the query: {exc}") from exc

    by_name = {t.name: t for t in live}
    results: list[Hits] = []
    hit_slots: list[list[int]] = []
    with catalog.read() as txn:
        for i in range(m):
            per_tier = {name: replace(rep, details=dict(rep.details)) for name, rep in reports.items()}
            cand_iids: list[np.ndarray] = []
            cand_dists: list[np.ndarray] = []
            cand_tier: list[np.ndarray] = []
            incomplete = False
            for name, out in answers.items():
                iids, dists, inc = out[i]
                code = TIER_CODES[name]
                rep = per_tier[name]
                rep.candidates = len(iids)
                keep = _confirmed(catalog, txn, iids, code)
                dropped = len(iids) - int(keep.sum())
                fetch = k
                rounds = 0
                # The catalog dropped some of a full page: the tier may hold more valid ones.
                while dropped and keep.sum() < k and len(iids) >= fetch and rounds < _REFETCH_ROUNDS:
                    fetch = min(4 * fetch + dropped, 10_000)
                    iids, dists, inc = by_name[name].search_many(qs[i : i + 1], fetch, node, ef)[0]
                    keep = _confirmed(catalog, txn, iids, code)
                    dropped = len(iids) - int(keep.sum())
                    rounds += 1
                rep.dropped = dropped
                rep.details["incomplete"] = bool(inc)
                incomplete |= bool(inc)
                cand_iids.append(iids[keep])
                cand_dists.append(dists[keep])
                cand_tier.append(np.full(int(keep.sum()), code, dtype=np.int8))
            slots: list[int] = []
            hits = _merge(catalog, txn, cand_iids, cand_dists, cand_tier, k, per_tier, slots)
            hit_slots.append(slots)
            hits.partial = bool(errors) or incomplete
            results.append(hits)
    return results, hit_slots


def _confirmed(catalog: Catalog, txn: Any, iids: np.ndarray, code: int) -> np.ndarray:
    return np.fromiter((catalog.entry_tier(txn, int(x)) == code for x in iids), dtype=bool, count=len(iids))


def _merge(
    catalog: Catalog,
    txn: Any,
    iids: list[np.ndarray],
    dists: list[np.ndarray],
    tier_codes: list[np.ndarray],
    k: int,
    reports: dict[str, TierReport],
    hit_slots: list[int],
) -> Hits:
    names = ("hot", "warm", "cold")
    if not iids:
        return Hits([], tiers=reports)
    all_i = np.concatenate(iids)
    all_d = np.concatenate(dists)
    all_t = np.concatenate(tier_codes)
    order = np.lexsort((all_i, all_d))[:k]  # distance, then internal id: deterministic ties
    hits = []
    for j in order:
        iid = int(all_i[j])
        e = catalog.entry(txn, iid)
        meta = catalog.metadata(txn, iid) or {}
        name = names[int(all_t[j])]
        hits.append(Hit(e.uid, float(all_d[j]), name, meta))
        reports[name].returned += 1
        hit_slots.append(e.slot)
    return Hits(hits, tiers=reports)


__all__ = ["SearchableTier", "run"]
