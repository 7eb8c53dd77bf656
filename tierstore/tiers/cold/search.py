"""The cold tier's query path: partition routing, fetching, scanning and reranking.

Queries rank the partitions of every live segment by their centroid (the footers are cached
locally), take the best-ranked over all segments until they hold the probe budget of rows
(:meth:`ColdSearch.probe_budget`: ~``nprobe * sqrt(cold rows)``), skip those whose lower bound
cannot beat the k-th best answer the other tiers already have, fetch the rest with parallel ranged
GETs through an LRU block cache on local disk, verify each block's checksum, and score them all in
one compiled scan (``coldkernels.cold_scan``). Format-2 segments are scanned on int8 codes; the best
candidates are then reranked on their exact vectors, read in checked pages (:meth:`ColdSearch.fetch`
reads stored vectors the same way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np

from ... import coldkernels, distance, filters
from ...catalog import Entry, location
from ...errors import IntegrityError, TierStoreError, TierUnavailableError
from ..protocol import TierAnswer
from . import format as fmt
from .base import ColdBase, Seg, Table
from .blockcache import PAGE_GROUP, BlockCache

log = logging.getLogger("tierstore")

_COALESCE_GAP = 1  # unwanted partitions one GET may read through to save a request
_MAX_RUN = 4 * 1024**2
_RERANK = 32  # format 2: candidates per query reranked on exact vectors (at least 2k)
_FILTER_ROUNDS = 3  # a filtered query probes at most this many rounds of at most a budget each (see
# _search_slice; wordnet 100k, filters of 1-10%, rounds of a whole budget: recall@10 0.94-1.0 / 0.98-1.0 /
# 0.99-1.0 at 2 / 3 / 4, for 1.8-2.0x / 2.1-2.9x / 2.1-3.8x the bytes)
_PAGE_GAP = 2  # unwanted pages of exact vectors one rerank GET may read through
_MAX_PENDING_CACHE = 256 * 1024**2  # fetched bytes staged in RAM for the disk cache, at most
_PAGES_AT_ONCE = 512  # pages of exact vectors one read holds (each cached one: a descriptor) ...
_PARTS_AT_ONCE = 256  # ... partitions fetch() holds at once; both at most a share of the cache's max_mapped


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


def _slack(est: float, bound: float, sqnorm: float) -> float:
    """The error bound of one estimate: the code's (``bound``) plus float32 rounding of the
    estimate's terms (``|v|^2`` and the sum: a few ulps of their size)."""
    return bound + 1e-6 * (abs(est) + sqnorm + 1.0)


def _slices(keys: list[tuple[int, int]], limit: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` runs of the sorted ``keys``, each holding at most ``limit`` distinct keys
    (a key's repeats stay in one run): what a bulk read maps at once, bounded."""
    at = 0
    while at < len(keys):
        end, distinct = at + 1, 1
        while end < len(keys) and (keys[end] == keys[end - 1] or distinct < limit):
            distinct += keys[end] != keys[end - 1]
            end += 1
        yield at, end
        at = end


class ColdSearch(ColdBase):
    """The query path of :class:`~.tier.ColdTier` (``search_many``, ``fetch``) and its block cache."""

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
                                                   "budget_rows": 0, "pruned_all": False}) for _ in range(m)]
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
            nxt = []
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
                # A selective filter can leave fewer than k matches in the budget's partitions:
                # keep probing (in rank order, another budget's worth) until k match or none are left.
                # And the answer is only as good as the matching rows scanned: keep probing (up to
                # _FILTER_ROUNDS rounds in all) until they are what an unfiltered query scans of
                # a cold tier that held only them (the budget of nprobe for M rows, M estimated
                # from the share that matched so far) -- a 1% filter scanning one budget saw ~1% of
                # it, and its recall@10 fell to 0.88 where the unfiltered query's was 0.97.
                # (A round after the first takes the rows its shortfall needs at the match rate
                # seen so far, at most a budget: a filter matching half the rows needs a fraction
                # of one more, not a whole one.)
                if node != filters.TRUE and at[i] < total:
                    rate = matched[i] / max(int(counts[i, 4]), 1)
                    short = self.matching_budget(nprobe, rate * float(cum[i, -1])) - matched[i]
                    if len(found[i]) < k:
                        step[i] = budget
                        nxt.append(i)
                    elif rounds[i] < _FILTER_ROUNDS and short > 0:
                        step[i] = min(float(budget), short / max(rate, 1e-9))
                        nxt.append(i)
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
                         "meta_skipped": meta_skipped,
                         "pruned_all": bool(skipped[i]) and not probed[i]}))
        return out

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
            lim += 1e-6 + 1e-5 * abs(lim)  # (the other tiers' distances are float32 too)
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

    def fetch(self, entries: Sequence[Entry]) -> dict[int, np.ndarray]:
        """The stored vectors of cold ``entries`` (internal id -> float32 vector)."""
        with self._lock:
            segs = dict(self.segs)
        where = []
        for e in entries:
            seg = segs.get(e.seg)
            if seg is None:
                raise IntegrityError(f"cold segment {e.seg} named by the catalog for {e.uid!r} is not live")
            p = int(np.searchsorted(seg.footer.row_starts, e.pos, side="right")) - 1
            where.append((e, seg, p))
        where.sort(key=lambda w: (w[1].sid, w[2]))
        out = {}
        exact = []  # format 2: the vectors live in pages, the block only says whose row it is
        limit = max(8, min(_PARTS_AT_ONCE, self.cache.max_mapped // 8))
        for at, end in _slices([(seg.sid, p) for _e, seg, p in where], limit):
            blocks, _, _ = self._blocks(list({(seg.sid, p): (seg, p) for _e, seg, p in where[at:end]}.values()))
            for e, seg, p in where[at:end]:
                blk = blocks[(seg.sid, p)]
                r = e.pos - int(seg.footer.row_starts[p])
                if int(blk.iids[r]) != e.iid:
                    raise IntegrityError(f"cold segment {seg.info['key']}: row {e.pos} holds another id than the catalog says")
                if blk.vectors is None:
                    exact.append((e, seg))
                else:
                    out[e.iid] = np.array(blk.vectors[r], np.float32)
            del blocks
        if exact:
            vecs, _, _ = self._exact([(seg, int(e.pos)) for e, seg in exact])
            for (e, _), v in zip(exact, vecs, strict=True):
                out[e.iid] = v  # (already a copy)
        return out

    def _blocks(self, wanted: list[tuple[Seg, int]]) -> tuple[dict[tuple[int, int], fmt.Block],
                                                                 dict[tuple[int, int], int], list[int]]:
        """Fetch partitions: cache first, then parallel ranged GETs, coalesced -> (blocks, the GET
        each block came in (absent: from the cache), bytes of each GET)."""
        out: dict[tuple[int, int], fmt.Block] = {}
        misses: dict[int, tuple[Seg, list[int]]] = {}
        name = BlockCache.name
        mapped = self.cache.get_mapped([name(seg.sid, p) for seg, p in wanted])
        for (seg, p), blk in zip(wanted, mapped, strict=True):
            k = (seg.sid, p)
            if blk is not None:
                out[k] = blk
                continue
            if k in out or p in misses.get(seg.sid, (None, ()))[1]:
                continue

            def load(raw: memoryview, seg: Seg = seg, p: int = p) -> fmt.Block:
                fmt.verify_block(raw, seg.footer, p, f"cached block of {seg.info['key']}")
                return self._decode(seg, p, raw)

            blk = self.cache.get(name(seg.sid, p), load)
            if blk is None:
                misses.setdefault(seg.sid, (seg, []))[1].append(p)
            else:
                out[k] = blk
        self.tally("cache_hits", len(out))
        self.tally("cache_misses", sum(len(parts) for _, parts in misses.values()))
        runs = [r for seg, parts in misses.values() for r in self._runs(seg, sorted(parts))]
        got_in: dict[tuple[int, int], int] = {}
        run_bytes: list[int] = []
        for i, (run, fetched) in enumerate(zip(runs, self._io.map(lambda r: self._fetch_run(*r), runs), strict=True)):
            seg = run[0]
            for p, raw in fetched.items():
                out[(seg.sid, p)] = self._decode(seg, p, raw)
                got_in[(seg.sid, p)] = i
            run_bytes.append(int(seg.footer.offsets[run[2] + 1] - seg.footer.offsets[run[1]]))
        self.tally("gets", len(runs))
        return out, got_in, run_bytes

    @staticmethod
    def _runs(seg: Seg, parts: list[int]) -> list[tuple[Seg, int, int, list[int]]]:
        """Group wanted partitions (sorted) into ranged reads: neighbours closer than
        ``_COALESCE_GAP`` partitions share one GET (on S3 a request costs more than a few hundred
        KiB more of transfer; partitions are laid out so that similar ones are adjacent)."""
        runs: list[tuple[Seg, int, int, list[int]]] = []
        off = seg.footer.offsets
        for p in parts:
            if runs and p - runs[-1][2] - 1 <= _COALESCE_GAP and off[p + 1] - off[runs[-1][1]] <= _MAX_RUN:
                first, _, members = runs[-1][1:]
                runs[-1] = (seg, first, p, [*members, p])
            else:
                runs.append((seg, p, p, [p]))
        return runs

    def _fetch_run(self, seg: Seg, first: int, last: int, wanted: list[int]) -> dict[int, memoryview]:
        f = seg.footer
        base = int(f.offsets[first])
        raw = memoryview(self.get_range(seg.info["key"], base, int(f.offsets[last + 1])))
        self.tally("get_bytes", len(raw))
        out = {}
        for p in range(first, last + 1):
            blk = raw[int(f.offsets[p]) - base : int(f.offsets[p + 1]) - base]  # zero-copy slices
            if p in wanted:
                fmt.verify_block(blk, f, p, f"cold segment {seg.info['key']}")
                out[p] = blk
            # gap fillers are cached too (a free prefetch), unverified: every cached block is
            # verified when it is first loaded from the cache
            self._cache_later(BlockCache.name(seg.sid, p), blk)
        return out

    def _cache_later(self, name: str, data: memoryview) -> None:
        """Stage a fetched block in the cache (readable at once) and queue its write to disk off
        the query path (measured: writing the blocks inline cost a cache-cold query more than the
        GETs themselves). Not staged while more than ``_MAX_PENDING_CACHE`` bytes wait."""
        if not self.cache.stage(name, data, _MAX_PENDING_CACHE):
            return

        def write() -> None:
            self.lower_writer_priority()
            try:
                self.cache.write_staged(name)
            except OSError as exc:
                log.warning("cold cache: could not write %s: %s", name, exc)

        self._writer.submit(write)

    def _decode(self, seg: Seg, p: int, raw: bytes) -> fmt.Block:
        return fmt.Block(raw, int(seg.footer.counts[p]), self.dim, seg.footer.dtype, seg.footer.format)

    def _pages(self, wanted: list[tuple[Seg, int]]) -> tuple[dict[tuple[int, int], np.ndarray],
                                                               dict[tuple[int, int], int], list[int]]:
        """Pages of exact vectors (format 2) for the rerank: cache first, then coalesced ranged
        GETs in parallel -> (float32 arrays, the GET each page came in, bytes of each GET)."""
        out: dict[tuple[int, int], np.ndarray] = {}
        misses: dict[int, tuple[Seg, set[int]]] = {}
        groups: dict[tuple[int, int], list[np.ndarray] | None] = {}
        for seg, g in wanted:
            if (seg.sid, g) in out:
                continue
            key = (seg.sid, g // PAGE_GROUP)
            if key not in groups:  # a written-through group of pages: one file, one mapping
                groups[key] = self.cache.get(BlockCache.group_name(*key), lambda raw, seg=seg, k=key[1]:
                                             self._load_group(raw, seg, k))
            if groups[key] is not None:
                out[(seg.sid, g)] = groups[key][g % PAGE_GROUP]
                continue

            def load(raw: memoryview, seg: Seg = seg, g: int = g) -> np.ndarray:
                fmt.verify_page(raw, seg.footer, g, f"cached page of {seg.info['key']}")
                return fmt.decode_page(raw, seg.footer)

            v = self.cache.get(BlockCache.page_name(seg.sid, g), load)
            if v is None:
                misses.setdefault(seg.sid, (seg, set()))[1].add(g)
            else:
                out[(seg.sid, g)] = v
        runs: list[tuple[Seg, int, int, list[int]]] = []
        for seg, gs in misses.values():
            for g in sorted(gs):
                a, b = seg.footer.page_range(g)
                if (runs and runs[-1][0] is seg and g - runs[-1][2] - 1 <= _PAGE_GAP
                        and b - seg.footer.page_range(runs[-1][1])[0] <= _MAX_RUN):
                    runs[-1] = (seg, runs[-1][1], g, [*runs[-1][3], g])
                else:
                    runs.append((seg, g, g, [g]))
        got_in: dict[tuple[int, int], int] = {}
        run_bytes: list[int] = []
        for i, (run, fetched) in enumerate(zip(runs, self._io.map(lambda r: self._fetch_pages(*r), runs), strict=True)):
            seg = run[0]
            for g, v in fetched.items():
                out[(seg.sid, g)] = v
                got_in[(seg.sid, g)] = i
            run_bytes.append(seg.footer.page_range(run[2])[1] - seg.footer.page_range(run[1])[0])
        self.tally("gets", len(runs))
        self.tally("rerank_gets", len(runs))
        return out, got_in, run_bytes

    @staticmethod
    def _load_group(raw: memoryview, seg: Seg, k: int) -> list[np.ndarray]:
        """The pages of group ``k`` (a cached file of ``PAGE_GROUP`` pages), each verified."""
        f = seg.footer
        first, end = k * PAGE_GROUP, min((k + 1) * PAGE_GROUP, f.pages)
        base = f.page_range(first)[0]
        if first >= end or len(raw) != f.page_range(end - 1)[1] - base:
            raise IntegrityError(f"cached pages of {seg.info['key']}: group {k} has the wrong size")
        pages = []
        for g in range(first, end):
            a, b = f.page_range(g)
            page = raw[a - base : b - base]
            fmt.verify_page(page, f, g, f"cached pages of {seg.info['key']}")
            pages.append(fmt.decode_page(page, f))
        return pages

    def _fetch_pages(self, seg: Seg, first: int, last: int, wanted: list[int]) -> dict[int, np.ndarray]:
        f = seg.footer
        base = f.page_range(first)[0]
        raw = memoryview(self.get_range(seg.info["key"], base, f.page_range(last)[1]))
        self.tally("get_bytes", len(raw))
        out = {}
        for g in range(first, last + 1):
            a, b = f.page_range(g)
            page = raw[a - base : b - base]
            if g in wanted:
                fmt.verify_page(page, f, g, f"cold segment {seg.info['key']}")
                out[g] = fmt.decode_page(page, f)
            self._cache_later(BlockCache.page_name(seg.sid, g), page)
        return out

    def _exact(self, want: list[tuple[Seg, int]]) -> tuple[list[np.ndarray], dict[tuple[int, int], int], list[int]]:
        """Exact float32 vectors (copies) of format-2 rows ``(segment, object row)`` -> (vectors,
        the GET each page came in, bytes per GET). Pages are read ``_PAGES_AT_ONCE`` at a time
        and let go: a cached page is a mapped file holding a descriptor, and a large move or
        batch would otherwise hold thousands at once (a 1M run ran out of descriptors)."""
        keys = [(seg.sid, r // seg.footer.page_rows) for seg, r in want]
        limit = max(8, min(_PAGES_AT_ONCE, self.cache.max_mapped // 4))
        order = sorted(range(len(want)), key=lambda i: keys[i])
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(want)
        got_in: dict[tuple[int, int], int] = {}
        run_bytes: list[int] = []
        for at, end in _slices([keys[i] for i in order], limit):
            chunk = order[at:end]
            pages, got, nbytes = self._pages([(want[i][0], keys[i][1]) for i in chunk])
            for i in chunk:
                seg, r = want[i]
                out[i] = np.array(pages[keys[i]][r % seg.footer.page_rows], np.float32)
            got_in.update({key: g + len(run_bytes) for key, g in got.items()})
            run_bytes += nbytes
            del pages
        return out, got_in, run_bytes

    def drop_cache(self) -> None:
        """Empty the local block cache (benchmarks: measure cache-cold queries)."""
        self.settle()
        self.cache.clear()


__all__ = ["ColdSearch"]
