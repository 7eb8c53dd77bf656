"""End-to-end comparison: tierstore against the engines users would pick instead, one run, one machine.

Engines (``benchmarks/engines.py``): tierstore with a 10% hot / 30% warm / 60% cold budget and the
policy running; everything in Redis (RediSearch HNSW, same M / EF); hnswlib in process RAM;
LanceDB with an IVF_PQ index on local disk and on the same S3 server; numpy brute force. Each
engine runs in its own process (its RAM is its own) against its own redis-server; the S3 server
(SeaweedFS ``weed mini``) is shared and counts requests and bytes per bucket.

Workload, the same for every engine:

1. **Skewed stream**: queries drawn Zipf(1.1) from a pool (wordnet: its 1,000 real queries),
   the popularity ranks permuted half-way. tierstore runs all of it (its policy learns from it);
   engines without a learning part run an evenly spaced subset (the slow ones fewer). Per query:
   latency and recall@10 against exact search. tierstore also reports, per window, the share of
   results served from Redis and each tier's search time.
2. **Throughput**: queries per second with 1 and 2 client threads, drawn from the same stream.
3. **Filtered queries**: k-NN with an equality filter on a tag (wordnet: the lexicographer file
   of the query's nearest neighbour, so each filter matches), recall against exact filtered search.
4. **Recall vs latency**: each engine's own knob (ef; ef + nprobe; nprobes) over a uniform sample.
5. **Resources**: ingest time, RAM (process RSS over a bare interpreter, plus Redis used_memory),
   local disk bytes (incl. Redis's AOF), S3 bytes stored, S3 requests and bytes per 1,000 queries
   (server-side counters), and a monthly cost per million vectors from ``PRICES`` below.

Goals (issue 6), read off the same run: tierstore RAM <= 30% of all-in-Redis; tierstore p50 on
the skewed stream <= 1.5x all-in-Redis with recall@10 >= 0.95; tierstore p50 >= 5x faster than
LanceDB-on-S3 at equal or better recall. tierstore's queries are profiled (cProfile) so a miss
can be explained.

Run::

    .venv/bin/python -m benchmarks.compare                 # wordnet-minilm 100k, ~25 min
    .venv/bin/python -m benchmarks.compare --quick         # 20k rows, fewer queries, < 5 min
    .venv/bin/python -m benchmarks.compare --scale         # generated clustered 1M x 384 (hours)
    .venv/bin/python -m benchmarks.compare --data my.npy   # any (n, dim) float .npy; 1,000 rows held out as queries

Writes ``benchmarks/results/<date>-<dataset>.json`` and three PNG plots next to it, and replaces
the "## Compare (issue 6)" section of ``benchmarks/RESULTS.md`` (``--results-md ''`` skips that).
Needs the ``bench`` extra (``pip install -e '.[embedded,dev,bench]'``).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from .common import REPO, command, log, publish

K = 10
SECTION = "## Compare (issue 6)"
# Unit prices for the cost estimate (USD, us-east-1 on-demand list prices, 2025). Edit to yours.
PRICES = {
    "ram_gib_month": 4.90,  # memory-optimised EC2 (r7g.large: 16 GiB for $0.1071/h = $78/month)
    "disk_gb_month": 0.08,  # EBS gp3
    "s3_gb_month": 0.023,  # S3 Standard storage
    "s3_get_per_1k": 0.0004,  # S3 GET/HEAD/LIST... requests
    "s3_put_per_1k": 0.005,
}
COST_QPS = 50  # sustained queries per second assumed for the S3 request cost
SECONDS_PER_MONTH = 30 * 24 * 3600
GOALS = {"ram_vs_redis": 0.30, "p50_vs_redis": 1.5, "recall": 0.95, "speedup_vs_lance_s3": 5.0}
ORDER = ["tierstore", "redis", "hnswlib", "lancedb-local", "lancedb-s3", "exact"]


# --- data and workload ------------------------------------------------------------------------


def load(args: argparse.Namespace) -> tuple[str, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """-> (name, base, tags, pool queries, exact top-K of each pool query)."""
    # (not at module level: a worker's RSS baseline must not include tierstore's libraries)
    from tierstore import datasets

    if args.data and str(args.data).endswith(".npy"):
        x = np.load(args.data).astype(np.float32)
        rng = np.random.default_rng(0)
        held = rng.choice(len(x), size=min(1000, len(x) // 10), replace=False)
        keep = np.setdiff1d(np.arange(len(x)), held)
        base, pool = np.ascontiguousarray(x[keep]), np.ascontiguousarray(x[held])
        if args.n:
            base = base[: args.n]
        tags = [f"b{i % 20}" for i in range(len(base))]  # a synthetic tag, 5% selectivity
        return Path(args.data).stem, base, tags, pool, datasets.brute_force(base, pool, K)
    if args.scale:
        ds = datasets.clustered(args.n or 1_000_000, 384, queries=1000, seed=1)
        tags = [m["cluster"] for m in ds.metadata]
        return ds.name, ds.base, tags, ds.queries, ds.gt[:, :K]
    path = datasets.find_wordnet(args.data)
    if path is None:
        raise SystemExit("wordnet-minilm not found: pass --data DIR (or a .npy, or --scale)")
    ds = datasets.load_wordnet(path, n=args.n)
    return f"wordnet-minilm-{len(ds.base)}", ds.base, [m["lexname"] for m in ds.metadata], ds.queries, ds.gt[:, :K]


def workload(pool: int, stream: int, seed: int = 7) -> np.ndarray:
    """Pool indices: Zipf(1.1) over the pool, ranks permuted half-way (the popular set changes)."""
    rng = np.random.default_rng(seed)
    w = np.arange(1, pool + 1, dtype=np.float64) ** -1.1
    draws = rng.choice(pool, size=stream, p=w / w.sum())
    first, second = rng.permutation(pool), rng.permutation(pool)
    return np.concatenate([first[draws[: stream // 2]], second[draws[stream // 2 :]]])


def filtered_set(base: np.ndarray, tags: list[str], pool: np.ndarray, gt: np.ndarray, count: int) -> tuple[
        list[tuple[int, str]], np.ndarray]:
    """``count`` pool queries, each filtered on the tag of its nearest neighbour; exact answers."""
    from tierstore import datasets

    rng = np.random.default_rng(11)
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    tag_arr = np.asarray(tags)
    out, truth = [], np.full((len(picks), K), -1, np.int64)
    for j, qi in enumerate(picks.tolist()):
        tag = str(tag_arr[gt[qi, 0]])
        rows = np.flatnonzero(tag_arr == tag)
        top = datasets.brute_force(base[rows], pool[qi : qi + 1], min(K, len(rows)))[0]
        truth[j, : len(top)] = rows[top]
        out.append((qi, tag))
    return out, truth


# --- measuring inside a worker --------------------------------------------------------------


def memory() -> dict[str, int]:
    """This process's resident memory, split into anonymous (heap) and file-backed (mmap) pages."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(val.split()[0]) * 1024
    return out


def smaps(roots: list[str]) -> dict[str, int]:
    """Resident bytes of this process by what is mapped: anonymous memory, each data directory
    in ``roots`` (by file name: LMDB's data.mdb, segment files, cache files), shared libraries."""
    out: dict[str, int] = {}
    name = "?"
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":") or len(head) > 3:  # a mapping header: addr perms off dev inode [path]
                path = head[5] if len(head) > 5 else ""
                root = next((r for r in roots if path.startswith(r)), None)
                if root is not None:
                    name = "data: " + (path.rsplit("/", 2)[-2] + "/*" if "/segments/" in path or "/cache/" in path
                                       else path[len(root):].lstrip("/"))
                elif path.endswith(".so") or ".so." in path:
                    name = "shared libraries"
                elif path.startswith("/"):
                    name = "other files"
                else:
                    name = "anonymous (heap, numba, Python objects)"
            elif head[0] == "Rss:":
                out[name] = out.get(name, 0) + int(head[1]) * 1024
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def s3_counters(url: str | None, bucket: str) -> dict[str, float]:
    """SeaweedFS's own per-bucket counters: requests by type, bytes sent and received."""
    out = {"requests": 0.0, "gets": 0.0, "puts": 0.0, "sent_bytes": 0.0, "received_bytes": 0.0}
    if not url:
        return out
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("#") or f'bucket="{bucket}"' not in line:
            continue
        name, val = line.rsplit(" ", 1)
        v = float(val)
        if name.startswith("SeaweedFS_s3_request_total"):
            out["requests"] += v
            out["gets"] += v if 'type="GET"' in name or 'type="HEAD"' in name or 'type="LIST"' in name else 0
            out["puts"] += v if 'type="PUT"' in name or 'type="POST"' in name else 0
        elif name.startswith("SeaweedFS_s3_bucket_traffic_sent_bytes_total"):
            out["sent_bytes"] += v
        elif name.startswith("SeaweedFS_s3_bucket_traffic_received_bytes_total"):
            out["received_bytes"] += v
    return out


def s3_stored(spec: dict[str, Any]) -> int:
    if not spec.get("s3_endpoint"):
        return 0
    import boto3

    key, secret = spec["s3_keys"]
    c = boto3.client("s3", endpoint_url=spec["s3_endpoint"], aws_access_key_id=key, aws_secret_access_key=secret,
                     region_name="us-east-1")
    total = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=spec["bucket"]):
        total += sum(o["Size"] for o in page.get("Contents", ()))
    return total


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def recall(found: list[int], truth: np.ndarray) -> float:
    t = {int(x) for x in truth[:K] if x >= 0}
    return len(set(found[:K]) & t) / max(1, len(t))


def worker(spec_path: str) -> None:
    """One engine, start to finish, in this process; writes its results to ``spec['out']``."""
    spec = json.loads(Path(spec_path).read_text())
    from .engines import ENGINES

    d = Path(spec["data"])
    rss0 = memory()  # python + numpy: what any host process has anyway
    eng = ENGINES[spec["engine"]](spec)
    rss_open = memory()  # + the engine's libraries and an empty engine: the fixed share
    base = np.load(d / "base.npy")
    tags = json.loads((d / "tags.json").read_text())
    pool, gt, stream = np.load(d / "pool.npy"), np.load(d / "gt.npy"), np.load(d / "stream.npy")
    fq = json.loads((d / "filtered.json").read_text())
    fgt = np.load(d / "filtered_gt.npy")
    res: dict[str, Any] = {"engine": eng.name, "label": eng.label, "n": len(base)}
    log(f"[{eng.name}] ingest {len(base)}")
    t0 = time.perf_counter()
    eng.ingest(base, tags)
    res["ingest_s"] = time.perf_counter() - t0
    log(f"[{eng.name}] ingest {res['ingest_s']:.1f}s")
    del base
    gc.collect()
    res["memory_after_ingest"] = {**memory(), **eng.server_memory()}

    # 1. the skewed stream
    learn = eng.name == "tierstore"
    cap = len(stream) if learn else min(len(stream), spec["caps"].get(eng.name, spec["caps"]["default"]))
    order = stream if cap == len(stream) else stream[np.linspace(0, len(stream) - 1, cap).astype(int)]
    s3_before = s3_counters(spec.get("s3_metrics"), spec["bucket"])
    lat, recs, windows, tier_ms = [], [], [], {"hot": [], "warm": [], "cold": []}
    win = max(1, len(order) // 16)
    hot_res = hot_top1 = res_n = 0
    w_lat: list[float] = []
    w_rec: list[float] = []
    t_start = time.perf_counter()
    for i, qi in enumerate(order.tolist()):
        t = time.perf_counter()
        ids = eng.search(pool[qi], K, None)
        dt = time.perf_counter() - t
        lat.append(dt)
        recs.append(recall(ids, gt[qi]))
        if learn:
            h = eng.last
            hot_res += sum(x.tier == "hot" for x in h)
            hot_top1 += bool(h) and h[0].tier == "hot"
            res_n += len(h)
            for name, rep in h.tiers.items():
                if rep.searched:
                    tier_ms[name].append(rep.latency_ms)
            w_lat.append(dt)
            w_rec.append(recs[-1])
            if (i + 1) % win == 0 or i + 1 == len(order):
                det = eng.details()
                windows.append({"queries": i + 1, "seconds": time.perf_counter() - t_start,
                                "hot_results": hot_res / max(res_n, 1), "hot_top1": hot_top1 / len(w_lat),
                                "p50_ms": pct(w_lat, 50), "recall@10": float(np.mean(w_rec)), "tiers": det["tiers"],
                                "moves": sum((det["policy"]["moves_total"] or {}).values())})
                log(f"[{eng.name}] {i + 1} q: hot {windows[-1]['hot_results']:.1%} p50 "
                    f"{windows[-1]['p50_ms']:.2f} ms recall {windows[-1]['recall@10']:.3f} {det['tiers']}")
                hot_res = hot_top1 = res_n = 0
                w_lat, w_rec = [], []
    s3_after = s3_counters(spec.get("s3_metrics"), spec["bucket"])
    half = len(lat) // 2
    tail = lat[half - half // 4 : half] + lat[-(half // 4) :]  # the last quarter of each half: learned
    res["stream"] = {"queries": len(order), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
                     "mean_ms": float(np.mean(lat) * 1000), "recall@10": float(np.mean(recs)),
                     "p50_learned_ms": pct(tail, 50), "p99_learned_ms": pct(tail, 99)}
    n_q = len(order)
    res["s3_per_1k_queries"] = {k: (s3_after[k] - s3_before[k]) * 1000.0 / n_q for k in s3_after}
    if learn:
        res["windows"] = windows
        res["tier_ms"] = {t: {"searched_share": len(v) / n_q, "p50": float(np.median(v)) if v else None,
                              "p95": float(np.percentile(v, 95)) if v else None} for t, v in tier_ms.items()}
    log(f"[{eng.name}] stream {n_q} q: p50 {res['stream']['p50_ms']:.2f} ms p99 {res['stream']['p99_ms']:.1f} "
        f"recall {res['stream']['recall@10']:.3f}")

    # 2. throughput with 1 and 2 client threads
    res["qps"] = {}
    for threads in (1, 2):
        res["qps"][str(threads)] = qps(eng, pool, order, threads, spec["qps_seconds"])
    log(f"[{eng.name}] qps {res['qps']}")

    # 3. filtered queries
    flat, frec = [], []
    for j, (qi, tag) in enumerate(fq[: cap if not learn else len(fq)]):
        t = time.perf_counter()
        ids = eng.search(pool[qi], K, tag)
        flat.append(time.perf_counter() - t)
        frec.append(recall(ids, fgt[j]))
    res["filtered"] = {"queries": len(flat), "p50_ms": pct(flat, 50), "p99_ms": pct(flat, 99),
                       "recall@10": float(np.mean(frec)) if frec else None}
    log(f"[{eng.name}] filtered: {res['filtered']}")

    # 4. recall vs latency along the engine's own knob
    sample = np.random.default_rng(3).choice(len(pool), size=min(spec["sweep"], len(pool)), replace=False)
    if eng.name in spec["slow"]:
        sample = sample[: max(20, len(sample) // 4)]
    res["sweep"] = []
    for p in eng.points:
        eng.set_point(p)
        eng.search(pool[sample[0]], K, None)  # warm-up
        sl, sr = [], []
        for qi in sample.tolist():
            t = time.perf_counter()
            ids = eng.search(pool[qi], K, None)
            sl.append(time.perf_counter() - t)
            sr.append(recall(ids, gt[qi]))
        res["sweep"].append({"point": p, "p50_ms": pct(sl, 50), "p99_ms": pct(sl, 99), "recall@10": float(np.mean(sr))})
    eng.set_point(eng.points[0])

    # 5. profile (tierstore): where a query's time goes
    if learn and spec["profile"]:
        prof = cProfile.Profile()
        prof.enable()
        for qi in order[-spec["profile"] :].tolist():
            eng.search(pool[qi], K, None)
        prof.disable()
        res["profile"] = profile_summary(prof, spec["profile"])

    res["memory"] = {**memory(), **eng.server_memory()}
    res["memory_map"] = smaps([str(Path(spec["dir"]).resolve())])
    res["rss_baseline"], res["rss_open"] = rss0, rss_open
    res["disk_bytes"] = eng.disk_bytes()
    res["s3_bytes"] = s3_stored(spec) if spec.get("uses_s3") else 0
    res["details"] = eng.details()
    eng.close()
    Path(spec["out"]).write_text(json.dumps(res, indent=1, default=str))


def qps(eng: Any, pool: np.ndarray, order: np.ndarray, threads: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def run(t: int) -> None:
        i = t * 7919
        while time.perf_counter() < stop:
            eng.search(pool[order[i % len(order)]], K, None)
            counts[t] += 1
            i += 1

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def profile_summary(prof: cProfile.Profile, queries: int) -> dict[str, Any]:
    st = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}({fn})" if line else fn
        rows.append({"function": where, "calls_per_query": nc / queries, "own_ms_per_query": 1000 * tt / queries,
                     "cum_ms_per_query": 1000 * ct / queries})
    total = sum(r["own_ms_per_query"] for r in rows)
    return {"queries": queries, "ms_per_query": total,
            "by_own": sorted(rows, key=lambda r: -r["own_ms_per_query"])[:15],
            "by_cum": [r for r in sorted(rows, key=lambda r: -r["cum_ms_per_query"]) if "tierstore/" in r["function"]][:12]}


# --- the driver ------------------------------------------------------------------------------


def run(args: argparse.Namespace, cmd: str) -> dict[str, Any]:
    from tierstore.services import S3Server, free_port

    class MeteredS3(S3Server):  # weed mini with its Prometheus endpoint on (per-bucket S3 counters)
        metrics_port = free_port()

        def command(self) -> list[str]:
            return [f"-metricsPort={self.metrics_port}" if a == "-metricsPort=0" else a for a in super().command()]

    name, base, tags, pool, gt = load(args)
    stream = workload(len(pool), args.stream)
    fq, fgt = filtered_set(base, tags, pool, gt, args.filtered)
    log(f"{name}: {base.shape}, pool {len(pool)}, stream {len(stream)}, filtered {len(fq)}")
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "command": cmd, "dataset": name,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": {"n": len(base), "dim": base.shape[1], "k": K, "pool": len(pool), "stream": len(stream),
                   "zipf": 1.1, "filtered": len(fq), "hot_share": 0.10, "warm_share": 0.30, "caps": args.caps,
                   "policy_interval": args.policy_interval, "policy_half_life": args.policy_half_life,
                   "qps_seconds": args.qps_seconds, "sweep": args.sweep, "no_repeats": args.no_repeats},
        "prices": PRICES, "cost_qps": COST_QPS, "engines": {}}
    with tempfile.TemporaryDirectory(prefix="tierstore-compare-") as tmpd:
        tmp = Path(tmpd)
        data = tmp / "data"
        data.mkdir()
        np.save(data / "base.npy", base)
        (data / "tags.json").write_text(json.dumps(tags))
        np.save(data / "pool.npy", pool)
        np.save(data / "gt.npy", gt)
        np.save(data / "stream.npy", stream)
        (data / "filtered.json").write_text(json.dumps(fq))
        np.save(data / "filtered_gt.npy", fgt)
        n, dim = base.shape
        del base
        s3 = MeteredS3(tmp / "s3", buckets=["tierstore", "lance"]).start()
        try:
            for eng in args.engines:
                res["engines"][eng] = one_engine(eng, tmp, data, s3, n, dim, args)
        finally:
            s3.stop()
    derive(res)
    return res


def one_engine(eng: str, tmp: Path, data: Path, s3: Any, n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    from tierstore.services import RedisServer

    redis_srv = RedisServer(tmp / f"redis-{eng}").start() if eng in ("tierstore", "redis") else None
    spec = {"engine": eng, "data": str(data), "dir": str(tmp / eng), "out": str(tmp / f"{eng}.json"), "n": n, "dim": dim,
            "redis_url": redis_srv.url if redis_srv else None, "redis_dir": str(tmp / f"redis-{eng}"),
            "s3_endpoint": s3.endpoint_url, "s3_keys": [s3.access_key, s3.secret_key],
            "s3_metrics": f"http://127.0.0.1:{s3.metrics_port}/metrics",
            "bucket": "tierstore" if eng == "tierstore" else "lance", "uses_s3": eng in ("tierstore", "lancedb-s3"),
            "hot_share": 0.10, "warm_share": 0.30, "policy_interval": args.policy_interval,
            "policy_half_life": args.policy_half_life, "caps": args.caps, "qps_seconds": args.qps_seconds,
            "sweep": args.sweep, "slow": ["lancedb-s3", "exact"], "profile": args.profile,
            "no_repeats": args.no_repeats}
    spec_path = tmp / f"{eng}.spec.json"
    spec_path.write_text(json.dumps(spec))
    log(f"=== {eng}")
    try:
        subprocess.run([sys.executable, "-m", "benchmarks.compare", "--worker", str(spec_path)], cwd=REPO, check=True,
                       timeout=args.engine_timeout)
        return json.loads(Path(spec["out"]).read_text())
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log(f"{eng} failed: {exc}")
        return {"engine": eng, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if redis_srv is not None:
            redis_srv.stop()


def derive(res: dict[str, Any]) -> None:
    """RAM totals, monthly cost per million vectors and the goals, from the measured figures."""
    n = res["params"]["n"]
    scale = 1e6 / n
    for r in res["engines"].values():
        if "error" in r:
            continue
        mem = r["memory"]
        b0, b1 = r["rss_baseline"], r["rss_open"]
        client = max(0, mem["VmRSS"] - b0["VmRSS"])
        fixed = max(0, b1["VmRSS"] - b0["VmRSS"])  # libraries + an empty engine: does not grow with n
        redis = mem.get("redis_used_memory", 0)
        anon = max(0, mem["RssAnon"] - b0["RssAnon"])
        fixed_anon = max(0, b1["RssAnon"] - b0["RssAnon"])
        # "total": everything resident (file-backed pages of memory-mapped files included);
        # "required": what cannot be reclaimed -- the process's anonymous memory and Redis's --
        # while mapped file pages are page cache the kernel drops under pressure (then re-read
        # from local disk); "growing": required minus the libraries' fixed share.
        r["ram"] = {"client_rss": client, "client_anon": anon, "client_file": max(0, mem["RssFile"] - b0["RssFile"]),
                    "redis_used_memory": redis, "total": client + redis, "fixed": fixed, "required": anon + redis,
                    "growing": max(0, anon - fixed_anon) + redis}
        # Per 1M vectors: the fixed share (libraries, an empty engine) once, the rest scaled.
        ram_1m = fixed_anon + (anon + redis - fixed_anon) * scale
        resident_1m = fixed + (client + redis - fixed) * scale
        s3k = r["s3_per_1k_queries"]
        q_month = COST_QPS * SECONDS_PER_MONTH
        cost = {"ram": ram_1m / 2**30 * PRICES["ram_gib_month"],
                "disk": r["disk_bytes"] * scale / 1e9 * PRICES["disk_gb_month"],
                "s3_storage": r["s3_bytes"] * scale / 1e9 * PRICES["s3_gb_month"],
                "s3_requests": s3k["gets"] * q_month / 1000 / 1000 * PRICES["s3_get_per_1k"]}
        cost["total"] = sum(cost.values())
        # the same, billing every resident page (file-backed page cache included) as RAM
        cost["total_resident"] = cost["total"] - cost["ram"] + resident_1m / 2**30 * PRICES["ram_gib_month"]
        r["cost_per_1m_month"] = cost
    e = res["engines"]
    ts, rd, ls3 = e.get("tierstore", {}), e.get("redis", {}), e.get("lancedb-s3", {})
    goals = {}
    if "ram" in ts and "ram" in rd:
        for key, what in (("total", "all resident memory"), ("required", "anonymous + Redis (not reclaimable)"),
                          ("growing", "what grows with the data (required minus fixed libraries)")):
            v = ts["ram"][key] / rd["ram"][key]
            goals[f"ram_{key}"] = {"value": v, "goal": f"RAM <= {GOALS['ram_vs_redis']:.0%} of all-in-Redis: {what}",
                                   "met": v <= GOALS["ram_vs_redis"]}
    if "stream" in ts and "stream" in rd:
        v = ts["stream"]["p50_ms"] / rd["stream"]["p50_ms"]
        goals["p50"] = {"value": v, "goal": f"p50 <= {GOALS['p50_vs_redis']}x all-in-Redis", "met": v <= GOALS["p50_vs_redis"]}
        rec = ts["stream"]["recall@10"]
        goals["recall"] = {"value": rec, "goal": f"recall@10 >= {GOALS['recall']}", "met": rec >= GOALS["recall"]}
    if "stream" in ts and "stream" in ls3:
        # At equal or better recall: the stream's figures when tierstore's recall is at least
        # LanceDB's; otherwise both engines' recall/latency curves (same uniform sample), taking
        # tierstore's fastest setting that reaches LanceDB's default recall.
        v = ls3["stream"]["p50_ms"] / ts["stream"]["p50_ms"]
        how = "skewed stream, default settings"
        if ts["stream"]["recall@10"] < ls3["stream"]["recall@10"]:
            target = ls3["sweep"][0]
            better = [p for p in ts["sweep"] if p["recall@10"] >= target["recall@10"]]
            v = target["p50_ms"] / min(p["p50_ms"] for p in better) if better else 0.0
            how = f"recall/latency curves at LanceDB's recall {target['recall@10']:.3f}"
        goals["vs_lance_s3"] = {"value": v, "goal": f">= {GOALS['speedup_vs_lance_s3']:g}x faster p50 than "
                                "LanceDB-on-S3 at equal or better recall", "met": v >= GOALS["speedup_vs_lance_s3"],
                                "how": how}
    res["goals"] = goals


# --- the report --------------------------------------------------------------------------------


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def plots(res: dict[str, Any], stem: Path) -> dict[str, str]:
    """The figures (PNG beside the JSON); none without matplotlib (the `bench` extra): a run's
    results must not be lost at the very end for want of a plotting library."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (pip install 'tierstore[bench]'): no figures")
        return {}

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    eng = {k: v for k, v in res["engines"].items() if "error" not in v}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in [k for k in ORDER if k in eng]:
        pts = sorted(eng[name]["sweep"], key=lambda p: p["recall@10"])
        ax.plot([p["recall@10"] for p in pts], [p["p50_ms"] for p in pts], marker="o", label=eng[name]["label"])
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("p50 latency, ms (log)")
    ax.set_title(f"Recall vs latency, {res['dataset']} (uniform queries, one thread)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out["recall_latency"] = _save(fig, stem, "recall-latency")
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [k for k in ORDER if k in eng]
    anon = [eng[k]["ram"]["client_anon"] / 2**20 for k in names]
    redis = [eng[k]["ram"]["redis_used_memory"] / 2**20 for k in names]
    files = [eng[k]["ram"]["client_file"] / 2**20 for k in names]
    ax.barh(names, anon, label="process: anonymous (heap, libraries' data)")
    ax.barh(names, redis, left=anon, label="Redis used_memory")
    ax.barh(names, files, left=[a + r for a, r in zip(anon, redis, strict=True)], alpha=0.45,
            label="process: mapped file pages (reclaimable page cache)")
    ax.set_xlabel("MiB")
    ax.set_title(f"RAM per engine, {res['dataset']}")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    out["ram"] = _save(fig, stem, "ram")
    if "windows" in eng.get("tierstore", {}):
        w = eng["tierstore"]["windows"]
        fig, ax = plt.subplots(figsize=(7, 4))
        q = [x["queries"] for x in w]
        ax.plot(q, [x["hot_results"] for x in w], marker="o", label="share of results from Redis (hot)")
        ax.plot(q, [x["hot_top1"] for x in w], marker="s", label="share of top-1 from hot")
        ax.axvline(res["params"]["stream"] / 2, color="grey", ls="--", label="popularity shift")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("queries")
        ax.set_ylabel("share")
        ax.set_title("tierstore: hot hit ratio over time (policy learning)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        out["hot_hits"] = _save(fig, stem, "hot-hits")
    return out


def _save(fig: Any, stem: Path, what: str) -> str:
    path = stem.parent / f"{stem.name}-{what}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return os.path.relpath(path, REPO / "benchmarks")


def render(res: dict[str, Any], figs: dict[str, str]) -> str:
    p, e = res["params"], res["engines"]
    names = [k for k in ORDER if k in e]
    ok = [k for k in names if "error" not in e[k]]
    out = [f"{SECTION}: tierstore against the alternatives, {res['dataset']}", "",
           f"Command: `{res['command']}` ({res['date']}); {res['machine']['cpu_count']} CPUs shared by the client, "
           "redis-server 8.2 (+RediSearch 2.10) and SeaweedFS (`weed mini`, S3 on loopback). Every engine runs in "
           "its own process against its own redis-server; the S3 server counts requests and bytes per bucket.", "",
           f"Workload: {p['stream']} queries drawn Zipf(1.1) from {p['pool']} pooled queries, popularity permuted "
           f"half-way; k = {K}. tierstore: hot {p['hot_share']:.0%} / warm {p['warm_share']:.0%} / cold the rest, "
           f"policy every {p['policy_interval']}, half-life {p['policy_half_life']}, "
           f"{'no repeat cache (every query searched as a new one), ' if p.get('no_repeats') else ''}"
           "vectors placed by ingest order "
           "at start (nothing by hand). Engines without a learning part run an evenly spaced subset of the stream "
           f"({', '.join(f'{k} {v}' for k, v in p['caps'].items())} queries). HNSW everywhere: M 16, "
           "ef_construction 200, ef 64; LanceDB: IVF_PQ, sqrt(n) partitions, dim/8 sub-vectors, nprobes 20, "
           "refine_factor 10.", ""]
    if res.get("goals"):
        out += ["### Goals", "", "| goal | measured | met |", "|---|---:|---|"]
        fmt = {"ram_total": "{:.1%} of all-in-Redis", "ram_required": "{:.1%} of all-in-Redis",
               "ram_growing": "{:.1%} of all-in-Redis", "p50": "{:.2f}x all-in-Redis", "recall": "{:.3f}",
               "vs_lance_s3": "{:.1f}x faster"}
        for key, g in res["goals"].items():
            how = f" ({g['how']})" if g.get("how") else ""
            out.append(f"| {g['goal']} | {fmt[key].format(g['value'])}{how} | {'yes' if g['met'] else '**no**'} |")
        out.append("")
    out += ["### Skewed stream, one client thread", "",
            "| engine | queries | recall@10 | p50 ms | p95 ms | p99 ms | QPS 1 thread | QPS 2 threads | filtered recall@10 "
            "| filtered p50 ms | ingest s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in names:
        r = e[k]
        if "error" in r:
            out.append(f"| {k} | failed: {r['error'][:120]} |||||||||")
            continue
        s, f = r["stream"], r["filtered"]
        out.append(f"| {r['label']} | {s['queries']} | {s['recall@10']:.3f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | "
                   f"{s['p99_ms']:.1f} | {r['qps']['1']:,.0f} | {r['qps']['2']:,.0f} | "
                   f"{f['recall@10']:.3f} | {f['p50_ms']:.2f} | {r['ingest_s']:.1f} |")
    ts = e.get("tierstore", {})
    if "stream" in ts:
        out += ["", f"tierstore after learning (last quarter of each half of the stream): p50 "
                f"{ts['stream']['p50_learned_ms']:.2f} ms, p99 {ts['stream']['p99_learned_ms']:.1f} ms."]
    out += ["", "### Resources and cost", "",
            "| engine | client RSS MiB (anon + file) | Redis used_memory MiB | RAM total (required) MiB | local disk MiB | S3 stored MiB "
            "| S3 requests / 1k queries | S3 MiB read / 1k queries | $/month per 1M vectors: RAM + disk + S3 + requests = total "
            "(total billing all resident pages as RAM) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in ok:
        r = e[k]
        ram, c, s3k = r["ram"], r["cost_per_1m_month"], r["s3_per_1k_queries"]
        out.append(f"| {r['label']} | {mib(ram['client_rss'])} ({mib(ram['client_anon'])} + {mib(ram['client_file'])}) | "
                   f"{mib(ram['redis_used_memory'])} | {mib(ram['total'])} ({mib(ram['required'])}) | {mib(r['disk_bytes'])} | {mib(r['s3_bytes'])} | "
                   f"{s3k['requests']:,.0f} | {s3k['sent_bytes'] / 2**20:,.2f} | "
                   f"{c['ram']:.2f} + {c['disk']:.2f} + {c['s3_storage']:.2f} + {c['s3_requests']:.2f} = "
                   f"**{c['total']:,.2f}** ({c['total_resident']:,.2f}) |")
    pr = res["prices"]
    out += ["", f"Cost model (edit `PRICES` in `benchmarks/compare.py`): RAM ${pr['ram_gib_month']}/GiB-month (memory-"
            f"optimised EC2), local disk ${pr['disk_gb_month']}/GB-month (EBS gp3), S3 ${pr['s3_gb_month']}/GB-month and "
            f"${pr['s3_get_per_1k']} per 1,000 GETs; requests at a sustained {res['cost_qps']} queries/s. RAM, disk and "
            "S3 bytes are scaled linearly to 1M vectors, except the engine's fixed RAM (libraries and an empty "
            "engine, measured before ingest). RAM is billed on what cannot be reclaimed: the process's anonymous "
            "memory (over a bare interpreter with numpy) plus Redis's used_memory; file-backed pages (memory-mapped "
            "segments, LMDB, the block cache) are page cache the kernel drops under pressure and re-reads from local "
            "disk -- the figure in parentheses bills them as RAM too."]
    if "memory_map" in ts:
        out += ["", "tierstore's resident memory by mapping (after the workload):", "",
                "| mapping | MiB |", "|---|---:|"]
        groups: dict[str, int] = {}
        for name, b in ts["memory_map"].items():
            key = name.split("/seg-")[0] + " segments" if "/seg-" in name else name
            groups[key] = groups.get(key, 0) + b
        for name, b in sorted(groups.items(), key=lambda kv: -kv[1]):
            if b >= 2**20:
                out.append(f"| {name} | {mib(b)} |")
    if "tier_ms" in ts:
        out += ["", "### tierstore: where a query's time goes", "",
                "| tier | searched in % of queries | p50 ms | p95 ms |", "|---|---:|---:|---:|"]
        for t, v in ts["tier_ms"].items():
            if v["p50"] is not None:
                out.append(f"| {t} | {v['searched_share']:.0%} | {v['p50']:.2f} | {v['p95']:.2f} |")
    if "profile" in ts:
        pf = ts["profile"]
        out += ["", f"cProfile over {pf['queries']} stream queries ({pf['ms_per_query']:.2f} ms of profiled time per "
                "query; own time, top 8):", "", "| function | calls/query | own ms/query | cumulative ms/query |",
                "|---|---:|---:|---:|"]
        for r in pf["by_own"][:8]:
            out.append(f"| `{r['function']}` | {r['calls_per_query']:.1f} | {r['own_ms_per_query']:.3f} | "
                       f"{r['cum_ms_per_query']:.3f} |")
    if "windows" in ts:
        out += ["", "### tierstore: hot hit ratio over time", "",
                "| queries | hot share of results | hot top-1 | p50 ms | recall@10 | hot / warm / cold | moves so far |",
                "|---:|---:|---:|---:|---:|---|---:|"]
        for w in ts["windows"]:
            c = w["tiers"]
            out.append(f"| {w['queries']} | {w['hot_results']:.1%} | {w['hot_top1']:.1%} | {w['p50_ms']:.2f} | "
                       f"{w['recall@10']:.3f} | {c.get('hot')} / {c.get('warm')} / {c.get('cold')} | {w['moves']} |")
    out += ["", "### Recall vs latency (each engine's own knob; uniform sample of the pool)", "",
            "| engine | setting | recall@10 | p50 ms | p99 ms |", "|---|---|---:|---:|---:|"]
    for k in ok:
        for pt in sorted(e[k]["sweep"], key=lambda x: x["recall@10"]):
            setting = ", ".join(f"{a} {b}" for a, b in pt["point"].items() if b is not None) or "default"
            out.append(f"| {k} | {setting} | {pt['recall@10']:.3f} | {pt['p50_ms']:.2f} | {pt['p99_ms']:.1f} |")
    out += [""] + [f"![{k}]({v})" for k, v in figs.items()] + [""]
    return "\n".join(out)


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="wordnet-minilm directory, or a .npy of vectors (rows held out as queries)")
    ap.add_argument("--scale", action="store_true", help="generated clustered data, 1M x 384 (--n to change)")
    ap.add_argument("--n", type=int, help="rows to use")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20k rows, short stream, < 5 min")
    ap.add_argument("--stream", type=int, help="queries in the skewed stream (default 8000; quick 1600)")
    ap.add_argument("--filtered", type=int, help="filtered queries (default 200; quick 50)")
    ap.add_argument("--engines", default=",".join(ORDER), help="comma-separated subset of " + ",".join(ORDER))
    ap.add_argument("--policy-interval", default="2s")
    ap.add_argument("--policy-half-life", default="auto")
    ap.add_argument("--no-repeats", action="store_true",
                    help="tierstore without its repeat cache: every query of the stream searched as a new one "
                         "(free-text queries rarely repeat as the same vector)")
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    ap.add_argument("--out", help="result JSON (default benchmarks/results/<date>-<dataset>.json)")
    ap.add_argument("--render", metavar="JSON", help="re-derive costs and goals (e.g. after editing PRICES), "
                    "plots and the RESULTS.md section from a result file, without running anything")
    args = ap.parse_args(argv)
    if args.render:
        path = Path(args.render)
        res = json.loads(path.read_text())
        res["prices"], res["cost_qps"] = PRICES, COST_QPS
        derive(res)
        publish(res, path, render(res, plots(res, path.with_suffix(""))), args.results_md,
                json.dumps(res, indent=1, default=str))
        return 0
    if args.quick:
        args.n = args.n or 20_000
    args.stream = args.stream or (1600 if args.quick else 8000)
    args.filtered = args.filtered or (50 if args.quick else 200)
    args.caps = {"default": 4000 if not args.quick else 800, "exact": 1000 if not args.quick else 200,
                 "lancedb-local": 2000 if not args.quick else 300, "lancedb-s3": 400 if not args.quick else 100}
    args.qps_seconds = 3.0 if args.quick else 8.0
    args.sweep = 60 if args.quick else 200
    args.profile = 100 if args.quick else 400
    args.engine_timeout = 3600 if args.scale else 1800
    args.engines = [x for x in args.engines.split(",") if x]
    bad = [x for x in args.engines if x not in ORDER]
    if bad:
        raise SystemExit(f"unknown engine(s) {bad}; choose from {ORDER}")
    res = run(args, command("benchmarks.compare", argv))
    out = Path(args.out) if args.out else REPO / f"benchmarks/results/{res['date']}-{res['dataset']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    figs = plots(res, out.with_suffix(""))
    publish(res, out, render(res, figs), args.results_md, json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
