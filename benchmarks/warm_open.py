"""Warm tier open with N sealed rows: the alive masks a clean close saved vs one catalog read per
sealed row (what every open did before; a crash still does). No servers (the in-memory hot tier),
16-d vectors: what is measured does not depend on the dimension.

    .venv/bin/python -m benchmarks.warm_open 300000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tierstore.catalog import Catalog
from tierstore.config import load_config
from tierstore.testing import memory_store
from tierstore.tiers.warm import WarmTier

DIM = 16


def build(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with memory_store(root, dim=DIM, hot={"capacity": 20_000}, warm={"capacity": 10 * n},
                      policy={"interval": 0}) as store:
        for a in range(0, n, 50_000):
            b = min(n, a + 50_000)
            store.upsert(list(range(a, b)), rng.standard_normal((b - a, DIM)).astype(np.float32), tier="warm")
        store.flush()  # sealed
        store.move(list(range(0, 10_000)), "hot")  # dead sealed rows


def open_warm(root: Path, saved: bool) -> tuple[float, int]:
    cfg = load_config(env={}, dim=DIM, path=str(root / "store"), cold={"enabled": False})
    cat = Catalog(root / "store" / "catalog", dim=DIM, metric="cosine", schema={})
    orig = WarmTier._saved_alive
    if not saved:  # as every open did before (and a crash still does)
        WarmTier._saved_alive = lambda self: {}
    try:
        t0 = time.perf_counter()
        warm = WarmTier(root / "store" / "warm", cat, cfg.warm, {}, "cosine", lambda: True)
        dt = time.perf_counter() - t0
    finally:
        WarmTier._saved_alive = orig
    alive = sum(int(sd.alive.sum()) for sd in warm.sealed.values())
    warm.close()
    cat.close()
    return dt, alive


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    root = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    build(root, n)
    print(f"built {n:,} warm rows in {time.perf_counter() - t0:.0f} s")
    for _round in range(2):
        for saved in (False, True):
            dt, alive = open_warm(root, saved)
            print(f"open, {'saved masks' if saved else 'per-row reads'}: {dt:.3f} s ({alive:,} alive sealed rows)")


if __name__ == "__main__":
    main()
