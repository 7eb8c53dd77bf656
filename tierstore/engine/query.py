"""The unified query: fan out to the tiers, keep what the catalog confirms, merge the top k.

Each tier's index may lag the catalog for a moment (a write between the LMDB commit and the
index update, a move in flight, a delete not yet removed from Redis). So every candidate is
kept only if the catalog *currently* places it in the tier that returned it; that makes a moving
vector appear exactly once and a deleted one never. When the check drops candidates from a full
page, that tier is asked again for a larger page, so ``k`` results are still returned.

A tier that fails is reported in ``Hits.tiers[name]`` (``ok=False``) and the answer is flagged
``partial``; when every searched tier fails the query raises :class:`TierUnavailableError`.

Tiers implement ``search_many(queries, k, node, ef, **kw) -> [TierAnswer, ...]``, one per query
(plain lists inside: per-query work here is a few dozen items, where numpy's per-call cost
dominates). Segment tiers add each row's location (:func:`catalog.location`), which the catalog
confirms (:meth:`Catalog.confirm`), and the cold tier a dict of details (partitions
probed/skipped, GETs, bytes, cache hits).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from .. import distance, filters
from .. import tiers as tier_registry
from ..catalog import TEXT_KEY, TIER_CODES, TIER_NAMES, Catalog
from ..errors import TierStoreError, TierUnavailableError
from ..results import Hit, Hits, TierReport
from ..tiers.protocol import TierAnswer

_REFETCH_ROUNDS = 4


class SearchableTier(Protocol):
    name: str

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]: ...


class RepeatCache:
    """Lets a query asked again skip the warm and cold tiers when they cannot change its answer.

    After a full search, the cache keeps, per query (vector, k, filter, ef, nprobe, tiers), the
    best distance any lower tier offered, the bound the cold tier was pruned with (a skipped
    partition holds nothing at or below it), and the catalog's *lower generation*: the last
    write that placed or changed anything in warm or cold (``Catalog.lower_generation``). While
    that generation stands, the lower tiers can only have lost vectors, so they cannot offer
    anything better. The hot tier is still searched every time; when its k-th confirmed distance
    is below the best lower offer and not above the pruning bound, the lower tiers are skipped
    and the answer is the one a full search would give (up to the lower tiers' own approximate
    search). Otherwise the query simply goes on to the others.

    Writes into warm or cold (the policy's demotions, every cycle) move the lower generation on.
    The writers of this process say what they added (:meth:`note`: the generations before and
    after, and the vectors), so an entry from an older generation is brought forward by its
    distance to those vectors instead of being dropped -- as long as the chain of noted writes
    reaches back to it. Anything not noted (a seal, a compaction, a write by another process)
    breaks the chain and the entries older than it are simply searched in full again.

    Skewed workloads repeat their popular queries, and the policy puts their answers in Redis:
    those are the queries this turns into one Redis round trip.

    >>> c = RepeatCache(2, "cosine")
    >>> q = np.array([1.0, 0.0], np.float32)
    >>> c.put(b"q1", 7, 0.4, 0.3); c.get(b"q1", 7, q), c.get(b"q1", 8, q)
    ((0.4, 0.3), None)
    >>> c.note(7, 9, np.array([[0.0, 1.0]], np.float32))  # one vector added to warm, at distance 1
    >>> c.get(b"q1", 9, q)
    (0.4, 0.3)
    >>> c.can_skip((0.4, 0.3), 0.3), c.can_skip((0.4, 0.3), 0.35)
    (True, False)
    """

    LOG_BYTES = 16 << 20  # vectors kept for bringing entries forward

    def __init__(self, size: int, metric: str = "cosine") -> None:
        from collections import OrderedDict

        self.size, self.metric = size, metric
        self._d: OrderedDict[bytes, tuple[int, float, float]] = OrderedDict()
        self._log: OrderedDict[int, tuple[int, np.ndarray]] = OrderedDict()  # new gen -> (previous gen, vectors)
        self._log_bytes = 0
        self._lock = threading.Lock()
        self.skips = 0  # queries answered from hot alone
        self.misses = 0  # looked up but absent, outdated, or hot was not enough
        self.carried = 0  # entries brought forward over noted writes

    def note(self, prev_gen: int, new_gen: int, vectors: np.ndarray) -> None:
        """A write that moved the lower generation from ``prev_gen`` to ``new_gen`` added (at
        most) ``vectors`` to warm/cold. Call after its commit."""
        if new_gen == prev_gen or not len(vectors):
            return
        v = np.array(vectors, np.float32, copy=True)
        with self._lock:
            self._log[new_gen] = (prev_gen, v)
            self._log_bytes += v.nbytes
            while self._log_bytes > self.LOG_BYTES and self._log:
                self._log_bytes -= self._log.popitem(last=False)[1][1].nbytes

    def _added(self, since: int, now: int) -> list[np.ndarray] | None:
        parts = []
        g = now
        while g != since:
            link = self._log.get(g)
            if link is None or g < since:
                return None  # a write nobody noted (or one evicted): not provable
            parts.append(link[1])
            g = link[0]
        return parts

    def _distances(self, vs: np.ndarray, q: np.ndarray) -> np.ndarray:
        # The tiers' own distances: cosine 1 - cos, ip 1 - dot, l2 squared.
        return distance.exact(self.metric, vs, q)

    def get(self, key: bytes, lower_gen: int, q: np.ndarray) -> tuple[float, float] | None:
        """(best lower-tier distance, cold pruning bound) for ``key`` as of ``lower_gen``."""
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                return None
            gen, best, pruned = hit
            if gen != lower_gen:
                parts = self._added(gen, lower_gen)
                if parts is None:
                    return None  # the full search that follows replaces the entry
                d = float(min(self._distances(p, q).min() for p in parts))
                # float32 distances differ by rounding between numpy, Redis and the kernels:
                # count an added vector as a little closer than computed.
                best = min(best, d - 1e-4 * (1.0 + abs(d)))
                self._d[key] = (lower_gen, best, pruned)
                self.carried += 1
            self._d.move_to_end(key)
            return best, pruned

    @staticmethod
    def can_skip(remembered: tuple[float, float], kth_hot: float) -> bool:
        # Strictly below the best lower offer (a tie could go to the lower vector by id), and
        # not above the bound (pruned partitions hold only vectors strictly beyond it).
        best, pruned = remembered
        return kth_hot < best and kth_hot <= pruned

    def put(self, key: bytes, lower_gen: int, best: float, pruned: float) -> None:
        with self._lock:
            self._d[key] = (lower_gen, best, pruned)
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def count(self, skip: bool) -> None:
        """A lookup's outcome (query threads call it: under the lock, no increment is lost)."""
        with self._lock:
            if skip:
                self.skips += 1
            else:
                self.misses += 1

    def __len__(self) -> int:
        return len(self._d)


class StaleView(Exception):  # noqa: N818 -- internal control flow, never leaves the store
    """A read-only process's view of the tiers is older than the catalog snapshot a query just
    took (a move, seal or compaction committed since the view was refreshed): refresh, retry."""


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
    nprobe: int | None = None,
    executor: Executor | None = None,
    strict: bool = False,
    repeat: RepeatCache | None = None,
    repeat_key: bytes | None = None,
    move_gen: int | None = None,
) -> tuple[list[Hits], list[list[int]]]:
    """Search ``qs`` (m, dim) on ``tiers``; returns one Hits per query and, per query, the policy
    slots of its hits in rank order (for access statistics).

    Hot and warm are searched in parallel; the cold tier goes last, given each query's k-th best
    confirmed distance so far, so it can skip partitions (or all of S3) that cannot improve the
    answer. ``strict``: a failing tier raises instead of flagging the answer ``partial``.
    ``repeat`` + ``repeat_key`` (single queries): skip warm and cold when they cannot change
    the answer of a query seen before (see :class:`RepeatCache`). ``move_gen`` (read-only
    processes): the catalog's move generation the tiers' view was refreshed at; a snapshot with
    another raises :class:`StaleView` before anything is searched."""
    if node == filters.FALSE:
        return [Hits([], tiers={t.name: TierReport(t.name, searched=False) for t in tiers}) for _ in qs], [
            [] for _ in qs]
    # The catalog snapshot is taken *before* the tiers are searched, and every move or
    # replacement removes a vector from its old place only after the queries that began before
    # its catalog flip have finished (the store's reader gate). So whatever version the snapshot
    # names is still findable where it names it: each live vector is returned exactly once.
    # Zero-copy reads: raw entries are used only inside this transaction.
    m = qs.shape[0]
    with catalog.read(buffers=True) as txn:
        if move_gen is not None and catalog.move_generation(txn) != move_gen:
            raise StaleView()
        if len(tiers) == 1:
            live = list(tiers)
        else:
            live = [t for t in tiers if catalog.count(TIER_CODES[t.name], txn) > 0]  # skip empty tiers
        # the tier searched last, with the bound of what the faster ones found (cold), and the
        # first tier, the one the repeat skip asks alone (hot): read from the tier registry
        cold = next((t for t in live if tier_registry.BY_NAME[t.name].searched_last), None)
        first = [t for t in live if t is not cold]
        reports = [{t.name: TierReport(t.name, searched=False) for t in tiers} for _ in range(m)]
        cands: list[list[tuple[float, int, int, Any]]] = [[] for _ in range(m)]
        incomplete = [False] * m
        outcomes = []
        hot = next((t for t in live if t.name == tier_registry.ORDER[0].name), None)
        lower_gen = -1
        if repeat is not None and m == 1 and hot is not None and len(live) > 1:
            lower_gen = catalog.lower_generation(txn)
            remembered = repeat.get(repeat_key, lower_gen, qs[0])
            if remembered is not None:
                out = _call(hot, qs, k, node, ef, {})
                outcomes.append(out)
                _confirm(catalog, txn, out, qs, k, node, ef, reports, cands, incomplete)
                c = sorted(cands[0])
                if not isinstance(out[1], Exception) and not incomplete[0] and len(c) >= k and repeat.can_skip(remembered, c[k - 1][0]):
                    repeat.count(skip=True)
                    for t in live:
                        if t is not hot:
                            reports[0][t.name].details["skipped"] = "repeat: cannot beat hot"
                    return _merge(catalog, reports, cands, incomplete, False, k)
                first = [t for t in first if t is not hot]  # hot's answer is kept; search the others
            repeat.count(skip=False)
        if len(first) > 1 and executor is not None:
            outcomes += list(executor.map(lambda t: _call(t, qs, k, node, ef, {}), first))
        else:
            outcomes += [_call(t, qs, k, node, ef, {}) for t in first]
        for out in outcomes[len(outcomes) - len(first):]:
            _confirm(catalog, txn, out, qs, k, node, ef, reports, cands, incomplete)
        bounds = [math.inf] * m
        if cold is not None:
            for i, c in enumerate(cands):  # the k-th best confirmed distance so far (inf: fewer than k)
                c.sort()
                bounds[i] = c[k - 1][0] if len(c) >= k else math.inf
            out = _call(cold, qs, k, node, ef, {"nprobe": nprobe, "bounds": bounds})
            outcomes.append(out)
            _confirm(catalog, txn, out, qs, k, node, ef, reports, cands, incomplete)
        errors = [out for _t, out, _s, _kw in outcomes if isinstance(out, Exception)]
        if lower_gen >= 0 and not errors and not incomplete[0]:
            # What the lower tiers can offer this query: their best confirmed candidate, and the
            # bound cold was pruned with (a pruned partition holds nothing at or below it).
            best = min((d for d, _iid, code, _raw in cands[0] if code != tier_registry.ORDER[0].code), default=math.inf)
            repeat.put(repeat_key, lower_gen, best, bounds[0])
        if len(tiers) == 1 and errors and catalog.count(TIER_CODES[tiers[0].name], txn) == 0:
            errors, reports = [], [{tiers[0].name: TierReport(tiers[0].name, searched=False)} for _ in range(m)]
        if errors and (strict or len(errors) == len(outcomes)):
            exc = errors[0]
            if isinstance(exc, TierStoreError):
                raise exc
            raise TierUnavailableError(f"no tier could answer the query: {exc}") from exc
        if strict:  # part of a tier failed (a Redis Cluster master): strict raises that too
            failed = next((r for rs in reports for r in rs.values() if r.details.get("shard_errors")), None)
            if failed is not None:
                raise TierUnavailableError(f"{failed.tier} tier: part of it did not answer: "
                                           f"{failed.details['shard_errors']}", tier=failed.tier)
        return _merge(catalog, reports, cands, incomplete, bool(errors), k)


def _call(t: SearchableTier, qs: np.ndarray, k: int, node: filters.Node, ef: int | None,
          kw: dict[str, Any]) -> tuple[Any, Any, float, dict[str, Any]]:
    t0 = time.perf_counter()
    try:
        return t, t.search_many(qs, k, node, ef, **kw), time.perf_counter() - t0, kw
    except TierStoreError as exc:
        return t, exc, time.perf_counter() - t0, kw


def _confirm(catalog: Catalog, txn: Any, outcome: tuple, qs: np.ndarray, k: int, node: filters.Node,
             ef: int | None, reports: list[dict[str, TierReport]], cands: list[list], incomplete: list[bool]) -> None:
    """Fold one tier's answer into every query's candidates and reports."""
    t, out, secs, kw = outcome
    for i in range(qs.shape[0]):
        rep = reports[i][t.name]
        rep.searched, rep.latency_ms = True, 1000.0 * secs
        if isinstance(out, Exception):
            rep.ok, rep.error = False, f"{type(out).__name__}: {out}"
            continue
        one_kw = {**kw, "bounds": [kw["bounds"][i]]} if kw.get("bounds") is not None else kw
        answer = TierAnswer.of(out[i])
        kept, n_cand, dropped, inc = _confirmed_page(catalog, txn, t, qs[i : i + 1], answer, k, node, ef, one_kw)
        rep.candidates, rep.dropped = n_cand, dropped
        rep.details["incomplete"] = inc
        if answer.details:
            rep.details.update(answer.details)
        incomplete[i] |= inc
        cands[i] += kept


def _merge(catalog: Catalog, reports: list[dict[str, TierReport]], cands: list[list], incomplete: list[bool],
           failed: bool, k: int) -> tuple[list[Hits], list[list[int]]]:
    results: list[Hits] = []
    hit_slots: list[list[int]] = []
    decode, make_hit = catalog.decode_hit, Hit._make
    for i, c in enumerate(cands):
        c.sort()  # distance, then internal id: deterministic ties
        hits, slots = [], []
        for dist, _iid, code, raw in c[:k]:
            uid, slot, meta = decode(raw)
            name = TIER_NAMES[code]
            hit = make_hit((uid, dist, name, meta))  # (the tuple constructor: the query path's fast way)
            if TEXT_KEY in meta:
                hit.text = meta.pop(TEXT_KEY)
            hits.append(hit)
            reports[i][name].returned += 1
            slots.append(slot)
        results.append(Hits(hits, partial=failed or incomplete[i], tiers=reports[i]))
        hit_slots.append(slots)
    return results, hit_slots


def _confirmed_page(
    catalog: Catalog, txn: Any, tier: SearchableTier, q: np.ndarray, answer: TierAnswer, k: int,
    node: filters.Node, ef: int | None, kw: dict[str, Any],
) -> tuple[list[tuple[float, int, int, Any]], int, int, bool]:
    """Keep the candidates the catalog places in ``tier``; if that dropped some of a full page,
    ask the tier again for a larger one. -> (kept, candidates seen, dropped, incomplete)."""
    code = TIER_CODES[tier.name]
    fetch = k
    for rounds in range(_REFETCH_ROUNDS + 1):
        iids = answer.iids
        # same tier and, for segment tiers, the very row the catalog names (not an old version)
        kept = catalog.confirm(txn, code, iids, answer.dists, answer.locations)
        if node != filters.TRUE and answer.locations is None:
            # A tier without row locations (hot) is checked by tier only, and its copy is written
            # before the catalog flip: a candidate whose indexed fields are a version ahead of (or
            # behind) the catalog's may not match. The catalog's metadata is the answer's.
            decode = catalog.decode_hit
            kept = [c for c in kept if filters.matches(node, decode(c[3])[2])]
        dropped = len(iids) - len(kept)
        if not dropped or len(kept) >= k or len(iids) < fetch or rounds == _REFETCH_ROUNDS:
            return kept, len(iids), dropped, answer.incomplete
        fetch = min(4 * fetch + dropped, 10_000)
        try:
            answer = TierAnswer.of(tier.search_many(q, fetch, node, ef, **kw)[0])
        except TierStoreError:  # the tier failed on the larger page: keep what the first one gave
            return kept, len(iids), dropped, True
    raise AssertionError("unreachable")


__all__ = ["ReaderGate", "RepeatCache", "SearchableTier", "StaleView", "TierAnswer", "run"]
