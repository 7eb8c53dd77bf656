"""Reopen after a clean close: what the clean-close marker saves. N hot vectors (64-d, embedded
redis-server + RediSearch) are written and the store closed cleanly; it is reopened twice, and
after each open, once Redis is verified, the full reconcile the marker let the open skip is run
by hand and timed.

    .venv/bin/python -m benchmarks.reopen_clean 50000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tierstore


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"store": {"path": str(Path(tmp) / "s"), "dim": 64}, "hot": {"capacity": n + 10},
               "cold": {"enabled": False}, "policy": {"interval": 0}}
        x = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)
        with tierstore.open(cfg) as s:
            for i in range(0, n, 10_000):
                s.upsert(list(range(i, min(n, i + 10_000))), x[i : i + 10_000], tier="hot")
        for _trial in range(2):
            t0 = time.perf_counter()
            s = tierstore.open(cfg)
            t_open = time.perf_counter() - t0
            while s.hot.standby_reason is not None:
                time.sleep(0.05)
            t_ver = time.perf_counter() - t0
            stats = dict(s.hot.stats)
            t1 = time.perf_counter()
            s.hot.reconcile()
            t_rec = time.perf_counter() - t1
            print(f"n={n}: open {t_open:.2f} s, Redis verified after {t_ver:.2f} s "
                  f"(trusted the clean close: {stats['trusted_clean_close']}, reconciles: {stats['reconciles']}); "
                  f"the full reconcile it skipped: {t_rec:.2f} s")
            s.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
