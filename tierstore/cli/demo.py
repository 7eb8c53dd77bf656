"""``tierstore demo``: an embedded store, real (or generated) data, recall and latency."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

from .. import datasets
from ..store import open as open_store
from .common import EXIT_OK, Progress, emit


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded store, real (or generated) data, recall and latency against exact ground truth."""
    wn = datasets.find_wordnet(args.data)
    if wn is not None:
        ds = datasets.load_wordnet(wn, n=args.n, queries=args.queries)
        schema = {"pos": "tag", "lexname": "tag", "nlemmas": "numeric"}
    else:
        print("wordnet-minilm not found (pass --data DIR): using generated clustered data", file=sys.stderr)
        ds = datasets.clustered(args.n or 20_000, 384, queries=args.queries or 1000)
        schema = {"cluster": "tag", "rank": "numeric"}
    n = len(ds.base)
    tmp = None if args.path else tempfile.mkdtemp(prefix="tierstore-demo-")
    path = args.path or tmp
    report: dict[str, Any] = {"dataset": ds.name, "vectors": n, "queries": len(ds.queries), "path": path}
    try:
        with open_store(path=path, dim=ds.base.shape[1], schema=schema, hot={"capacity": max(n, 100_000)}) as store:
            bar = Progress(n, "ingest")
            for s in range(0, n, 1000):
                store.upsert(list(range(s, min(s + 1000, n))), ds.base[s : s + 1000], ds.metadata[s : s + 1000])
                bar.update(min(1000, n - s))
            secs = bar.close()
            report["ingest_vectors_per_s"] = round(n / secs)
            lat, found = [], []
            for q in ds.queries:
                t0 = time.perf_counter()
                hits = store.query(q, k=10)
                lat.append(time.perf_counter() - t0)
                found.append(hits.ids())
            lat_ms = np.asarray(lat) * 1000
            report["recall@10"] = round(datasets.recall_at(found, ds.gt, 10), 4)
            report["latency_ms"] = {f"p{p}": round(float(np.percentile(lat_ms, p)), 3) for p in (50, 95, 99)}
            if ds.query_texts:
                flt = {"pos": "n"}
                hits = store.query(ds.queries[0], k=3, filter=flt)
                report["example"] = {"query": ds.query_texts[0], "filter": flt,
                                     "top3": [f"{ds.titles[h.id]} ({h.distance:.3f})" for h in hits]}
            st = store.stats()
            report["redis_used_memory"] = st["tiers"]["hot"].get("redis_used_memory_human")
            report["catalog_disk_bytes"] = st["catalog"]["disk_bytes"]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    emit(report, args.json)
    return EXIT_OK
