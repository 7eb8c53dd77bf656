"""Commands that read a store: ``query``, ``stats``, ``export`` and ``serve-metrics``; each runs
beside a writer with ``--read-only``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from .common import EXIT_OK, Progress, UsageError, emit, open_existing


def cmd_query(args: argparse.Namespace) -> int:
    flt = json.loads(args.filter) if args.filter else None
    with open_existing(args, reads_only=True) as store:
        if args.like is not None:
            like: Any = args.like
            rec = store.get([like])[0]
            if rec is None and like.lstrip("-").isdigit():
                rec = store.get([int(like)])[0]
            if rec is None:
                raise UsageError(f"--like {like}: no such id in the store")
            vector = rec.vector
        elif args.vector is not None:
            vector = np.asarray(json.loads(args.vector), dtype=np.float32)
        else:
            raise UsageError("give --vector '[...]' or --like ID")
        hits = store.query(vector, k=args.k, filter=flt, ef=args.ef, nprobe=args.nprobe, strict=args.strict)
    out = {"partial": hits.partial,
           "hits": [{"id": h.id, "distance": h.distance, "tier": h.tier, "metadata": h.metadata} for h in hits],
           "tiers": {n: r.to_dict() for n, r in hits.tiers.items()}}
    if args.json:
        emit(out, True)
    else:
        for i, h in enumerate(hits, 1):
            print(f"{i:3d}. {h.id!s:<24} {h.distance:.6f}  {h.tier:<5} {json.dumps(h.metadata)}")
        if hits.partial:
            print("(partial: a tier failed or timed out; see --json for details)")
        standby = (out["tiers"].get("hot") or {}).get("details", {}).get("standby")
        if standby:
            print(f"(hot tier answered from the catalog by an exact scan: {standby})")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with open_existing(args, reads_only=True) as store:
        emit(store.stats(), args.json)
    return EXIT_OK


def cmd_serve_metrics(args: argparse.Namespace) -> int:
    """Open the store (no policy thread) and serve its Prometheus metrics until Ctrl-C / SIGTERM."""
    import signal

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    metrics: dict[str, Any] = {}
    if args.port is not None:
        metrics["port"] = args.port
    if args.addr is not None:
        metrics["addr"] = args.addr
    with open_existing(args, reads_only=True, metrics=metrics) as store:
        if store.metrics.port is None:  # neither --port nor metrics.port: the default port
            store.metrics.serve(9464, store.config.metrics.addr)
        info = {"store": store.metrics.name, "url": store.metrics.url}
        signal.signal(signal.SIGTERM, stop)
        try:  # (entered before the line is printed: a Ctrl-C right after it lands here)
            print(json.dumps(info) if args.json else f"serving metrics of {info['store']} on {info['url']} "
                  "(Ctrl-C to stop)", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


EXPORTS = {".jsonl": io.write_jsonl, ".npz": io.write_npz, ".parquet": io.write_parquet, ".pq": io.write_parquet}


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    write = EXPORTS.get(out.suffix)
    if write is None:
        raise UsageError(f"{out}: export writes .jsonl (one record per line), .npz or .parquet (all re-ingestable)")
    if write is io.write_parquet:
        io.pyarrow()  # a missing pyarrow says which extra installs it, before the store opens
    with open_existing(args, reads_only=True) as store:
        bar = Progress(None, f"export {out.name}")
        try:
            n = write(store, out, tiers=args.tier, progress=bar.callback)
        finally:
            secs = bar.close()
    emit({"exported": n, "file": str(out), "seconds": round(secs, 2)}, args.json)
    return EXIT_OK
