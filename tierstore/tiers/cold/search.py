"""The cold tier's query path: partition routing, scanning, the early stop and reranking.

Queries rank the partitions of every live segment by their centroid (the footers are cached
locally), take the best-ranked over all segments until they hold the probe budget of rows
(:meth:`ColdSearch.probe_budget`: ~``nprobe * sqrt(cold rows)``), skip those whose lower bound
cannot beat the k-th best answer the other tiers already have, read the rest (:mod:`.reads`:
the block cache, else parallel ranged GETs, every block checked) and score them all in one
compiled scan (``coldkernels.cold_scan``). A query the other tiers already answered scans a share
of its budget first and stops there when nothing it saw could enter the answer (the early stop).
Format-2 segments are scanned on int8 codes; the best candidates are then reranked on their exact
vectors, read in checked pages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ... import coldkernels, distance, filters
from ...catalog import TIER_CODES, location
from ...errors import TierStoreError, TierUnavailableError
from ..protocol import TierAnswer
from . import format as fmt
from .base import Table
from .reads import ColdReads

_RERANK = 32  # format 2: candidates per query reranked on exact vectors (at least 2k)
_FILTER_ROUNDS = 3  # a filtered query probes at most this many rounds of at most a budget each (see
# _search_slice; wordnet 100k, filters of 1-10%, rounds of a whole budget: recall@10 0.94-1.0 / 0.98-1.0 /
# 0.99-1.0 at 2 / 3 / 4, for 1.8-2.0x / 2.1-2.9x / 2.1-3.8x the bytes)


def _code_error(qs: np.ndarray, metric: str) -> np.ndarray:
    """Per query: how far a format-2 code estimate can be from the exact distance, per unit of
    the row's scale. A code is ``round(v / s)`` per dimension, so ``|v - s c|`` is at most
    ``s / 2`` in each and ``|q . (v - s c)| <= s / 2 * |q|_1``; the estimate is ``1 - s q.c``
    (cosine on unit vectors, ip) or ``|v|^2 - 2 s q.c + |q|^2`` (l2: twice that). Plus float32
    rounding in the scan's sum of ``dim`` products of at most ``127 |q_j|``: at most
    ``dim * 2**-24 * 128 * |q|_1`` per unit of scale (:func:`_slack` adds that of the l2 terms)."""
    l1 = np.abs(qs.astype(np.float64)).sum(axis=1)
    rounding = qs.shape[1] * 128.0 * 2.0**-24
    return (l1 * ((1.0 if metric == "l2" else 0.5) * 1.01 + (2.0 if metric == "l2" else 1.0) * rounding)).tolist()


def _beyond_doubt(bound: float) -> float:
    """``bound`` widened by what float32 rounding can put between two tiers' distances of one
    vector: a candidate is out of the answer only past this."""
    return bound + 1e-6 + 1e-5 * abs(bound)


def _slack(est: float, bound: float, sqnorm: float) -> float:
    """The error bound of one estimate: the code's (``bound``) plus float32 rounding of the
    estimate's terms (``|v|^2`` and the sum: a few ulps of their size)."""
    return bound + 1e-6 * (abs(est) + sqnorm + 1.0)


def _matching_rows(i: int, matched: np.ndarray, counts: np.ndarray, cum: np.ndarray) -> float:
    """How many rows of query ``i``'s ranking match its filter, estimated from the share of the
    rows it scanned so far that matched."""
    return matched[i] / max(int(counts[i, 4]), 1) * float(cum[i, -1])


class ColdSearch(ColdReads):
    """The query path of :class:`~.tier.ColdTier` (``search_many``) over its reads (``fetch``)."""

    refresh_error: TierStoreError | None = None  # read-only: the last refresh failed (set by refresh)

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None, *,
                    nprobe: int | None = None, bounds: Sequence[float] | None = None) -> list[TierAnswer]:
        """Per query: the best ``k`` (ids, distances, locations, details), best first.
        ``bounds[i]``: the k-th best distance the other tiers found for query i (partitions that
        cannot beat it are skipped). A batch is searched in slices whose partitions fit half the
        cache's mapping budget (each cached partition a query holds is a mapped file, one
        descriptor: a 300-query batch over 60 small segments ran out of them)."""
        tab = self.table() if self.connected and len(qs) > 1 else None
        if tab is not None and len(tab.radii):
            per_query = min(len(tab.radii), self.probe_budget(nprobe, tab) * len(tab.radii) / max(tab.total_rows, 1) + 2)
            step = max(1, int(self.cache.max_mapped // 2 // per_query))
            if len(qs) > step:
                out: list[TierAnswer] = []
                for a in range(0, len(qs), step):
                    out += self._search_slice(qs[a : a + step], k, node, nprobe,
                                              None if bounds is None else bounds[a : a + step])
                return out
        return self._search_slice(qs, k, node, nprobe, bounds)

    def _search_slice(self, qs: np.ndarray, k: int, node: filters.Node, nprobe: int | None,
                      bounds: Sequence[float] | None) -> list[TierAnswer]:
        if self.read_only:
            if self.refresh_error is not None:
                raise TierUnavailableError(f"cold tier: could not follow the writer's segments: "
                                           f"{self.refresh_error}", tier="cold")
            if not self.connected and self.catalog.cold_segments():
                self.connect()  # TierUnavailableError: a partial answer, never a silently empty one
        tab = self.table() if self.connected else None
        m = len(qs)
        if tab is None:
            return [TierAnswer([], [], False, [], {"partitions": 0, "probed": 0, "skipped": 0, "gets": 0,
                                                   "bytes": 0, "cache_hits": 0, "fetched": 0, "rows": 0,
                                                   "budget_rows": 0, "pruned_all": False, "stopped_early": False})
                    for _ in range(m)]
        qs = distance.prepare(self.metric, qs)
        rank, lb = self.bounds(qs, tab)
        total = len(tab.radii)
        budget = self.probe_budget(nprobe, tab)
        order = np.argsort(rank, axis=1, kind="stable")
        meta_skipped = 0
        if node != filters.TRUE:  # partitions whose metadata summary rules the filter out: never read
            ok = tab.may_match(node)
            meta_skipped = int(total - ok.sum())
            if meta_skipped:
                order = order[ok[order]].reshape(m, -1)
        cum = np.cumsum(tab.rows[order], axis=1)
        total = order.shape[1]
        at = np.zeros(m, np.int64)  # per query: how far down its ranking it has probed
        probed = np.zeros(m, np.int64)
        skipped = np.zeros(m, np.int64)
        found: list[list[tuple]] = [[] for _ in range(m)]  # see the append below
        # GETs, bytes, cache hits, partitions fetched, rows scanned, rerank GETs, rerank bytes, rows reranked,
        # candidates not reranked (provably out of the answer)
        counts = np.zeros((m, 9), np.int64)
        matched = np.zeros(m, np.int64)  # filtered: rows scanned that match the filter
        rounds = np.zeros(m, np.int64)
        step = np.full(m, float(budget))  # rows the next round of each query takes
        # The early stop: a query the faster tiers already answered (a finite bound) first scans a
        # share of its budget, and goes on only if something there could enter the answer
        looking = np.zeros(m, bool)
        stopped = np.zeros(m, bool)
        share = self.cfg.early_stop
        if bounds is not None and 0 < share < 1 and math.isfinite(budget):  # (nprobe >= partitions: all)
            for i in range(m):
                if math.isfinite(bounds[i]):
                    looking[i] = True
                    step[i] = share * budget
        look = step.copy()
        # format 2 scans int8 codes: keep more candidates than k, reranked on the exact vectors
        cap = max(1, k) if all(seg.footer.format < 2 for seg in tab.segs) else max(k, _RERANK, 2 * k)
        err_per_scale = _code_error(qs, self.metric)
        seg_at, part_at = tab.lists()
        active = list(range(m))
        while active:
            # Global selection: each query takes its best-ranked partitions over ALL segments until
            # they hold ``budget`` rows (rows, not partitions: small segments have small partitions)
            take: list[np.ndarray] = []  # per active query: table indices of its partitions
            for i in active:
                a = int(at[i])
                reach = int(cum[i, a - 1]) if a else 0
                end = min(total, int(np.searchsorted(cum[i], reach + step[i], side="left")) + 1)
                chunk = order[i, a:end]
                at[i] = end
                if bounds is not None and math.isfinite(bounds[i]):
                    keep = chunk[lb[i, chunk] <= bounds[i]]
                    skipped[i] += len(chunk) - len(keep)
                else:
                    keep = chunk
                take.append(keep)
                probed[i] += len(keep)
            # the partitions of all queries of the batch, each fetched (or found in the cache) once
            uniq = np.unique(np.concatenate(take)) if take else np.zeros(0, np.int64)
            at_idx = uniq.tolist()
            segs = [seg_at[j] for j in at_idx]
            parts = [part_at[j] for j in at_idx]
            blocks, got_in, run_bytes = self._blocks(list(zip(segs, parts, strict=True)))
            blks = [blocks[(seg.sid, p)] for seg, p in zip(segs, parts, strict=True)]
            masks = []  # kept alive for the scan (it reads them by address)
            mask_at = np.zeros(len(blks), np.intp)
            nmatch = np.zeros(len(blks), np.int64)
            if node != filters.TRUE:
                for b, blk in enumerate(blks):
                    ok = blk.mask(node, self.schema, self.catalog.metadata_of).view(np.uint8)  # (no copy)
                    masks.append(ok)
                    mask_at[b] = ok.ctypes.data if len(ok) else 0
                    nmatch[b] = np.count_nonzero(ok)
            vec_at = np.array([blk.scan[0] for blk in blks], np.intp)
            sqn_at = np.array([blk.scan[1] for blk in blks], np.intp)
            scale_at = np.array([blk.scan[2] for blk in blks], np.intp)
            nrows = np.array([len(blk.iids) for blk in blks], np.int64)
            run_of = np.array([got_in.get((seg.sid, p), -1) for seg, p in zip(segs, parts, strict=True)], np.int64)
            run_bytes_a = np.asarray(run_bytes, np.int64)
            slots = [np.searchsorted(uniq, t) for t in take]  # each query's blocks, as indices into blks
            qptr = np.zeros(len(active) + 1, np.int64)
            qptr[1:] = np.cumsum([len(x) for x in slots])
            for n_, i in enumerate(active):
                r = run_of[slots[n_]]
                runs = np.unique(r[r >= 0])
                c = counts[i]
                c[0] += len(runs)
                c[1] += int(run_bytes_a[runs].sum()) if len(runs) else 0
                c[2] += int((r < 0).sum())
                c[3] += int((r >= 0).sum())
                c[4] += int(nrows[slots[n_]].sum())
                matched[i] += int(nmatch[slots[n_]].sum())
                rounds[i] += 1
            items = np.concatenate(slots).astype(np.int64) if slots else np.zeros(0, np.int64)
            if len(items):
                dist, bl, rw = coldkernels.cold_scan(qs[active], distance.code(self.metric), qptr, items,
                                                 vec_at, sqn_at, scale_at, mask_at, nrows, cap)
            nxt: list[int] = []  # the queries that probe another round
            deciding: list[int] = []  # the queries at the end of their early look
            for n_, i in enumerate(active):
                if len(items):
                    ok = bl[n_] >= 0
                    for d, b, r in zip(dist[n_, ok].tolist(), bl[n_, ok].tolist(), rw[n_, ok].tolist(), strict=True):
                        seg, blk = segs[b], blks[b]
                        row = int(seg.footer.row_starts[parts[b]]) + r
                        # (distance or its estimate, iid, location, estimate?, segment, object row, |v|^2,
                        #  the most the estimate can be off by)
                        est = blk.vectors is None
                        found[i].append((d, int(blk.iids[r]), location(seg.sid, row), est,
                                         seg, row, float(blk.sqnorms[r]),
                                         _slack(d, float(blk.scales[r]) * err_per_scale[i],
                                                float(blk.sqnorms[r])) if est else 0.0))
                if looking[i]:
                    looking[i] = False
                    if self._rest_of_budget(i, at, cum, total, budget, step):
                        rounds[i] -= 1  # (the look and the rest of its budget: one round of a filtered query)
                        # Decide now, unless the look saw too little to stop on: the partitions'
                        # bounds ruled out most of it, or (filtered) it scanned fewer matching rows
                        # than its share of those the query would scan in all
                        if counts[i, 4] >= look[i] / 2 and (node == filters.TRUE or matched[i] >= share * self.matching_budget(
                                nprobe, _matching_rows(i, matched, counts, cum))):
                            deciding.append(i)
                        else:
                            nxt.append(i)
                        continue
                if self._another_round(i, node, k, nprobe, found, matched, counts, rounds, at, cum, total, budget, step):
                    nxt.append(i)
            if deciding:  # (the rest of their budget is in step[i])
                self.tally("early_looks", len(deciding))
                for i, more in zip(deciding, self._may_improve(qs, deciding, found, counts, cap, bounds), strict=True):
                    if more:
                        nxt.append(i)
                    else:
                        stopped[i] = True
                        self.tally("early_stops", 1)
            active = nxt
        total += meta_skipped
        tops = [sorted(f, key=lambda t: t[0])[:cap] for f in found]
        self._rerank(qs, tops, counts, k, bounds)
        out = []
        for i in range(m):
            best = sorted(tops[i], key=lambda t: (t[0], t[2]))[:k]
            c = counts[i]
            out.append(TierAnswer([b[1] for b in best], [b[0] for b in best], False, [b[2] for b in best],
                        {"partitions": total, "probed": int(probed[i]), "skipped": int(skipped[i]),
                         "gets": int(c[0] + c[5]), "bytes": int(c[1] + c[6]), "cache_hits": int(c[2]),
                         "fetched": int(c[3]), "rows": int(c[4]), "budget_rows": int(min(budget, tab.total_rows)),
                         "reranked": int(c[7]), "rerank_skipped": int(c[8]), "rerank_gets": int(c[5]),
                         "rerank_bytes": int(c[6]),
                         "meta_skipped": meta_skipped, "stopped_early": bool(stopped[i]),
                         "pruned_all": bool(skipped[i]) and not probed[i]}))
        return out

    def _may_improve(self, qs: np.ndarray, which: list[int], found: list[list[tuple]], counts: np.ndarray,
                     cap: int, bounds: Sequence[float]) -> list[bool]:
        """The early stop's decision, per query in ``which``: whether a row its look scanned is
        closer than ``bounds[i]`` (the k-th best the faster tiers found), on exact distances: an
        int8 estimate's error bound is wider than the gap between neighbours (tested on
        estimates, a query whose top 10 were all hot went on 93 times in 100). So a query with a
        row surely closer goes on at once; one whose rows are all surely farther stops; the rest
        have the candidates in between reranked (``found[i]`` becomes its reranked candidates:
        the rerank's reads are kept for the answer) and decide on those.

        Only rows the catalog still places in cold count: a vector promoted out of cold leaves
        its row behind until a compaction, at the very distance of its copy in hot, and would
        make every query it answers from hot go on. (A fresh catalog snapshot, not the query's:
        this is only the decision to probe further; the answer is confirmed by the query's.)"""
        lims = [_beyond_doubt(bounds[i]) for i in which]
        out = [False] * len(which)
        unsure = []  # positions in which
        with self.catalog.read(buffers=True) as txn:
            def placed(c: list[tuple]) -> bool:
                return bool(c) and bool(self.catalog.confirm(txn, TIER_CODES["cold"], [t[1] for t in c],
                                                             [t[0] for t in c], [t[2] for t in c]))

            for j, (i, lim) in enumerate(zip(which, lims, strict=True)):
                if placed([t for t in found[i] if t[0] + t[7] <= lim]):
                    out[j] = True
                elif any(t[0] - t[7] <= lim for t in found[i]):
                    unsure.append(j)
            if unsure:
                sub_q = [which[j] for j in unsure]
                tops = [sorted(found[i], key=lambda t: t[0])[:cap] for i in sub_q]
                sub = counts[sub_q]
                # (k = cap + 1: pruned by the bound alone -- the look's own k-th may be rows the
                # catalog no longer places here)
                self._rerank(qs[sub_q], tops, sub, cap + 1, [bounds[i] for i in sub_q])
                counts[sub_q] = sub
                for j, i, top in zip(unsure, sub_q, tops, strict=True):
                    found[i] = top
                    out[j] = placed([t for t in top if t[0] <= lims[j]])
        return out

    @staticmethod
    def _rest_of_budget(i: int, at: np.ndarray, cum: np.ndarray, total: int, budget: float, step: np.ndarray) -> bool:
        """After the early look: whether any of the budget is left (then its size is in ``step[i]``)."""
        reach = float(cum[i, at[i] - 1]) if at[i] else 0.0
        if at[i] < total and reach < budget:
            step[i] = budget - reach
            return True
        return False

    def _another_round(self, i: int, node: filters.Node, k: int, nprobe: int | None, found: list[list[tuple]],
                       matched: np.ndarray, counts: np.ndarray, rounds: np.ndarray, at: np.ndarray,
                       cum: np.ndarray, total: int, budget: float, step: np.ndarray) -> bool:
        """Whether filtered query ``i`` probes another round after a budget (its size in ``step[i]``).

        A selective filter can leave fewer than k matches in the budget's partitions: keep
        probing (in rank order, another budget's worth) until k match or none are left. And the
        answer is only as good as the matching rows scanned: keep probing (up to _FILTER_ROUNDS
        rounds in all) until they are what an unfiltered query scans of a cold tier that held
        only them (the budget of nprobe for M rows, M estimated from the share that matched so
        far) -- a 1% filter scanning one budget saw ~1% of it, and its recall@10 fell to 0.88
        where the unfiltered query's was 0.97. (A round after the first takes the rows its
        shortfall needs at the match rate seen so far, at most a budget: a filter matching half
        the rows needs a fraction of one more, not a whole one.)"""
        if node == filters.TRUE or at[i] >= total:
            return False
        rate = matched[i] / max(int(counts[i, 4]), 1)
        short = self.matching_budget(nprobe, _matching_rows(i, matched, counts, cum)) - matched[i]
        if matched[i] < k:  # (found[i] may hold fewer: an early look drops what cannot enter)
            step[i] = budget
            return True
        if rounds[i] < _FILTER_ROUNDS and short > 0:
            step[i] = min(float(budget), short / max(rate, 1e-9))
            return True
        return False

    def _rerank(self, qs: np.ndarray, tops: list[list[tuple]], counts: np.ndarray, k: int,
                bounds: Sequence[float] | None) -> None:
        """Replace the code estimates among each query's candidates (format 2) by exact distances
        on the stored vectors, read in pages (one parallel round of coalesced GETs for the batch).

        A candidate that provably cannot be in the answer is dropped unread: its estimate minus
        its error bound (``t[7]``) is above the k-th smallest estimate-plus-bound of the
        candidates (k of them are at least that good) or above ``bounds[i]``, the k-th best
        distance the other tiers found. Behind a hot tier that answers a query, that is most of
        them: their pages are never fetched."""
        for i, top in enumerate(tops):
            if not any(t[3] for t in top):
                continue
            upper = sorted(t[0] + t[7] for t in top)
            lim = upper[k - 1] if len(upper) >= k else math.inf
            if bounds is not None and bounds[i] < lim:
                lim = bounds[i]
            if math.isinf(lim):
                continue
            lim = _beyond_doubt(lim)  # (the other tiers' distances are float32 too)
            keep = [t for t in top if t[0] - t[7] <= lim]
            counts[i, 8] += len(top) - len(keep)
            tops[i] = keep
        want = {(t[4].sid, t[5]): (t[4], t[5]) for top in tops for t in top if t[3]}
        if not want:
            return
        vecs, got_in, run_bytes = self._exact(list(want.values()))
        vec_of = dict(zip(want, vecs, strict=True))
        for i, top in enumerate(tops):
            est = [t for t in top if t[3]]
            if not est:
                continue
            v = np.stack([vec_of[(t[4].sid, t[5])] for t in est])
            # stored vectors are not normalised: cosine divides by their norms (t[6] = |v|^2)
            d = distance.exact_prepared(self.metric, v, qs[i], np.array([t[6] for t in est], np.float32))
            tops[i] = [t for t in top if not t[3]] + [
                (dd, t[1], t[2], False, t[4], t[5], t[6], 0.0) for dd, t in zip(d.tolist(), est, strict=True)]
            runs = {r for r in (got_in.get((t[4].sid, t[5] // t[4].footer.page_rows)) for t in est) if r is not None}
            counts[i, 5] += len(runs)
            counts[i, 6] += sum(run_bytes[r] for r in runs)
            counts[i, 7] += len(est)

    def probe_budget(self, nprobe: int | None, tab: Table) -> float:
        """Rows a query scans: ``nprobe`` (per query, else ``cold.nprobe``) partitions of the size a
        single segment of every cold row would have (k-means into ~sqrt(rows) partitions), i.e.
        about ``nprobe * sqrt(cold rows)`` -- the same for one segment or a hundred small ones.
        ``nprobe`` >= the live partitions: everything."""
        n = int(tab.total_rows)
        want = nprobe or self.cfg.nprobe
        if want >= len(tab.radii) or n == 0:
            return math.inf
        return want * n / fmt.default_parts(n)

    def matching_budget(self, nprobe: int | None, rows: float) -> float:
        """Matching rows a filtered query scans when about ``rows`` rows match: what
        :meth:`probe_budget` gives a cold tier of that many rows (all of them, up to ~nprobe^2)."""
        n = max(int(rows), 1)
        want = nprobe or self.cfg.nprobe
        return float(n) if want >= fmt.default_parts(n) else want * n / fmt.default_parts(n)

    def bounds(self, qs: np.ndarray, tab: Table) -> tuple[np.ndarray, np.ndarray]:
        # cosine: float32 products of unit vectors, their rounding counted into the bound (see
        # rank_and_bound). l2 and ip keep float64: |q|^2 + |c|^2 - 2 q.c of large norms in float32
        # would leave the *ranking* noise (rows offset by 80 with a spread of 0.01: 6% of the top 20 kept)
        if self.metric == "cosine":
            return fmt.rank_and_bound(qs, tab.centroids, tab.csq, tab.radii, self.metric)
        return fmt.rank_and_bound(qs.astype(np.float64), tab.centroids64(), tab.csq, tab.radii, self.metric)


__all__ = ["ColdSearch"]
