"""Policy planning at scale: the catalog walk vs the placement index (issue 17, "policy in
O(changes)").

A catalog of N entries (10% hot / 30% warm / 60% cold, no vectors: planning reads none) and
access counts for every slot; then, timed: what a cycle gathered before (``Catalog.placement``: one
read transaction, a Python int and bytes object per vector) and what it gathers now (a copy of the
engine's placement index), and the rest of planning on those columns (decayed counts, grace,
``place``, ``limit_moves``, ``directions``), with the transient memory of each gather.

    .venv/bin/python -m benchmarks.planning                 # N = 1,000,000
    .venv/bin/python -m benchmarks.planning --n 100000      # smoke

Prints a table and writes JSON to ``benchmarks/results/planning-<date>-n<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from tierstore.catalog import Catalog, Entry
from tierstore.engine.placement import PlacementIndex
from tierstore.policy import AccessStats
from tierstore.policy.plan import directions, limit_moves, place

REPO = Path(__file__).resolve().parents[1]


def build_catalog(path: Path, n: int, seed: int = 0) -> Catalog:
    rng = np.random.default_rng(seed)
    tier = np.where(rng.random(n) < 0.1, 0, np.where(rng.random(n) < 1 / 3, 1, 2)).astype(np.int8)
    cat = Catalog(path, dim=4, metric="l2", schema={})
    batch = 50_000
    for s in range(0, n, batch):
        with cat.write() as txn:
            slots = cat.alloc_slots(txn, min(batch, n - s))
            for j, slot in enumerate(slots):
                i = s + j
                cat.put_entry(txn, Entry(cat.iid(i), int(tier[i]), 0, slot, 0, i, 1, i))
    return cat


def timed(fn, repeat: int = 3) -> tuple[float, object, int]:
    """Best of ``repeat`` timings, then one more run under tracemalloc for the transient peak
    (tracemalloc slows Python-heavy code several-fold, so it is never timed)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, out, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cat = build_catalog(Path(tmp) / "cat", n)
        built_s = time.perf_counter() - t0
        stats = AccessStats(3600.0, size=cat.slot_limit())
        rng = np.random.default_rng(1)
        stats.record(rng.zipf(1.2, 5 * n) % n)
        stats.apply()
        idx = PlacementIndex()
        t_build, _, m_build = timed(lambda: idx.build(cat), repeat=2)
        t_walk, snap_walk, m_walk = timed(lambda: cat.placement())
        t_snap, snap, m_snap = timed(idx.snapshot)
        assert sorted(snap_walk["slot"].tolist()) == snap["slot"].tolist()
        caps = (n // 10, 3 * n // 10)

        def rest(sn: dict) -> int:
            now = time.time()
            counts, _ = stats.columns(sn["slot"], now, 0.0)
            floor, _hold = stats.grace(sn["slot"], now, 0.0)
            pin = np.full(len(sn["slot"]), -1, np.int8)
            full = place(counts, sn["tier"], pin, floor, caps[0], caps[1], 0.2)
            target = limit_moves(full, sn["tier"], counts, caps[0], caps[1], 100_000)
            return sum(len(v) for v in directions(sn["tier"], target).values())

        t_rest, moves, m_rest = timed(lambda: rest(snap))
        cat.close()
    res = {"n": n, "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
           "catalog_build_s": built_s, "index_build_s": t_build, "index_build_peak_mb": m_build / 2**20,
           "walk_s": t_walk, "walk_peak_mb": m_walk / 2**20, "snapshot_s": t_snap, "snapshot_peak_mb": m_snap / 2**20,
           "plan_rest_s": t_rest, "plan_rest_peak_mb": m_rest / 2**20, "moves_planned": moves,
           "index_bytes_per_slot": idx.nbytes() / max(1, idx.tier.shape[0])}
    print(f"Policy planning at N = {n:,} (10/30/60; best of 3; transient peaks by tracemalloc in a separate run)\n")
    print("| step | seconds | transient MiB |\n|---|---:|---:|")
    print(f"| gather: catalog walk (before) | {t_walk:.3f} | {m_walk / 2**20:.0f} |")
    print(f"| gather: placement index copy (now) | {t_snap:.4f} | {m_snap / 2**20:.0f} |")
    print(f"| index build (first cycle after open) | {t_build:.3f} | {m_build / 2**20:.0f} |")
    print(f"| counts, grace, place, limit_moves, directions | {t_rest:.3f} | {m_rest / 2**20:.0f} |")
    print(f"| **planning now (gather + plan)** | **{t_snap + t_rest:.3f}** | |")
    print(f"| planning before (gather + plan) | {t_walk + t_rest:.3f} | |")
    print(f"\nindex: {res['index_bytes_per_slot']:.1f} B per slot; {moves:,} moves planned")
    out = Path(args.out or REPO / f"benchmarks/results/planning-{res['date']}-n{n}.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
