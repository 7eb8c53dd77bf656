"""Access-statistics checkpoint cost: whole arrays (one blob, as before) vs snapshot + log.

For 1M and 10M slots under ``half_life = "auto"``: a cycle's accesses (15k, scattered over the
store: 50 queries/s x 10 results x 30 s) are recorded, then the same statistics are checkpointed
both ways into a real catalog (LMDB, fsync'd). Prints the median of 5 cycles: time and bytes.

Run::

    .venv/bin/python -m benchmarks.checkpoint
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from tierstore.catalog import Catalog
from tierstore.policy.access import AccessStats


def main() -> int:
    rng = np.random.default_rng(0)
    for n in (1_000_000, 10_000_000):
        with tempfile.TemporaryDirectory() as d:
            cat = Catalog(d + "/cat", dim=3, metric="l2", schema={})
            st = AccessStats("auto", size=n)
            st.record(rng.integers(0, n, size=n // 2), now=1.0)
            st.apply()
            st.tune(np.arange(n), cap_hot=n // 10)
            cat.save_access(*st.checkpoint())  # the first snapshot
            whole_t, log_t, log_b = [], [], []
            raw = b""
            for cyc in range(5):
                st.record(rng.integers(0, n, size=15_000), now=2.0 + cyc)
                st.apply()
                t0 = time.perf_counter()
                raw = st.dumps()
                cat.set_meta(b"whole", raw)
                cat.sync()
                whole_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                cp = st.checkpoint()
                cat.save_access(*cp)
                cat.sync()
                log_t.append(time.perf_counter() - t0)
                log_b.append(st.last_checkpoint["bytes"] + len(cp[0]))
            print(f"{n:,} slots: whole arrays {np.median(whole_t) * 1000:.0f} ms, {len(raw) / 1e6:.1f} MB; "
                  f"log {np.median(log_t) * 1000:.1f} ms, {np.median(log_b) / 1e3:.0f} KB "
                  f"(header with the shadows {len(cp[0]) / 1e3:.0f} KB; {st.last_checkpoint})", flush=True)
            cat.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
