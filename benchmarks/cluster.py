"""Hot tier on 1 vs 3 shards, and Redis memory per vector by encoding (issue 7).

Dataset: the first ``--n`` rows of wordnet-minilm (default 20k x 384, with its three filterable
fields pos/lexname/nlemmas) and ``--queries`` of its queries, exact ground truth.

1. **1 vs 3 shards** -- the same store config (``tiers="hot"`` only: cold off, warm empty, no
   policy thread) on one standalone redis-server and on a local 3-master Redis Cluster
   (:class:`tierstore.testing.servers.RedisCluster`, RediSearch on every master), same machine, same
   server binary and settings (no persistence): ingest rate (``upsert`` batches of 1000, each
   returning once RediSearch has inserted it), single-query latency p50/p99 and recall@10 at
   ef 64, and ``query_batch`` throughput (100 queries per call). On the cluster a query goes to
   the three masters in parallel threads and is merged client-side.
2. **Memory per vector** (``INFO memory`` used_memory delta / n, vectors + index + metadata, on the
   standalone server, emptied between runs) for the store with RediSearch FLOAT32 (the default),
   RediSearch FLOAT16 (``hot.vector_type = "float16"``: 2k fetched, re-scored on the exact
   vectors) and vector sets Q8 (``hot.backend = "vectorset"``), each with its recall and latency;
   the cluster's FLOAT32 figure is the sum over its masters.

Run (~2 min on 2 cores)::

    .venv/bin/python -m benchmarks.cluster                   # n=20000, 300 queries
    .venv/bin/python -m benchmarks.cluster --n 3000 --queries 100 --results-md ''   # smoke test

Prints a table, writes JSON to ``--out`` (default ``benchmarks/results/cluster-<date>-n<N>.json``)
and replaces the "## Hot tier: cluster and memory (issue 7)" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import tierstore
from tierstore import datasets
from tierstore.services import RedisServer
from tierstore.testing.servers import RedisCluster

from .common import REPO, command, log, publish

DEFAULT_DATA = datasets.find_wordnet() or REPO.parent / "shared/data/wordnet-minilm"
SECTION = "## Hot tier: cluster and memory (issue 7)"
SCHEMA = {"pos": "tag", "lexname": "tag", "nlemmas": "numeric"}
K, EF, BATCH, QBATCH = 10, 64, 1000, 100


def used_memory(clients) -> int:
    return sum(int(c.info("memory")["used_memory"]) for c in clients)


def keyspace_overhead(clients) -> int:
    """Bytes of the main keyspace's hash tables (MEMORY STATS): in cluster mode one per slot."""
    total = 0
    for c in clients:
        db = c.execute_command("MEMORY", "STATS").get(b"db.0") or {}
        total += int(db.get(b"overhead.hashtable.main", 0))
    return total


def open_store(path: Path, url: str, dim: int, **hot: Any) -> tierstore.TierStore:
    return tierstore.open(path=str(path), dim=dim, env={}, schema=SCHEMA, cold={"enabled": False},
                          policy={"interval": 0}, store={"repeat_cache": 0},
                          hot={"redis_url": url, "capacity": 10_000_000, "ef_runtime": EF, **hot})


def ingest(store: tierstore.TierStore, ds: datasets.Dataset) -> float:
    t0 = time.perf_counter()
    for s in range(0, len(ds.base), BATCH):
        store.upsert(list(range(s, min(s + BATCH, len(ds.base)))), ds.base[s : s + BATCH], ds.metadata[s : s + BATCH])
    return len(ds.base) / (time.perf_counter() - t0)


def queries(store: tierstore.TierStore, ds: datasets.Dataset) -> dict[str, float]:
    for q in ds.queries[:50]:  # warm-up
        store.query(q, k=K, tiers=["hot"])
    lat, found = [], []
    for q in ds.queries:
        t0 = time.perf_counter()
        hits = store.query(q, k=K, tiers=["hot"])
        lat.append(time.perf_counter() - t0)
        assert not hits.partial
        found.append(hits.ids())
    t0 = time.perf_counter()
    n = 0
    for s in range(0, len(ds.queries), QBATCH):
        n += len(store.query_batch(ds.queries[s : s + QBATCH], k=K, tiers=["hot"]))
    qps = n / (time.perf_counter() - t0)
    ms = np.array(lat) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "recall_at_10": datasets.recall_at(found, ds.gt, K), "batch_qps": qps}


def run_store(tmp: Path, name: str, url: str, clients, ds: datasets.Dataset, **hot: Any) -> dict[str, Any]:
    before = used_memory(clients)
    store = open_store(tmp / name, url, ds.base.shape[1], **hot)
    try:
        rate = ingest(store, ds)
        after = used_memory(clients)
        out = {"ingest_per_s": rate, "bytes_per_vector": (after - before) / len(ds.base),
               "keyspace_overhead_bytes": keyspace_overhead(clients), **queries(store, ds)}
        info = store.stats()["tiers"]["hot"]
        if info.get("cluster"):
            out["docs_per_master"] = [sh["num_docs"] for sh in info["shards"]]
        log(f"{name}: {out}")
        return out
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    args = ap.parse_args(argv)
    ds = datasets.load_wordnet(args.data, n=args.n, queries=args.queries)
    log(f"{ds.name}: {ds.base.shape}, {len(ds.queries)} queries")
    res: dict[str, Any] = {"dataset": ds.name, "n": len(ds.base), "queries": len(ds.queries), "k": K, "ef": EF,
                           "schema": SCHEMA, "machine": {"cpus": __import__("os").cpu_count(),
                                                         "python": sys.version.split()[0], "platform": platform.platform()},
                           "command": command("benchmarks.cluster", sys.argv[1:] if argv is None else argv)}
    with tempfile.TemporaryDirectory(prefix="tierstore-bench-cluster-") as d:
        tmp = Path(d)
        single = RedisServer(tmp / "redis", port=0, appendonly=False).start()
        cluster = RedisCluster(tmp / "cluster", masters=3).start()
        try:
            sc = single.client()
            cc = [cluster.client(i) for i in range(3)]
            res["search_1_shard"] = run_store(tmp, "one", single.url, [sc], ds)
            res["search_3_shards"] = run_store(tmp, "three", cluster.url, cc, ds)
            sc.flushall()
            res["search_float16"] = run_store(tmp, "f16", single.url, [sc], ds, vector_type="float16")
            sc.flushall()
            res["vectorset_q8"] = run_store(tmp, "vset", single.url, [sc], ds, backend="vectorset")
        finally:
            cluster.stop()
            single.stop()
    one, three, f16, vs = (res[k] for k in ("search_1_shard", "search_3_shards", "search_float16", "vectorset_q8"))
    date = datetime.date.today().isoformat()
    section = "\n".join([
        SECTION, "",
        f"{ds.name}, first {len(ds.base):,} rows x {ds.base.shape[1]} dims with 3 filterable fields, "
        f"{len(ds.queries)} queries, k={K}, ef={EF}, M=16, `tiers=\"hot\"`; one 2-core machine, servers without "
        f"persistence; {date}. Command: `{res['command']}`.", "",
        "| | 1 shard (standalone) | 3 shards (Redis Cluster) |",
        "|---|---|---|",
        f"| ingest (upsert batches of 1000) | {one['ingest_per_s']:,.0f} /s | {three['ingest_per_s']:,.0f} /s |",
        f"| query p50 / p99 | {one['p50_ms']:.2f} / {one['p99_ms']:.2f} ms | {three['p50_ms']:.2f} / {three['p99_ms']:.2f} ms |",
        f"| recall@10 | {one['recall_at_10']:.3f} | {three['recall_at_10']:.3f} |",
        f"| query_batch throughput (100 per call) | {one['batch_qps']:,.0f} q/s | {three['batch_qps']:,.0f} q/s |",
        f"| Redis memory per vector | {one['bytes_per_vector']:,.0f} B | {three['bytes_per_vector']:,.0f} B (sum of masters) |",
        f"| of which the keyspace's hash tables (MEMORY STATS, all masters) | {one['keyspace_overhead_bytes'] / 2**20:.1f} MiB "
        f"| {three['keyspace_overhead_bytes'] / 2**20:.1f} MiB |",
        f"| vectors per master | {len(ds.base):,} | {' / '.join(f'{n:,}' for n in three.get('docs_per_master', []))} |",
        "",
        "Reading it: every master answers each query, so on one machine the fan-out costs three searches "
        "(sent together, read in turn) and the merge per query (p50 up, batch throughput down), while "
        "ingest gains from three "
        "redis-server processes inserting into three smaller HNSW graphs in parallel; recall is higher "
        "because each master's graph holds a third of the vectors at the same ef. The extra memory per "
        "vector on three masters is Redis Cluster's keyspace: one hash table per slot (about 1.8 KiB for "
        "each of the 16,384 slots once it holds a key: a fixed ~30 MiB, not a per-vector cost, so it "
        "fades as the data grows). On separate machines each master holds a third of the vectors and "
        "their memory. FLOAT16 halves the vector bytes (two copies per vector: the hash and the index) "
        "at the same recall (the rerank of 2k candidates on the exact vectors costs a fraction of a ms "
        "per query); vector sets Q8 are the smallest. Latencies vary by ~30% between runs on this "
        "shared machine.",
        "",
        "| hot encoding (1 shard) | Redis memory per vector | recall@10 | p50 / p99 | ingest |",
        "|---|---|---|---|---|",
        *(f"| {name} | {r['bytes_per_vector']:,.0f} B | {r['recall_at_10']:.3f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms "
          f"| {r['ingest_per_s']:,.0f} /s |" for name, r in (
              ('RediSearch FLOAT32 (`hot.vector_type = "float32"`)', one),
              ('RediSearch FLOAT16 (`hot.vector_type = "float16"`, exact rerank of 2k)', f16),
              ('vector set Q8 (`hot.backend = "vectorset"`)', vs))),
    ])
    out = args.out or REPO / f"benchmarks/results/cluster-{date}-n{len(ds.base)}.json"
    publish(res, out, section, args.results_md)


if __name__ == "__main__":
    main()
