"""The cold tier's reads: partitions and pages of exact vectors, from the block cache or S3.

Blocks (one partition each) and pages (format 2: exact vectors, 8 rows each) are looked up in the
local block cache first; the rest is fetched with parallel ranged GETs, adjacent ones coalesced,
each checked against its checksum (:class:`~tierstore.errors.IntegrityError` on a mismatch), then
staged in RAM for the cache's writer thread. :meth:`ColdReads.fetch` returns stored vectors;
the query path (:mod:`.search`) scans blocks and reranks on pages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from ...catalog import Entry
from ...errors import IntegrityError
from . import format as fmt
from .base import ColdBase, Seg
from .blockcache import PAGE_GROUP, BlockCache

log = logging.getLogger("tierstore")

_COALESCE_GAP = 1  # unwanted partitions one GET may read through to save a request
_MAX_RUN = 4 * 1024**2
_PAGE_GAP = 2  # unwanted pages of exact vectors one rerank GET may read through
_MAX_PENDING_CACHE = 256 * 1024**2  # fetched bytes staged in RAM for the disk cache, at most
_PAGES_AT_ONCE = 512  # pages of exact vectors one read holds (each cached one: a descriptor) ...
_PARTS_AT_ONCE = 256  # ... partitions fetch() holds at once; both at most a share of the cache's max_mapped


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


class ColdReads(ColdBase):
    """Reads of :class:`~.tier.ColdTier`: blocks and pages through the cache, stored vectors."""

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


__all__ = ["ColdReads"]
