"""Cold-tier benchmark: partitioned S3 segments on a real (local) S3 server, alone and under hot+warm.

Dataset: wordnet-minilm (100k x 384, 1k queries, exact top-100 ground truth) at
``<repo>/../shared/data/wordnet-minilm`` unless ``--data`` says otherwise. One run starts its own
redis-server (+RediSearch) and SeaweedFS S3 server (``weed mini``) in a temp dir.

1. All cold: ``upsert(tier="cold")`` of every row as one segment (k-means + upload: the cold
   ingest rate), for ``cold.dtype`` float32 and float16. For each nprobe: recall@10, query p50/p99
   with the block cache emptied before every query (cache-cold: every probed partition is a ranged
   GET) and with the cache filled (cache-warm), GETs and bytes per query.
2. Split 10% hot / 30% warm / 60% cold, placed the way the policy would place a skewed workload:
   a Zipf(1.1) popularity over the query pool; the exact neighbours of the most popular queries
   are hot, the next ones warm, the rest cold. 40% of the cold share is demoted from warm with
   ``store.move(ids, "cold")`` (the demotion rate). A Zipf-drawn stream of queries then reports
   recall@10, p50/p99, cold GETs per query and the fraction of queries whose cold search was
   pruned entirely (no partition can beat the k-th best hot/warm hit).

3. Ingest history (issue 16): the same 100k rows arriving as 20 ``upsert(tier="cold")`` batches of
   5k, and as 100 demotions of 1k (``store.move(ids, "cold")`` from warm, each its own segment, as
   the policy cycle writes them) -- no ``compact()``: recall@10, cache-warm / cache-cold p50, GETs
   (scan + rerank) and bytes per cache-cold query at the default nprobe.

4. Filtered queries (issue 16): one 100k segment whose rows also carry ``bucket`` = row % 100 (a
   tag that says nothing about the vector: 1% of the rows, spread over every partition). Cache-cold,
   at the default nprobe: bytes, GETs, partitions ruled out by their metadata summaries and the
   filtered recall@10 (exact filtered ground truth) of a ``lexname`` filter matching ~1% of the rows
   (a category that follows the embedding), the ``bucket`` filter (1%, uncorrelated), a ~10%
   ``lexname`` filter, against the same queries unfiltered; then each set again with the block
   cache warm (p50 of a second pass).

Goals (issue 16): recall@10 >= 0.95 at the default nprobe for one batch, 20 batches of 5k and 100
demotions of 1k; cache-warm p50 <= 1 ms, cache-cold <= 25 ms; bytes per cache-cold query <= 1/4 of
issue 4's at equal recall; GETs per cache-cold query <= nprobe / 2 + one rerank round; a filtered
query matching 1% of the rows fetches <= 10% of the bytes of an unfiltered one.

Run::

    .venv/bin/python -m benchmarks.cold                      # full: 100k rows, ~6 min
    .venv/bin/python -m benchmarks.cold --n 20000 --queries 200 --stream 300   # smoke, ~1 min

Writes ``benchmarks/results/cold-<date>-<data>.json`` and replaces the "## Cold tier (issue 4)"
section of ``benchmarks/RESULTS.md`` (``--results-md ''`` skips that).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tierstore
from tierstore import datasets
from tierstore.services import S3Server

from .common import REPO, command, log, publish, servers

K = 10
NPROBES = (16, 32, 40, 56, 72)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_store(tmp: Path, name: str, redis_url: str, s3: S3Server, **cold: Any) -> tierstore.TierStore:
    return tierstore.open(path=str(tmp / name), dim=384, env={}, schema={"lexname": "tag"},
                          hot={"redis_url": redis_url, "capacity": 1_000_000},
                          warm={"capacity": 1_000_000, "segment_size": 200_000},
                          cold={"url": f"s3://tierstore/{name}", "endpoint_url": s3.endpoint_url, **cold},
                          policy={"interval": 0, "promote_interval": 0})  # nothing moves but what we move


def sweep(store: tierstore.TierStore, queries: np.ndarray, gt: np.ndarray, nprobes: tuple[int, ...]) -> list[dict]:
    rows = []
    for nprobe in nprobes:
        cold_lat, gets, rgets, nbytes, rbytes, found, scanned = [], [], [], [], [], [], []
        for q in queries:  # cache-cold: every probed partition comes from S3
            store.cold.drop_cache()
            t0 = time.perf_counter()
            h = store.query(q, k=K, nprobe=nprobe)
            cold_lat.append(time.perf_counter() - t0)
            d = h.tiers["cold"].details
            gets.append(d["gets"])
            rgets.append(d.get("rerank_gets", 0))
            nbytes.append(d["bytes"])
            rbytes.append(d.get("rerank_bytes", 0))
            scanned.append(d.get("rows", 0))
            found.append(h.ids())
        for q in queries:  # fill the cache
            store.query(q, k=K, nprobe=nprobe)
        store.cold.settle()
        warm_lat = []
        for q in queries:
            t0 = time.perf_counter()
            store.query(q, k=K, nprobe=nprobe)
            warm_lat.append(time.perf_counter() - t0)
        rows.append({"nprobe": nprobe, "recall@10": datasets.recall_at(found, gt, K),
                     "cache_cold_p50_ms": pct(cold_lat, 50), "cache_cold_p99_ms": pct(cold_lat, 99),
                     "cache_warm_p50_ms": pct(warm_lat, 50), "cache_warm_p99_ms": pct(warm_lat, 99),
                     "gets_per_query": float(np.mean(gets)), "max_gets": int(np.max(gets)),
                     "rerank_gets_per_query": float(np.mean(rgets)), "rows_per_query": float(np.mean(scanned)),
                     "mib_per_query": float(np.mean(nbytes)) / 2**20, "rerank_mib_per_query": float(np.mean(rbytes)) / 2**20})
        log(f"  nprobe {nprobe}: {rows[-1]}")
    return rows


def all_cold(tmp: Path, redis_url: str, s3: S3Server, ds: datasets.Dataset, queries: np.ndarray, gt: np.ndarray,
             dtype: str, nprobes: tuple[int, ...]) -> dict[str, Any]:
    n = len(ds.base)
    store = open_store(tmp, f"cold-{dtype}", redis_url, s3, dtype=dtype, segment_size=max(n, 1))
    try:
        t0 = time.perf_counter()
        store.upsert(list(range(n)), ds.base, [{"lexname": m["lexname"]} for m in ds.metadata], tier="cold")
        ingest = time.perf_counter() - t0
        info = store.stats()["tiers"]["cold"]
        log(f"all-cold {dtype}: ingest {n / ingest:.0f} vectors/s, {info['partitions']} partitions")
        return {"dtype": dtype, "ingest_s": ingest, "ingest_vectors_per_s": n / ingest,
                "segments": info["segments"], "partitions": info["partitions"], "s3_bytes": info["s3_bytes"],
                "nprobe": sweep(store, queries, gt, nprobes)}
    finally:
        store.close()


def history(tmp: Path, redis_url: str, s3: S3Server, ds: datasets.Dataset, queries: np.ndarray, gt: np.ndarray,
            how: str, batch: int, nprobe: int) -> dict[str, Any]:
    """The cold set arriving in pieces, never compacted: ``how`` = "ingest" (upsert(tier="cold")
    batches) or "demote" (warm -> cold moves of ``batch`` rows, one segment each)."""
    n = len(ds.base)
    meta = [{"lexname": m["lexname"]} for m in ds.metadata]
    store = open_store(tmp, f"hist-{how}-{batch}", redis_url, s3, segment_size=max(n, 1), auto_compact_segments=0)
    try:
        if how == "demote":
            for s in range(0, n, 10_000):
                store.upsert(list(range(s, min(n, s + 10_000))), ds.base[s : s + 10_000], meta[s : s + 10_000],
                             tier="warm")
            store.flush()
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            ids = list(range(s, min(n, s + batch)))
            if how == "demote":
                store.move(ids, "cold")
            else:
                store.upsert(ids, ds.base[s : s + batch], meta[s : s + batch], tier="cold")
        secs = time.perf_counter() - t0
        info = store.stats()["tiers"]["cold"]
        log(f"{how} in batches of {batch}: {info['segments']} segments, {info['partitions']} partitions, "
            f"{n / secs:.0f} vectors/s")
        return {"how": how, "batch": batch, "segments": info["segments"], "partitions": info["partitions"],
                "vectors_per_s": n / secs, "nprobe": sweep(store, queries, gt, (nprobe,))}
    finally:
        store.close()


FILTERS = {  # label -> (how each query's filter is chosen)
    "lexname ~1% (one of 5 categories of 0.9-1.1%)": ("lexname", ("noun.quantity", "verb.social", "noun.possession",
                                                                 "noun.event", "noun.time")),
    "bucket = row % 100 (1%, uncorrelated with the vector)": ("bucket", ("b7",)),
    "lexname noun.artifact (9.9%)": ("lexname", ("noun.artifact",)),
}


def filtered(tmp: Path, redis_url: str, s3: S3Server, ds: datasets.Dataset, queries: np.ndarray,
             nprobe: int) -> dict[str, Any]:
    """Filtered queries on one 100k segment against the same queries unfiltered: cache-cold
    (bytes, GETs, latency), then cache-warm latency."""
    n = len(ds.base)
    meta = [{"lexname": m["lexname"], "bucket": f"b{i % 100}"} for i, m in enumerate(ds.metadata)]
    store = tierstore.open(path=str(tmp / "filtered"), dim=384, env={}, schema={"lexname": "tag", "bucket": "tag"},
                           hot={"redis_url": redis_url, "capacity": 1_000_000}, warm={"capacity": 1_000_000},
                           cold={"url": "s3://tierstore/filtered", "endpoint_url": s3.endpoint_url,
                                 "segment_size": max(n, 1)},
                           policy={"interval": 0, "promote_interval": 0})
    try:
        store.upsert(list(range(n)), ds.base, meta, tier="cold")
        parts = store.stats()["tiers"]["cold"]["partitions"]
        out: dict[str, Any] = {"partitions": parts, "nprobe": nprobe, "filters": []}
        for label, (field, values) in [("none", (None, (None,))), *FILTERS.items()]:
            nbytes, gets, skipped, recs, lat, match = [], [], [], [], [], []
            for j, q in enumerate(queries):
                value = values[j % len(values)]
                flt = None if field is None else {field: value}
                rows = np.arange(n) if field is None else np.flatnonzero([m[field] == value for m in meta])
                truth = rows[datasets.brute_force(ds.base[rows], q[None, :], K)[0]]
                store.cold.drop_cache()
                t0 = time.perf_counter()
                h = store.query(q, k=K, filter=flt, nprobe=nprobe)
                lat.append(time.perf_counter() - t0)
                d = h.tiers["cold"].details
                nbytes.append(d["bytes"])
                gets.append(d["gets"])
                skipped.append(d.get("meta_skipped", 0))
                recs.append(len(set(h.ids()) & set(truth.tolist())) / K)
                match.append(len(rows) / n)
            # then cache-warm: the same queries again after one pass that leaves their blocks cached
            warm: list[float] = []
            for rep in range(2):
                for j, q in enumerate(queries):
                    value = values[j % len(values)]
                    t0 = time.perf_counter()
                    store.query(q, k=K, filter=None if field is None else {field: value}, nprobe=nprobe)
                    if rep:
                        warm.append(time.perf_counter() - t0)
            out["filters"].append({"filter": label, "selectivity": float(np.mean(match)),
                                   "recall@10": float(np.mean(recs)), "mib_per_query": float(np.mean(nbytes)) / 2**20,
                                   "gets_per_query": float(np.mean(gets)), "partitions_ruled_out": float(np.mean(skipped)),
                                   "cache_cold_p50_ms": pct(lat, 50), "cache_warm_p50_ms": pct(warm, 50)})
            log(f"  filtered {label}: {out['filters'][-1]}")
        base = out["filters"][0]["mib_per_query"]
        for f in out["filters"]:
            f["bytes_vs_unfiltered"] = f["mib_per_query"] / base if base else float("nan")
        return out
    finally:
        store.close()


def placement(ds: datasets.Dataset, pool: np.ndarray, weights: np.ndarray, hot_n: int, warm_n: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hot / warm / cold rows: neighbours of the most popular queries first (what the access
    policy converges to under this workload), then the rest at random."""
    order = pool[np.argsort(-weights, kind="stable")]
    ranked: list[int] = []
    seen: set[int] = set()
    for depth in (10, 30, 100):
        for qi in order:
            for r in ds.gt[qi, :depth].tolist():
                if r not in seen:
                    seen.add(r)
                    ranked.append(r)
    rest = np.setdiff1d(np.arange(len(ds.base)), np.asarray(ranked, np.int64))
    ranked += rng.permutation(rest).tolist()
    ranked_a = np.asarray(ranked, np.int64)
    return ranked_a[:hot_n], ranked_a[hot_n : hot_n + warm_n], ranked_a[hot_n + warm_n :]


def split(tmp: Path, redis_url: str, s3: S3Server, ds: datasets.Dataset, stream: int, nprobes: tuple[int, ...],
          seed: int = 0) -> dict[str, Any]:
    n = len(ds.base)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(ds.queries))
    weights = 1.0 / (rng.permutation(len(pool)) + 1.0) ** 1.1  # Zipf(1.1) over a shuffled pool
    hot, warm, cold = placement(ds, pool, weights, n // 10, 3 * n // 10, rng)
    demote = cold[: int(0.4 * len(cold))]  # these go warm -> cold through store.move
    direct = cold[len(demote) :]
    store = open_store(tmp, "split", redis_url, s3, segment_size=100_000)
    meta = [{"lexname": m["lexname"]} for m in ds.metadata]
    try:
        t0 = time.perf_counter()
        for rows, tier in ((hot, "hot"), (np.concatenate([warm, demote]), "warm"), (direct, "cold")):
            for s in range(0, len(rows), 10_000):
                r = rows[s : s + 10_000]
                store.upsert(r.tolist(), ds.base[r], [meta[i] for i in r], tier=tier)
        store.flush()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = store.move(demote.tolist(), "cold")
        demote_s = time.perf_counter() - t0
        counts = store.stats()["tiers"]
        log(f"split: loaded in {load_s:.0f} s; demoted {rep.moved} warm -> cold at {rep.moved / demote_s:.0f} vectors/s")
        draws = rng.choice(pool, size=stream, p=weights / weights.sum())
        rows = []
        for nprobe in nprobes:
            for qi in draws[: min(200, stream)]:  # warm-up: fills the block cache like a running service
                store.query(ds.queries[qi], k=K, nprobe=nprobe)
            lat, found, gets, pruned, cold_returned = [], [], [], 0, 0
            for qi in draws:
                t0 = time.perf_counter()
                h = store.query(ds.queries[qi], k=K, nprobe=nprobe)
                lat.append(time.perf_counter() - t0)
                found.append(h.ids())
                d = h.tiers["cold"].details
                gets.append(d.get("gets", 0))  # (no cold search at all: a repeat skip, or cold skipped)
                pruned += bool(d.get("pruned_all"))
                cold_returned += h.tiers["cold"].returned
            rows.append({"nprobe": nprobe, "recall@10": datasets.recall_at(found, ds.gt[draws], K),
                         "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                         "cold_gets_per_query": float(np.mean(gets)), "pruned_all_fraction": pruned / len(draws),
                         "cold_hits_per_query": cold_returned / len(draws)})
            log(f"  split nprobe {nprobe}: {rows[-1]}")
        return {"counts": {t: counts[t]["count"] for t in ("hot", "warm", "cold")}, "load_s": load_s,
                "demoted": rep.moved, "demote_s": demote_s, "demote_vectors_per_s": rep.moved / demote_s,
                "stream": stream, "distinct_queries": int(len(set(draws.tolist()))), "nprobe": rows,
                "rss_anon_mib": rss_mib()}
    finally:
        store.close()


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    path = datasets.find_wordnet(args.data)
    if path is None:
        raise SystemExit("wordnet-minilm not found: pass --data DIR")
    ds = datasets.load_wordnet(path, n=args.n, queries=args.queries)
    queries = ds.queries[: args.sweep_queries]
    gt = ds.gt[: args.sweep_queries]
    nprobes = tuple(args.nprobe) if args.nprobe else NPROBES
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "command": command,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "params": {"data": f"wordnet-minilm-{len(ds.base)}", "n": len(ds.base), "queries": len(ds.queries),
                   "sweep_queries": len(queries), "k": K, "nprobes": list(nprobes),
                   "default_nprobe": _default_nprobe()},
    }
    default = _default_nprobe()
    parts = set(args.parts.split(","))
    with servers("cold") as (tmp, redis_url, s3):
        if "all" in parts:
            res["all_cold"] = [all_cold(tmp, redis_url, s3, ds, queries, gt, "float32", nprobes),
                               all_cold(tmp, redis_url, s3, ds, queries, gt, "float16", (default,))]
        if "history" in parts:
            res["history"] = [history(tmp, redis_url, s3, ds, queries, gt, "ingest", 5_000, default),
                              history(tmp, redis_url, s3, ds, queries, gt, "demote", 1_000, default)]
        if "filtered" in parts:
            res["filtered"] = filtered(tmp, redis_url, s3, ds, queries, default)
        if args.stream and "split" in parts:
            res["split"] = split(tmp, redis_url, s3, ds, args.stream, tuple(sorted({16, default})))
    return res


def _default_nprobe() -> int:
    from tierstore.config import ColdConfig

    return ColdConfig().nprobe


def render(res: dict[str, Any]) -> str:
    p = res["params"]
    mib = 2**20
    out = [f"## Cold tier (issue 16): {p['data']}", "",
           f"Command: `{res['command']}` ({res['date']}); {res['machine']['cpu_count']} CPUs (shared with other "
           f"work); a local SeaweedFS S3 server (`weed mini`) and redis-server 8.2 + RediSearch on the same machine. "
           f"{p['sweep_queries']} queries per sweep, k = {p['k']}, default nprobe = {p['default_nprobe']} (a budget "
           "of nprobe x sqrt(cold rows) rows over all segments); segment format 2 (int8 codes scanned, exact "
           "vectors reranked).", "",
           "### All vectors cold (one segment)", "",
           "| dtype | nprobe | recall@10 | rows scanned | cache-cold p50 / p99 ms | cache-warm p50 / p99 ms | "
           "GETs/query (scan + rerank) | MiB/query (of which rerank) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(label: str, r: dict) -> str:
        g, rg = r["gets_per_query"], r.get("rerank_gets_per_query", 0.0)
        return (f"| {label} | {r['nprobe']} | {r['recall@10']:.3f} | {r.get('rows_per_query', 0):.0f} | "
                f"{r['cache_cold_p50_ms']:.1f} / {r['cache_cold_p99_ms']:.1f} | {r['cache_warm_p50_ms']:.2f} / "
                f"{r['cache_warm_p99_ms']:.2f} | {g - rg:.1f} + {rg:.1f} (max {r['max_gets']}) | "
                f"{r['mib_per_query']:.2f} ({r.get('rerank_mib_per_query', 0.0):.2f}) |")

    for a in res.get("all_cold", []):
        for r in a["nprobe"]:
            out.append(row(a["dtype"], r))
    out.append("")
    for a in res.get("all_cold", []):
        out.append(f"- {a['dtype']}: cold ingest (`upsert(tier=\"cold\")`, k-means + upload of one segment) "
                   f"{a['ingest_vectors_per_s']:.0f} vectors/s; {a['partitions']} partitions; "
                   f"{a['s3_bytes'] / mib:.0f} MiB in S3.")
    if res.get("history"):
        out += ["### Ingest history, no compact() (float32, default nprobe)", "",
                "| how the 100k rows arrived | segments | partitions | nprobe | recall@10 | rows scanned | "
                "cache-cold p50 / p99 ms | cache-warm p50 / p99 ms | GETs/query (scan + rerank) | "
                "MiB/query (of which rerank) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for h in res["history"]:
            label = (f"{h['segments']} x `upsert(tier=\"cold\")` of {h['batch']}" if h["how"] == "ingest" else
                     f"{h['segments']} x `move(ids, \"cold\")` of {h['batch']} from warm")
            for r in h["nprobe"]:
                out.append(row(label, r).replace(f"| {label} |", f"| {label} | {h['segments']} | {h['partitions']} |", 1))
        out.append("")
        for h in res["history"]:
            out.append(f"- {h['how']} in batches of {h['batch']}: {h['vectors_per_s']:.0f} vectors/s "
                       f"({'k-means + upload per batch' if h['how'] == 'ingest' else 'demotions incl. catalog flip and warm masking'}).")
        out.append("")
    if res.get("filtered"):
        f = res["filtered"]
        out += [f"### Filtered queries (one segment of {p['n']} rows, {f['partitions']} partitions, "
                f"nprobe {f['nprobe']})", "",
                "| filter | rows matching | recall@10 (filtered truth) | partitions ruled out by their summaries | "
                "GETs/query | MiB/query | bytes vs unfiltered | cache-cold p50 ms | cache-warm p50 ms |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in f["filters"]:
            warm = r.get("cache_warm_p50_ms")  # (runs before 2026-12-03 evening did not measure it)
            out.append(f"| {r['filter']} | {r['selectivity']:.1%} | {r['recall@10']:.3f} | "
                       f"{r['partitions_ruled_out']:.0f} | {r['gets_per_query']:.1f} | {r['mib_per_query']:.2f} | "
                       f"{r['bytes_vs_unfiltered']:.2f}x | {r['cache_cold_p50_ms']:.1f} | "
                       f"{'-' if warm is None else f'{warm:.2f}'} |")
        out.append("")
    if "split" not in res:
        return "\n".join(out)
    s = res["split"]
    c = s["counts"]
    out += ["", f"### 10% hot / 30% warm / 60% cold, skewed stream ({c['hot']} / {c['warm']} / {c['cold']} vectors)",
            "", f"{s['stream']} queries drawn Zipf(1.1) from the query pool ({s['distinct_queries']} distinct); "
            "hot = exact neighbours of the most popular queries (what the policy converges to), block cache warmed "
            "by 200 queries first.", "",
            "| nprobe | recall@10 | p50 ms | p99 ms | cold GETs/query | cold hits/query | cold pruned entirely |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in s["nprobe"]:
        out.append(f"| {r['nprobe']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                   f"{r['cold_gets_per_query']:.2f} | {r['cold_hits_per_query']:.2f} | {r['pruned_all_fraction']:.1%} |")
    out += ["", f"Demotion warm -> cold (`store.move(ids, \"cold\")`, {s['demoted']} vectors, k-means + upload + "
            f"catalog flip + warm masking): {s['demote_vectors_per_s']:.0f} vectors/s.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cold", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, help="wordnet rows (default all)")
    ap.add_argument("--queries", type=int, help="query pool (default all 1000)")
    ap.add_argument("--sweep-queries", type=int, default=200, help="queries per nprobe in the all-cold sweep")
    ap.add_argument("--stream", type=int, default=2000, help="queries in the skewed stream (0: skip the split)")
    ap.add_argument("--nprobe", type=int, nargs="*", help=f"nprobe values (default {NPROBES})")
    ap.add_argument("--data", help="wordnet-minilm directory")
    ap.add_argument("--parts", default="all,history,filtered,split",
                    help="comma-separated subset of all,history,filtered,split (default all four)")
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    args = ap.parse_args(argv)
    res = run(args, command("benchmarks.cold", argv))
    parts = "" if set(args.parts.split(",")) >= {"all", "history", "filtered", "split"} else (
        "-" + "-".join(sorted(args.parts.split(","))))  # (a partial run never replaces a full one's file)
    publish(res, REPO / f"benchmarks/results/cold-{res['date']}{parts}-{res['params']['data']}.json", render(res),
            args.results_md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
