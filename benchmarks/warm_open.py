"""Warm tier open with N sealed rows: the alive masks a clean close saved vs one catalog read per
sealed row (what every open did before; a crash still does). No servers (the in-memory hot tier),
16-d vectors: what is measured does not depend on the dimension.

    .venv/bin/python -m benchmarks.warm_open 300000
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tierstore.catalog import Catalog
from tierstore.config import load_config
from tierstore.testing import memory_store
from tierstore.tiers.warm import WarmTier

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
dim = 16
tmp = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
t0 = time.perf_counter()
with memory_store(tmp, dim=dim, hot={"capacity": 20_000}, warm={"capacity": 10 * n}, policy={"interval": 0}) as s:
    for a in range(0, n, 50_000):
        s.upsert(list(range(a, min(n, a + 50_000))), rng.standard_normal((min(n, a + 50_000) - a, dim)).astype(np.float32), tier="warm")
    s.flush()
    s.move(list(range(0, 10_000)), "hot")
print(f"built {n} warm rows in {time.perf_counter() - t0:.0f} s")
cfg = load_config(env={}, dim=dim, path=str(tmp / "store"), cold={"enabled": False})
def open_warm(saved: bool) -> float:
    cat = Catalog(tmp / "store" / "catalog", dim=dim, metric="cosine", schema={})
    orig = WarmTier._saved_alive
    if not saved:
        WarmTier._saved_alive = lambda self: {}
    t = time.perf_counter()
    w = WarmTier(tmp / "store" / "warm", cat, cfg.warm, {}, "cosine", lambda: True)
    dt = time.perf_counter() - t
    WarmTier._saved_alive = orig
    alive = sum(int(sd.alive.sum()) for sd in w.sealed.values())
    w.close(); cat.close()
    return dt, alive
for rnd in range(2):
    for saved in (False, True):
        dt, alive = open_warm(saved)
        print(f"open, {'saved masks' if saved else 'per-row reads'}: {dt:.3f} s ({alive} alive sealed rows)")
