"""Hot-tier benchmark: tierstore's Redis + RediSearch HNSW tier against bare redis-py, same server.

Dataset: wordnet-minilm (100k x 384 MiniLM embeddings, float16, unit length; 1k queries; exact
top-100 ground truth), at ``<repo>/../shared/data/wordnet-minilm`` unless ``--data`` says otherwise.

Everything runs against ONE embedded redis-server (RediSearch loaded, AOF everysec, unix socket),
so store and baseline share the hardware, the server build and its settings:

1. Ingest -- ``store.upsert`` of the first N rows (int ids, no metadata) in batches of 1000: LMDB
   commit + pipelined HSET + RediSearch's synchronous HNSW insert. Then a bare redis-py pipelined
   HSET loop of the same rows and batch size into a hand-made index with the store's exact
   FT.CREATE parameters. Both are timed until FT.INFO reports the index complete. The store goes
   first so its memory delta is taken on an otherwise empty server. Goal: store/bare >= 0.80.
   Automatic AOF rewrites are off: 100k vectors cross the 64 MB/100% thresholds at different points
   of the two ingests (measured: 2 rewrites in the store's, 1 in the bare one), which is server noise.
2. Query latency -- for EF_RUNTIME 32, 64, 128, one thread: ``store.query(q, k=10, ef=ef)`` vs a
   bare ``FT.SEARCH`` of the same KNN on the store's own index (same graph, so the difference is
   purely client-side overhead). The two alternate per query, swapping which goes first, to
   cancel drift; a warm-up pass precedes. p50/p99 and recall@10. Goal: p50 store/bare <= 1.15.
3. Batch throughput -- ``store.query_batch`` of 100 queries at ef 64 vs a bare 100-command pipeline.
4. Memory -- ``INFO memory`` used_memory delta around the store ingest / N, and FT.INFO
   vector_index_sz_mb of the store's index.

Ground truth: the dataset's top-100 when N = 100000; for a smaller N, exact brute force over the
first N rows with the dataset's recipe (f16 -> f32, renormalise, dot product, ties to lower row).

Run (a full run takes ~5 min on 2 cores: RediSearch inserts 700-900 vectors/s at 100k, twice)::

    .venv/bin/python -m benchmarks.hot                              # n=100000, 1000 queries
    .venv/bin/python -m benchmarks.hot --n 5000 --queries 200           # smoke test, ~10 s

It prints the results, writes JSON to ``--out`` (default ``benchmarks/results/hot-<date>-n<N>.json``)
and replaces the "## Hot tier (issue 2)" section of ``benchmarks/RESULTS.md`` (``--results-md ''``
skips that).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

import tierstore
from tierstore import datasets
from tierstore.services import RedisServer

from .common import REPO, command, log, publish

DEFAULT_DATA = datasets.find_wordnet() or REPO.parent / "shared/data/wordnet-minilm"
SECTION = "## Hot tier (issue 2)"
K = 10
EFS = (32, 64, 128)
INGEST_BATCH = 1000
QUERY_BATCH = 100
BATCH_EF = 64
BATCH_REPS = 3
GOAL_INGEST = 0.80  # store/bare vectors per second, at least
GOAL_QUERY = 1.15  # store/bare p50 latency, at most
BARE_INDEX, BARE_PREFIX = "bare", "bare:"


# --- data --------------------------------------------------------------------------------------


def load_data(data: Path, n: int, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not 2 * K < n <= 100_000:
        raise SystemExit(f"--n must be in {2 * K + 1}..100000")
    ds = datasets.load_wordnet(data, n=n, queries=nq)  # ground truth recomputed for a prefix
    return ds.base, ds.queries, ds.gt[:, :K]


def recall(found: list[list[int]], gt: np.ndarray) -> float:
    return datasets.recall_at(found, gt, K)


# --- redis helpers -----------------------------------------------------------------------------


def as_dict(reply: Any) -> dict:
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=False))


def as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def ft_info(r: redis.Redis, index: str) -> dict:
    return as_dict(r.execute_command("FT.INFO", index))


def wait_indexed(r: redis.Redis, index: str, timeout: float = 900.0) -> None:
    # HSET indexes synchronously today, but a background scan (e.g. FT.CREATE over existing keys)
    # would not be; the timed region must end only when the index can answer correctly.
    deadline = time.monotonic() + timeout
    while True:
        info = ft_info(r, index)
        if float(as_str(info.get(b"percent_indexed", 1))) >= 1.0 and int(info.get(b"indexing", 0)) == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{index} still indexing after {timeout}s")
        time.sleep(0.02)


def knn_args(index: str, field: str, q: np.ndarray, ef: int, k: int = K) -> list:
    """The same FT.SEARCH that tierstore's HotTier sends for an unfiltered query."""
    return ["FT.SEARCH", index, f"*=>[KNN {k} @{field} $q EF_RUNTIME {ef} AS __d]", "PARAMS", "2", "q",
            q.tobytes(), "RETURN", "1", "__d", "SORTBY", "__d", "LIMIT", "0", str(k), "DIALECT", "2"]


def reply_keys(reply: Any) -> list[bytes]:
    return [row[b"id"] for row in as_dict(reply).get(b"results", [])]


def percentiles_ms(ns: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(ns, [50, 99]) / 1e6
    return {"p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(ns.mean() / 1e6)}


# --- measurements ------------------------------------------------------------------------------


def ingest_interleaved(store: tierstore.TierStore, r: redis.Redis, base: np.ndarray) -> tuple[dict, dict, dict]:
    """Ingest the same rows twice, alternating batch by batch: ``store.upsert`` into the store's
    index and a bare pipelined HSET into a twin index. Alternating (and swapping who goes first)
    makes both writers see the same graph size, allocator state and machine noise -- running
    them one after the other gave bare/store swings of +-25 % between identical runs."""
    n = len(base)
    t_store = t_bare = 0.0
    mem0 = int(r.info("memory")["used_memory"])
    for b, s in enumerate(range(0, n, INGEST_BATCH)):
        e = min(s + INGEST_BATCH, n)
        for who in ("store", "bare") if b % 2 == 0 else ("bare", "store"):
            t0 = time.perf_counter()
            if who == "store":
                store.upsert(list(range(s, e)), base[s:e])
                t_store += time.perf_counter() - t0
            else:
                pipe = r.pipeline(transaction=False)
                for i in range(s, e):
                    pipe.hset(f"{BARE_PREFIX}{i}", "v", base[i].tobytes())
                pipe.execute()
                t_bare += time.perf_counter() - t0
    for index in (store.hot.index, BARE_INDEX):  # HSET indexes synchronously; check anyway
        wait_indexed(r, index)
    bare_mb = float(as_str(ft_info(r, BARE_INDEX).get(b"vector_index_sz_mb", 0)))
    return ({"seconds": t_store, "vectors_per_s": n / t_store},
            {"seconds": t_bare, "vectors_per_s": n / t_bare, "vector_index_sz_mb": bare_mb}, {"mem0": mem0})


def store_memory(store: tierstore.TierStore, r: redis.Redis, mem0: int, n: int, dim: int) -> dict:
    """The store's share of used_memory: drop the twin index with its hashes, see what remains."""
    mem1 = int(r.info("memory")["used_memory"])
    r.execute_command("FT.DROPINDEX", BARE_INDEX, "DD")
    mem2 = int(r.info("memory")["used_memory"])
    store_mb = float(as_str(ft_info(r, store.hot.index).get(b"vector_index_sz_mb", 0)))
    return {"used_memory_delta_bytes": mem2 - mem0, "bytes_per_vector": (mem2 - mem0) / n,
            "both_indexes_delta_bytes": mem1 - mem0,
            "vector_index_sz_mb": store_mb, "vector_index_bytes_per_vector": store_mb * 2**20 / n,
            "raw_float32_bytes_per_vector": dim * 4}


def create_bare_index(r: redis.Redis, store: tierstore.TierStore) -> None:
    # Mirror SearchHotTier._create_index exactly (STOPWORDS 0, 12 HNSW args incl. EF_RUNTIME), taking
    # the numbers from the store's own config so the two indexes cannot drift apart. Created on
    # an empty keyspace: FT.CREATE over existing keys starts a background scan, and HSETs racing
    # it get indexed twice (measured: ~2x slower ingest, recall@10 0.92 vs 0.96 at n=5000).
    hot = store.config.hot
    vec = ["TYPE", "FLOAT32", "DIM", str(store.dim), "DISTANCE_METRIC", store.metric.upper(),
           "M", str(hot.m), "EF_CONSTRUCTION", str(hot.ef_construction), "EF_RUNTIME", str(hot.ef_runtime)]
    r.execute_command("FT.CREATE", BARE_INDEX, "ON", "HASH", "PREFIX", "1", BARE_PREFIX, "STOPWORDS", "0",
                      "SCHEMA", "v", "VECTOR", "HNSW", str(len(vec)), *vec)
    wait_indexed(r, BARE_INDEX)


def query_latency(store: tierstore.TierStore, r: redis.Redis, queries: np.ndarray, gt: np.ndarray,
                  ef: int, key_row: dict[bytes, int]) -> dict:
    nq, index = len(queries), store.hot.index
    t_store, t_bare = np.empty(nq), np.empty(nq)
    found_store: list[list[int]] = []
    replies = []
    for i, q in enumerate(queries):
        # Alternate, and swap which side goes first, so drift and cache effects hit both equally.
        for side in ("store", "bare") if i % 2 == 0 else ("bare", "store"):
            if side == "store":
                t0 = time.perf_counter_ns()
                hits = store.query(q, k=K, ef=ef)
                t_store[i] = time.perf_counter_ns() - t0
                found_store.append(hits.ids())
            else:
                t0 = time.perf_counter_ns()
                reply = r.execute_command(*knn_args(index, "__v", q, ef))
                t_bare[i] = time.perf_counter_ns() - t0
                replies.append(reply)  # decoded to rows outside the timed region
    found_bare = [[key_row[k] for k in reply_keys(rep)] for rep in replies]
    # The bare index from step 1 (optional sanity check that both graphs are equally good).
    found_bidx = [[int(k[len(BARE_PREFIX):]) for k in reply_keys(r.execute_command(*knn_args(BARE_INDEX, "v", q, ef)))]
                  for q in queries]
    s, b = percentiles_ms(t_store), percentiles_ms(t_bare)
    return {"ef": ef, "store": {**s, "recall@10": recall(found_store, gt)},
            "bare": {**b, "recall@10": recall(found_bare, gt)},
            "bare_index_recall@10": recall(found_bidx, gt),
            "p50_ratio": s["p50_ms"] / b["p50_ms"],
            "overhead_us_median": float(np.median(t_store - t_bare) / 1e3)}


def batch_throughput(store: tierstore.TierStore, r: redis.Redis, queries: np.ndarray, gt: np.ndarray,
                     key_row: dict[bytes, int]) -> dict:
    nq, index = len(queries), store.hot.index
    times: dict[str, list[float]] = {"store": [], "bare": []}
    found: list[list[int]] = []
    for _ in range(BATCH_REPS):  # alternate whole passes; report the median pass
        t0 = time.perf_counter()
        hits = [h for s in range(0, nq, QUERY_BATCH)
                for h in store.query_batch(queries[s : s + QUERY_BATCH], k=K, ef=BATCH_EF)]
        times["store"].append(time.perf_counter() - t0)
        found = [h.ids() for h in hits]
        t0 = time.perf_counter()
        replies = []
        for s in range(0, nq, QUERY_BATCH):
            pipe = r.pipeline(transaction=False)
            for q in queries[s : s + QUERY_BATCH]:
                pipe.execute_command(*knn_args(index, "__v", q, BATCH_EF))
            replies.extend(pipe.execute())
        times["bare"].append(time.perf_counter() - t0)
    store_qps, bare_qps = (nq / float(np.median(times[k])) for k in ("store", "bare"))
    found_bare = [[key_row[k] for k in reply_keys(rep)] for rep in replies]
    return {"ef": BATCH_EF, "batch": QUERY_BATCH, "store_qps": store_qps, "bare_qps": bare_qps,
            "ratio": store_qps / bare_qps, "store_recall@10": recall(found, gt),
            "bare_recall@10": recall(found_bare, gt)}


def search_version(ver: Any) -> str | None:
    """MODULE LIST reports RediSearch 2.10.5 as 21005."""
    return None if ver is None else f"{int(ver) // 10000}.{int(ver) // 100 % 100}.{int(ver) % 100}"


def machine_info(r: redis.Redis) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    modules = {as_str(as_dict(m).get(b"name")): as_dict(m).get(b"ver") for m in r.execute_command("MODULE", "LIST")}
    try:
        import hiredis
        hiredis_version = hiredis.__version__
    except ImportError:
        hiredis_version = None
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "redis_py": redis.__version__,
            "hiredis": hiredis_version, "redis_server": as_str(r.info("server")["redis_version"]),
            "redisearch": search_version(modules.get("search")), "tierstore": tierstore.__version__}


def run(args: argparse.Namespace, command: str) -> dict:
    log(f"loading {args.data} (n={args.n}, queries={args.queries})")
    base, queries, gt = load_data(args.data, args.n, args.queries)
    n, dim = base.shape
    tmp = Path(tempfile.mkdtemp(prefix="tierstore-bench-hot-"))
    # Same settings as the store's embedded server, minus automatic AOF rewrites (see docstring).
    server = RedisServer(tmp / "redis", extra_args=["--auto-aof-rewrite-percentage", "0"])
    store = r = None
    try:
        server.start()
        r = redis.Redis.from_url(server.url, protocol=3)
        store = tierstore.open(path=str(tmp / "store"), dim=dim, metric="cosine",
                               hot={"redis_url": server.url, "capacity": n + 10})
        create_bare_index(r, store)
        log(f"ingest: store.upsert and bare pipelined HSET of {n} vectors, alternating batches")
        st, bare, mem = ingest_interleaved(store, r, base)
        log(f"  store {st['vectors_per_s']:.0f} vec/s, bare {bare['vectors_per_s']:.0f} vec/s")
        key_row = {store.hot.key(store.catalog.iid(i)).encode(): i for i in range(n)}
        log("warm-up pass")
        for q in queries:
            store.query(q, k=K, ef=max(EFS))
            r.execute_command(*knn_args(store.hot.index, "__v", q, max(EFS)))
        lat = []
        for ef in EFS:
            log(f"query latency ef={ef}")
            lat.append(query_latency(store, r, queries, gt, ef, key_row))
        log(f"query_batch throughput ef={BATCH_EF}")
        batch = batch_throughput(store, r, queries, gt, key_row)
        memory = store_memory(store, r, mem["mem0"], n, dim)
        machine = machine_info(r)
        machine["aof_rewrites"] = int(r.info("persistence")["aof_rewrites"])  # expected 0
    finally:
        if store is not None:
            store.close()
        if r is not None:
            r.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = st["vectors_per_s"] / bare["vectors_per_s"]
    return {
        "benchmark": "hot", "date": datetime.date.today().isoformat(), "command": command,
        "machine": machine,
        "params": {"n": n, "queries": len(queries), "dim": dim, "metric": "cosine", "k": K,
                   "data": str(args.data), "ingest_batch": INGEST_BATCH, "efs": list(EFS),
                   "hnsw": {"M": store.config.hot.m, "EF_CONSTRUCTION": store.config.hot.ef_construction},
                   "ground_truth": "dataset gt_ids" if n == 100_000 else f"numpy brute force over first {n} rows"},
        "ingest": {"store": st, "bare": bare, "ratio": ratio, "goal_min": GOAL_INGEST, "ok": ratio >= GOAL_INGEST},
        "query": [{**x, "goal_max": GOAL_QUERY, "ok": x["p50_ratio"] <= GOAL_QUERY} for x in lat],
        "batch": batch,
        "memory": memory,
    }


# --- reporting ---------------------------------------------------------------------------------


def render_markdown(res: dict) -> str:
    """The results as the RESULTS.md section (also what is printed to stdout)."""
    m, p, ing, mem, b = res["machine"], res["params"], res["ingest"], res["memory"], res["batch"]
    ok = {True: "yes", False: "**NO**"}
    out = [SECTION, "",
           f"Command: `{res['command']}` ({res['date']})", "",
           f"Machine: {m['cpu_count']} CPUs ({m['cpu']}), Python {m['python']}, numpy {m['numpy']}, "
           f"redis-py {m['redis_py']} (hiredis {m['hiredis']}), redis-server {m['redis_server']}, "
           f"RediSearch {m['redisearch']}; one embedded server (AOF everysec, auto-rewrite off: "
           f"{m['aof_rewrites']} rewrites; unix socket) for store and baseline.",
           "",
           f"Data: wordnet-minilm, n = {p['n']} x {p['dim']}-d (cosine), {p['queries']} queries, k = {p['k']}, "
           f"HNSW M = {p['hnsw']['M']}, EF_CONSTRUCTION = {p['hnsw']['EF_CONSTRUCTION']}; "
           f"ground truth: {p['ground_truth']}.", "",
           f"**Ingest** (batches of {p['ingest_batch']}, store and bare alternating batch by batch on the same server; each side's time summed)", "",
           "| writer | seconds | vectors/s |", "|---|---:|---:|",
           f"| `store.upsert` | {ing['store']['seconds']:.1f} | {ing['store']['vectors_per_s']:.0f} |",
           f"| bare redis-py pipelined HSET | {ing['bare']['seconds']:.1f} | {ing['bare']['vectors_per_s']:.0f} |",
           f"| ratio store/bare (goal >= {ing['goal_min']:.2f}) | | **{ing['ratio']:.2f}** ({ok[ing['ok']]}) |", "",
           "**Single-query latency** (one thread; store and bare FT.SEARCH on the store's own index "
           "alternate per query after a warm-up pass; ms)", "",
           "| ef | store p50 | store p99 | bare p50 | bare p99 | p50 ratio (goal <= 1.15) | "
           "median overhead | recall@10 store | recall@10 bare | recall@10 bare index |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for q in res["query"]:
        s, bb = q["store"], q["bare"]
        out.append(f"| {q['ef']} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {bb['p50_ms']:.3f} | {bb['p99_ms']:.3f} | "
                   f"**{q['p50_ratio']:.2f}** ({ok[q['ok']]}) | {q['overhead_us_median']:.0f} us | "
                   f"{s['recall@10']:.3f} | {bb['recall@10']:.3f} | {q['bare_index_recall@10']:.3f} |")
    out += ["", f"**Batch**: `store.query_batch` of {b['batch']} at ef {b['ef']}: {b['store_qps']:.0f} queries/s "
            f"vs bare {b['batch']}-command pipeline {b['bare_qps']:.0f} queries/s (ratio {b['ratio']:.2f}; "
            f"recall@10 {b['store_recall@10']:.3f} / {b['bare_recall@10']:.3f}).", "",
            f"**Redis memory** (the store's share: both ingests minus what dropping the twin index freed): used_memory +{mem['used_memory_delta_bytes'] / 2**20:.1f} MiB "
            f"= {mem['bytes_per_vector']:.0f} B/vector (raw float32 vector: {mem['raw_float32_bytes_per_vector']} B); "
            f"FT.INFO vector_index_sz_mb {mem['vector_index_sz_mb']:.1f} = "
            f"{mem['vector_index_bytes_per_vector']:.0f} B/vector "
            f"(bare index: {res['ingest']['bare']['vector_index_sz_mb']:.1f} MB).", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hot", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="base vectors to ingest (default all 100000)")
    ap.add_argument("--queries", type=int, default=1000, help="queries to time (default all 1000)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="wordnet-minilm directory")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/hot-<date>-n<N>.json)")
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"),
                    help="markdown file whose hot-tier section is replaced ('' = don't)")
    args = ap.parse_args(argv)
    res = run(args, command("benchmarks.hot", argv))
    out = args.out or REPO / f"benchmarks/results/hot-{res['date']}-n{res['params']['n']}.json"
    publish(res, out, render_markdown(res), args.results_md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
