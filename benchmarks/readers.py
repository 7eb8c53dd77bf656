"""Several processes, one store: query throughput with 1, 2 and 4 read-only processes.

One writer process opens a store on wordnet-minilm (first ``--n`` rows; hot 10% / warm 30% / cold
the rest, on a private redis-server + RediSearch and SeaweedFS S3), then N reader processes open the
same path with ``read_only=True`` and query for ``--seconds`` each: the real queries of the
dataset, uniformly, k = 10, one thread per process. Per N: aggregate queries/s, p50/p99 latency
and recall@10, (a) with the writer idle and (b) while the writer ingests new vectors (readers
follow the catalog without reopening). A single in-process thread on the writer's own store is
the baseline. This machine has 2 cores shared by the readers, Redis and the S3 server, so the
scaling it shows is the CPU ceiling, not tierstore's.

Run::

    .venv/bin/python -m benchmarks.readers                 # 50k rows, ~4 min
    .venv/bin/python -m benchmarks.readers --n 10000 --seconds 3   # smoke, ~1 min

Writes ``benchmarks/results/readers-<date>.json`` and replaces the "## Several processes (issue 7)"
section of ``benchmarks/RESULTS.md`` (``--results-md ''`` skips that).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import REPO, command, log, publish, servers

K = 10
SECTION = "## Several processes (issue 7): query throughput with read-only processes"


def config(path: Path, redis_url: str, endpoint: str, n: int) -> dict[str, Any]:
    return {"path": str(path), "dim": 384, "env": {}, "schema": {"lexname": "tag"},
            "hot": {"redis_url": redis_url, "capacity": n // 10},
            # warm's budget has room for the vectors the writer adds during the runs (placed by
            # tier=, the policy is off)
            "warm": {"capacity": n, "segment_size": max(10_000, n)},
            "cold": {"url": "s3://tierstore/readers", "endpoint_url": endpoint, "segment_size": max(10_000, n)},
            "policy": {"interval": 0}}


def reader(cfg: dict[str, Any], queries: np.ndarray, gt: np.ndarray, seconds: float, seed: int,
           start: Any, out: Any) -> None:
    """One read-only process: open, wait for the start signal, query until the time is up."""
    import tierstore

    store = tierstore.open(**cfg, read_only=True)
    rng = np.random.default_rng(seed)
    store.query(queries[0], k=K)  # open-time work (views, caches) is not measured
    start.wait()
    lat, hits = [], 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        i = int(rng.integers(len(queries)))
        t = time.perf_counter()
        ids = store.query(queries[i], k=K).ids()
        lat.append(time.perf_counter() - t)
        hits += len(set(ids) & set(gt[i, :K].tolist()))
    store.close()
    out.put({"queries": len(lat), "lat": lat, "hits": hits})


def run_readers(cfg: dict[str, Any], ds: Any, n_readers: int, seconds: float, writer: Any, ingest: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # never fork an open store
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=reader, args=(cfg, ds.queries, ds.gt, seconds, s, start, out)) for s in range(n_readers)]
    for p in procs:
        p.start()
    time.sleep(3.0 + n_readers)  # let every reader open and warm up
    start.set()
    t0 = time.perf_counter()
    added = 0
    if ingest:  # new random vectors while the readers query (far from the queries: ground truth holds)
        rng = np.random.default_rng(n_readers)
        while time.perf_counter() - t0 < seconds:
            new = rng.standard_normal((500, ds.base.shape[1])).astype(np.float32)
            writer.upsert([f"new-{added + i}" for i in range(500)], new, tier="warm")
            added += 500
            time.sleep(0.2)
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = np.concatenate([np.asarray(r["lat"]) for r in results]) * 1000
    q = sum(r["queries"] for r in results)
    res = {"readers": n_readers, "writer_ingesting": ingest, "queries": q, "qps": q / seconds,
           "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
           "recall@10": sum(r["hits"] for r in results) / (K * q), "ingested_meanwhile": added}
    log(f"  {n_readers} reader(s){' + ingest' if ingest else ''}: {res['qps']:.0f} q/s, p50 {res['p50_ms']:.2f} ms, "
        f"p99 {res['p99_ms']:.1f} ms, recall {res['recall@10']:.3f}")
    return res


def run(args: argparse.Namespace, cmd: str) -> dict[str, Any]:
    import tierstore
    from tierstore import datasets

    path = datasets.find_wordnet(args.data)
    if path is None:
        raise SystemExit("wordnet-minilm not found: pass --data DIR")
    ds = datasets.load_wordnet(path, n=args.n, queries=300)
    n = len(ds.base)
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "command": cmd,
                           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                           "params": {"n": n, "seconds": args.seconds, "k": K, "queries": len(ds.queries)}, "runs": []}
    with servers("readers") as (tmp, redis_url, s3):
        cfg = config(tmp / "store", redis_url, s3.endpoint_url, n)
        writer = tierstore.open(**cfg)
        try:
            metas = [{"lexname": m["lexname"]} for m in ds.metadata]
            for tier, lo, hi in (("hot", 0, n // 10), ("warm", n // 10, 4 * n // 10), ("cold", 4 * n // 10, n)):
                for s in range(lo, hi, 10_000):
                    e = min(hi, s + 10_000)
                    writer.upsert(list(range(s, e)), ds.base[s:e], metas[s:e], tier=tier)
            writer.flush()
            writer.compact()
            log(f"store: {writer.stats()['tiers']['hot']['count']} hot / {writer.stats()['tiers']['warm']['count']} warm / "
                f"{writer.stats()['tiers']['cold']['count']} cold")
            # the baseline: one thread in the writer process
            rng = np.random.default_rng(0)
            writer.query(ds.queries[0], k=K)
            lat, hits = [], 0
            stop = time.perf_counter() + args.seconds
            while time.perf_counter() < stop:
                i = int(rng.integers(len(ds.queries)))
                t = time.perf_counter()
                ids = writer.query(ds.queries[i], k=K).ids()
                lat.append(time.perf_counter() - t)
                hits += len(set(ids) & set(ds.gt[i, :K].tolist()))
            a = np.asarray(lat) * 1000
            res["baseline"] = {"queries": len(lat), "qps": len(lat) / args.seconds, "p50_ms": float(np.percentile(a, 50)),
                               "p99_ms": float(np.percentile(a, 99)), "recall@10": hits / (K * len(lat))}
            log(f"  writer, 1 thread: {res['baseline']['qps']:.0f} q/s, p50 {res['baseline']['p50_ms']:.2f} ms")
            for ingest in (False, True):
                for n_readers in (1, 2, 4):
                    res["runs"].append(run_readers(cfg, ds, n_readers, args.seconds, writer, ingest))
            res["writer_stats"] = {"vectors": len(writer), "from_readers": writer.stats()["access"].get("from_readers")}
        finally:
            writer.close()
    return res


def render(res: dict[str, Any]) -> str:
    p, b = res["params"], res["baseline"]
    out = [SECTION, "", f"Command: `{res['command']}` ({res['date']}); {res['machine']['cpu_count']} CPUs shared by "
           "the readers, the writer, redis-server + RediSearch and SeaweedFS.", "",
           f"wordnet-minilm, {p['n']} rows (hot 10% / warm 30% / cold 60%, cold compacted), {p['queries']} real queries "
           f"drawn uniformly, k = {K}, {p['seconds']:g} s per run, one query thread per reader process. The writer "
           "either idles or ingests 500 new vectors every 0.2 s into warm, which the readers follow without reopening.", "",
           "| processes querying | writer | queries/s (all readers) | vs 1 thread in the writer | p50 ms | p99 ms | recall@10 |",
           "|---|---|---:|---:|---:|---:|---:|",
           f"| 1 thread in the writer process | idle | {b['qps']:,.0f} | 1.00 | {b['p50_ms']:.2f} | {b['p99_ms']:.1f} | "
           f"{b['recall@10']:.3f} |"]
    for r in res["runs"]:
        writer = f"ingesting ({r['ingested_meanwhile']:,} added)" if r["writer_ingesting"] else "idle"
        out.append(f"| {r['readers']} read-only process{'es' if r['readers'] > 1 else ''} | {writer} | {r['qps']:,.0f} | "
                   f"{r['qps'] / b['qps']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | {r['recall@10']:.3f} |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.readers", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="wordnet rows")
    ap.add_argument("--seconds", type=float, default=8.0, help="per run")
    ap.add_argument("--data", help="wordnet-minilm directory")
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    args = ap.parse_args(argv)
    res = run(args, command("benchmarks.readers", argv))
    publish(res, REPO / f"benchmarks/results/readers-{res['date']}.json", render(res), args.results_md,
            json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
