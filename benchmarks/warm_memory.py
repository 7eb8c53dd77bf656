"""Warm tier RAM: what a growing-segment row costs, what a seal and a merge add while they run,
and what searching several sealed segments instead of one costs at equal recall.

1. Growing segment: anonymous memory (``RssAnon``) per row after 100k rows of 384-d with one tag
   of metadata each went into a :class:`~tierstore.tiers.warm.growing.Growing` in batches of 10k
   (hnswlib's own copy of the vector, its links and lock, plus the segment's bookkeeping).
2. Seal / merge: the peak anonymous memory (sampled every 5 ms) above the state before, while
   the growing segment is exported into a segment directory, and while two sealed segments of
   50k rows are merged into one (``WarmTier.merge``'s build: a new hnswlib graph, then the export).
3. ``--segments``: 150k clustered 384-d rows as 1 segment of 150k, 3 of 50k and 6 of 25k; for
   each, recall@10 and p50 per query (one search per segment, top k merged) at several ef.

Run::

    .venv/bin/python -m benchmarks.warm_memory              # parts 1-2, ~2 min
    .venv/bin/python -m benchmarks.warm_memory --segments   # + part 3, ~5 min more
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tierstore import datasets
from tierstore.config import WarmConfig
from tierstore.tiers.warm import segment
from tierstore.tiers.warm.growing import Growing

from .cold import rss_mib as anon_mib

DIM = 384


class Peak:
    """The highest RssAnon while the block runs, above the value at its start."""

    def __enter__(self) -> Peak:
        self.start, self.peak, self._stop = anon_mib(), 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, anon_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, anon_mib()) - self.start


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def growing_and_seal(tmp: Path) -> None:
    n = 100_000
    x = unit(n, 0)
    g = Growing(DIM, "cosine", WarmConfig())
    before = anon_mib()
    for s in range(0, n, 10_000):
        g.add(list(range(s, s + 10_000)), list(range(10**6 + s, 10**6 + s + 10_000)), x[s : s + 10_000],
              [{"tag": f"c{i % 100}"} for i in range(s, s + 10_000)])
    per_row = (anon_mib() - before) * 2**20 / n
    print(f"growing segment: {per_row:,.0f} B of anonymous memory per row ({n:,} rows, {DIM}-d, one tag)")
    with Peak() as p, segment.exported(g.index, DIM, tmp) as graph:
        segment.write_graph(tmp / "seg-sealed", np.arange(n, dtype=np.uint64)[graph["labels"]], graph,
                            metric="cosine")
        del graph
    print(f"seal of {n:,} rows (export + segment write): peak +{p.peak:,.0f} MiB above the growing segment")


def merge(tmp: Path) -> None:
    from tierstore.testing import memory_store

    x = unit(100_000, 1)
    with memory_store(tmp, dim=DIM, warm={"growing_size": 50_000}, policy={"interval": 0}) as store:
        store._engine.maintenance.stop()  # the merge below is run (and measured) by hand
        for s in range(0, 100_000, 10_000):
            store.upsert(list(range(s, s + 10_000)), x[s : s + 10_000], tier="warm")
        warm = store.warm
        victims = warm.merge_candidates()
        assert [v.seg.n for v in victims] == [50_000, 50_000], [v.seg.n for v in victims]
        with Peak() as p:
            t0 = time.perf_counter()
            moved = warm.merge(victims, store._engine.write_lock)
            secs = time.perf_counter() - t0
        assert moved == 100_000
    print(f"merge of 2 x 50,000 sealed rows into one segment (WarmTier.merge: build on one thread, export, "
          f"flip): {secs:.0f} s, peak +{p.peak:,.0f} MiB of anonymous memory")


def segments() -> None:
    n = 150_000
    ds = datasets.clustered(n, DIM, queries=300, seed=1)
    x = ds.base / np.linalg.norm(ds.base, axis=1, keepdims=True)
    qs = ds.queries / np.linalg.norm(ds.queries, axis=1, keepdims=True)
    gt = ds.gt[:, :10]
    with tempfile.TemporaryDirectory() as d:
        for parts, efs in ((1, (64, 128, 192)), (3, (32, 48, 64)), (6, (24, 32, 64))):
            size = n // parts
            segs = [segment.Segment.open(segment.write_segment(
                os.path.join(d, f"s{parts}-{p}"), np.arange(p * size, (p + 1) * size, dtype=np.uint64),
                x[p * size : (p + 1) * size], metric="cosine", threads=os.cpu_count() or 1)) for p in range(parts)]
            for ef in efs:
                for _ in range(2):  # the second pass is measured (pages warm)
                    lat, rec = [], []
                    for i, q in enumerate(qs):
                        t = time.perf_counter()
                        cand = []
                        for s in segs:
                            r, dd = s.search(q, 10, ef)
                            cand += [(float(a), int(s.iids[b])) for b, a in zip(r, dd, strict=True)]
                        cand.sort()
                        lat.append(time.perf_counter() - t)
                        rec.append(len({c[1] for c in cand[:10]} & set(gt[i].tolist())) / 10)
                print(f"{parts} segment(s) of {size:,}, ef {ef}: recall@10 {np.mean(rec):.3f}, "
                      f"p50 {np.median(lat) * 1e3:.3f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.warm_memory", description=__doc__.split("\n")[0])
    ap.add_argument("--segments", action="store_true", help="also part 3: one segment vs several at equal recall")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as d:
        growing_and_seal(Path(d))
    with tempfile.TemporaryDirectory() as d:
        merge(Path(d))
    if args.segments:
        segments()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
