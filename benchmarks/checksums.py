"""What checking a warm segment's checksums costs at open (``python -m benchmarks.checksums``).

Writes one segment of ``--rows`` x ``--dim`` (random unit vectors and a random graph: hashing cost
does not depend on the content), then times ``Segment.open`` without and with the check, first
from the page cache, then with the segment's files evicted (``posix_fadvise(DONTNEED)``: no root
needed), and xxh3 alone on an in-RAM buffer of the same size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import xxhash

from tierstore.tiers.warm import segment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--dir", default=None, help="where to write the segment (default: a temp dir)")
    args = ap.parse_args()
    n, dim, m = args.rows, args.dim, args.m
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((n, dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    g = {"links0": rng.integers(0, n, (n, 2 * m)).astype(np.int32), "levels": np.zeros(n, np.int8),
         "upper_off": np.zeros(n + 1, np.int64), "upper": np.zeros(0, np.int32), "vectors": vec,
         "entry": 0, "max_level": 0, "m": m, "m0": 2 * m, "ef_construction": 200}
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        d = segment.write_graph(root / "seg-00000001", np.arange(n, dtype=np.uint64), g, metric="cosine")
        size = sum(f.stat().st_size for f in d.iterdir())
        buf = np.frombuffer(vec.tobytes(), np.uint8)
        t = time.perf_counter()
        xxhash.xxh3_64_intdigest(buf)
        print(f"segment {n} x {dim}: {size / 1e6:.0f} MB; xxh3_64 in RAM: {vec.nbytes / 1e9 / (time.perf_counter() - t):.1f} GB/s")
        for label, evict in (("page cache", False), ("evicted", True)):
            best = []
            for _ in range(3):
                if evict:
                    for f in d.iterdir():
                        fd = os.open(f, os.O_RDONLY)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.close(fd)
                t = time.perf_counter()
                segment.Segment.open(d, check=True)
                best.append(time.perf_counter() - t)
            t = time.perf_counter()
            segment.Segment.open(d, check=False)
            bare = time.perf_counter() - t
            print(f"open with the check ({label}): {min(best) * 1e3:.0f}-{max(best) * 1e3:.0f} ms "
                  f"({size / 1e9 / min(best):.1f} GB/s at best); without: {bare * 1e3:.1f} ms")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
