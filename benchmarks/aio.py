"""The asyncio API (issue 20): does the event loop stay responsive, and is throughput kept?

One store on wordnet-minilm (first ``--n`` rows, a third each in hot, warm and cold via
``tier=``; a private redis-server + RediSearch and SeaweedFS S3; the policy off, so nothing moves
during the runs). Every mode answers the same ``--queries`` queries (drawn uniformly from the
dataset's real queries, k = 10) with ``--concurrency`` (64) in flight:

- ``async``: 64 tasks on one event loop, each ``await store.query()`` in turn, on a
  ``tierstore.aio`` store with its default pool (``min(8, 4 * cpus)`` workers), with 2 and with 64;
- ``sync``: the sync store driven by a ``ThreadPoolExecutor`` of 64 threads, and of the async
  default pool's size, each thread running queries in turn;
- ``idle``: no queries (the ticker's floor: the loop's own timer granularity).

In every mode a ticker task on the main thread's event loop sleeps 1 ms and records how late it
wakes: the loop's stall. In the sync modes that loop does nothing else, so its stalls are what the
queries' threads cost any loop in the process (the GIL), the floor the async store can reach. The
same ticker in a separate process (no GIL shared) gives the machine's scheduling floor, and the
loop thread's CPU time per callback shows how long work *on* the loop (tierstore.aio's hand-overs)
ever blocks it.
Modes are interleaved in ``--rounds`` rounds after one warm-up pass over every query (caches
filled for all modes alike); the table gives each mode's median over rounds and the spread.

Run::

    .venv/bin/python -m benchmarks.aio                       # 20k rows, 3 rounds, ~3 min
    .venv/bin/python -m benchmarks.aio --n 5000 --queries 500 --rounds 1   # smoke, ~1 min

Writes ``benchmarks/results/aio-<date>.json`` and replaces the "## Async API (issue 20)" section
of ``benchmarks/RESULTS.md`` (``--results-md ''`` skips that).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .common import REPO, command, log, publish, servers

K = 10
SECTION = "## Async API (issue 20): event-loop stalls and throughput with 64 queries in flight"


def load(args: argparse.Namespace) -> Any:
    from tierstore import datasets

    path = datasets.find_wordnet(args.data)
    if path is None:
        log("wordnet-minilm not found: generated clustered data")
        return "clustered", datasets.clustered(args.n, 384, queries=300)
    return "wordnet-minilm", datasets.load_wordnet(path, n=args.n, queries=1000)


def config(path: Path, redis_url: str, endpoint: str, n: int, dim: int) -> dict[str, Any]:
    return {"path": str(path), "dim": dim, "env": {}, "schema": {"lexname": "tag"},
            "hot": {"redis_url": redis_url, "capacity": n},
            "warm": {"capacity": n, "segment_size": max(10_000, n)},
            "cold": {"url": "s3://tierstore/aio", "endpoint_url": endpoint, "segment_size": max(10_000, n)},
            "policy": {"interval": 0, "promote_interval": 0}}


class CallbackClock:
    """Instrumentation: the loop thread's CPU time inside each callback it runs (asyncio's
    ``Handle._run``; tasks' steps run there too). That is the loop blocked by work *on* it --
    tierstore.aio's hand-overs -- apart from waiting for the CPU or the GIL, which the ticker sees."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.original = asyncio.events.Handle._run

    def __enter__(self) -> CallbackClock:
        original, cpu = self.original, self.cpu
        self.gc: list[tuple[int, float]] = []
        self.gc_started = 0.0

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                self.gc_started = time.perf_counter()
            else:
                self.gc.append((info["generation"], time.perf_counter() - self.gc_started))

        self.on_gc = on_gc
        gc.callbacks.append(on_gc)

        def timed(handle: Any) -> None:
            t = time.thread_time()
            original(handle)
            cpu.append(time.thread_time() - t)

        asyncio.events.Handle._run = timed
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self.original
        gc.callbacks.remove(self.on_gc)


OUTSIDE = """
import json, sys, threading, time
late, stop = [], threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    t = time.perf_counter(); time.sleep(0.001); late.append(time.perf_counter() - t - 0.001)
print(json.dumps(late))
"""


async def ticker(stop: asyncio.Event, late: list[float]) -> None:
    """Sleep 1 ms at a time; record how late each wake-up is (seconds)."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append(time.perf_counter() - t - 0.001)


def summary(late: list[float], lat: list[float], found: list[list[Any]], gt: np.ndarray, order: np.ndarray,
            seconds: float) -> dict[str, Any]:
    a = np.asarray(late) * 1000
    out: dict[str, Any] = {"ticks": len(a), "stall_p50_ms": float(np.percentile(a, 50)),
                           "stall_p99_ms": float(np.percentile(a, 99)), "stall_max_ms": float(a.max()),
                           "stalls_over_2ms": int((a > 2).sum()), "seconds": seconds}
    if lat:
        b = np.asarray(lat) * 1000
        hits = sum(len(set(ids) & set(gt[q, :K].tolist())) for ids, q in zip(found, order, strict=True))
        out.update(queries=len(lat), qps=len(lat) / seconds, p50_ms=float(np.percentile(b, 50)),
                   p99_ms=float(np.percentile(b, 99)), recall=hits / (K * len(lat)))
    return out


async def run_async(astore: Any, qs: np.ndarray, order: np.ndarray, concurrency: int) -> tuple[list, list, float]:
    lat: list[float] = [0.0] * len(order)
    found: list[list[Any]] = [[] for _ in order]
    todo = iter(range(len(order)))

    async def client() -> None:
        for i in todo:
            t = time.perf_counter()
            found[i] = (await astore.query(qs[order[i]], k=K)).ids()
            lat[i] = time.perf_counter() - t

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return lat, found, time.perf_counter() - t0


async def run_sync(store: Any, qs: np.ndarray, order: np.ndarray, threads: int) -> tuple[list, list, float]:
    lat: list[float] = [0.0] * len(order)
    found: list[list[Any]] = [[] for _ in order]
    counter = itertools.count()  # next() on it is atomic under the GIL

    def worker() -> None:
        while (i := next(counter)) < len(order):
            t = time.perf_counter()
            found[i] = store.query(qs[order[i]], k=K).ids()
            lat[i] = time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-sync") as pool:
        t0 = time.perf_counter()
        await asyncio.gather(*(asyncio.wrap_future(pool.submit(worker)) for _ in range(threads)))
        return lat, found, time.perf_counter() - t0


async def one_mode(mode: str, workers: int, store: Any, ds: Any, order: np.ndarray, concurrency: int,
                   idle_s: float) -> dict[str, Any]:
    import tierstore.aio

    stop, late = asyncio.Event(), []
    tick = asyncio.create_task(ticker(stop, late))
    outside = subprocess.Popen([sys.executable, "-c", OUTSIDE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    lat: list[float] = []
    found: list[list[Any]] = []
    with CallbackClock() as clock:
        if mode == "idle":
            t0 = time.perf_counter()
            await asyncio.sleep(idle_s)
            secs = time.perf_counter() - t0
        elif mode == "async":
            astore = tierstore.aio.AsyncTierStore(store, max_workers=workers, close_store=False)
            lat, found, secs = await run_async(astore, ds.queries, order, concurrency)
            await astore.close()
        else:
            lat, found, secs = await run_sync(store, ds.queries, order, workers)
        stop.set()
        await tick
    far = np.asarray(json.loads(outside.communicate("")[0])) * 1000
    res = {"mode": mode, "workers": workers, **summary(late, lat, found, ds.gt, order, secs),
           "outside_stall_p99_ms": float(np.percentile(far, 99))}
    cpu = np.asarray(clock.cpu) * 1000
    res.update(callback_cpu_p99_ms=float(np.percentile(cpu, 99)), callback_cpu_max_ms=float(cpu.max()),
               loop_cpu_s=float(cpu.sum() / 1000),
               gc_max_ms=max((d * 1000 for _g, d in clock.gc), default=0.0),
               gc_gen2=sum(1 for g, _d in clock.gc if g == 2))
    q = f"{res['qps']:.0f} q/s, p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, " if lat else ""
    log(f"  {mode:5s} workers={workers:2d}: {q}loop stall p99 {res['stall_p99_ms']:.2f} ms "
        f"(another process: {res['outside_stall_p99_ms']:.2f}), "
        f"max {res['stall_max_ms']:.1f} ms; longest callback {res['callback_cpu_max_ms']:.2f} ms CPU, "
        f"loop CPU {res['loop_cpu_s']:.2f} s; gc max {res['gc_max_ms']:.1f} ms, {res['gc_gen2']} gen-2")
    return res


def run(args: argparse.Namespace, cmd: str) -> dict[str, Any]:
    import tierstore
    import tierstore.aio

    name, ds = load(args)
    n, dim = ds.base.shape
    default = tierstore.aio.default_workers()

    def sizes(spec: str) -> list[int]:
        return [default if w == "default" else int(w) for w in spec.split(",") if w]

    modes = [("idle", 0), *(("async", w) for w in sizes(args.async_workers)),
             *(("sync", w) for w in sizes(args.sync_workers))]
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "command": cmd,
                           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                           "params": {"data": name, "n": n, "queries": args.queries, "concurrency": args.concurrency,
                                      "rounds": args.rounds, "k": K, "default_workers": default,
                                      "switch_interval_s": sys.getswitchinterval()},
                           "runs": []}
    rng = np.random.default_rng(args.seed)
    with servers("aio") as (tmp, redis_url, s3):
        store = tierstore.open(**config(tmp / "store", redis_url, s3.endpoint_url, n, dim))
        try:
            metas = [{"lexname": m.get("lexname", "none")} for m in ds.metadata] or [None] * n
            third = n // 3
            for tier, lo, hi in (("hot", 0, third), ("warm", third, 2 * third), ("cold", 2 * third, n)):
                for s in range(lo, hi, 10_000):
                    e = min(hi, s + 10_000)
                    store.upsert(list(range(s, e)), ds.base[s:e], metas[s:e], tier=tier)
            store.flush()
            store.compact()
            counts = {t: v["count"] for t, v in store.stats()["tiers"].items()}
            res["params"]["tiers"] = counts
            log(f"store: {counts}; warm-up pass over {len(ds.queries)} queries")
            store.query_batch(ds.queries, k=K)
            for q in ds.queries:
                store.query(q, k=K)
            for r in range(args.rounds):
                order = rng.integers(0, len(ds.queries), args.queries)
                log(f"round {r + 1}/{args.rounds}")
                for mode, workers in modes:
                    out = asyncio.run(one_mode(mode, workers, store, ds, order, args.concurrency, args.idle))
                    res["runs"].append({"round": r, **out})
        finally:
            store.close()
    derive(res)
    return res


def derive(res: dict[str, Any]) -> None:
    """Per mode: the median of each number over rounds, and min-max; the goals checked."""
    table = []
    for key in dict.fromkeys((r["mode"], r["workers"]) for r in res["runs"]):
        rs = [r for r in res["runs"] if (r["mode"], r["workers"]) == key]
        row: dict[str, Any] = {"mode": key[0], "workers": key[1]}
        for f in ("qps", "p50_ms", "p99_ms", "recall", "stall_p50_ms", "stall_p99_ms", "stall_max_ms",
                  "callback_cpu_max_ms", "loop_cpu_s", "outside_stall_p99_ms"):
            vals = [r[f] for r in rs if f in r]
            if vals:
                row[f] = statistics.median(vals)
                row[f + "_range"] = [min(vals), max(vals)]
        table.append(row)
    res["table"] = table
    by = {(r["mode"], r["workers"]): r for r in table}
    d = res["params"]["default_workers"]
    key = ("async", d) if ("async", d) in by else next((r["mode"], r["workers"]) for r in table if r["mode"] == "async")
    ratios = []  # per round: the async default pool against the round's best sync pool
    for r in sorted({r["round"] for r in res["runs"]}):
        rs = [x for x in res["runs"] if x["round"] == r]
        a = next(x["qps"] for x in rs if (x["mode"], x["workers"]) == key)
        ratios.append(a / max(x["qps"] for x in rs if x["mode"] == "sync"))
    res["goals"] = {"workers": key[1], "stall_p99_ms": by[key]["stall_p99_ms"],
                    "stall_p99_ms<=2": by[key]["stall_p99_ms"] <= 2.0,
                    "qps_ratio": statistics.median(ratios), "qps_ratio_range": [min(ratios), max(ratios)],
                    "qps_ratio>=0.9": statistics.median(ratios) >= 0.9}


def render(res: dict[str, Any]) -> str:
    p = res["params"]
    tiers = ", ".join(f"{v:,} {t}" for t, v in p["tiers"].items())
    out = [SECTION, "", f"Command: `{res['command']}` ({res['date']}); {res['machine']['cpu_count']} CPUs shared "
           "by the queries, redis-server + RediSearch and SeaweedFS.", "",
           f"{p['data']}, {p['n']:,} rows ({tiers}), {p['queries']:,} queries per mode drawn uniformly from the "
           f"dataset's queries, k = {K}, {p['concurrency']} in flight; modes interleaved over {p['rounds']} "
           "round(s) after a warm-up pass; median over rounds [min-max]. *Loop stall*: how late a task sleeping "
           "1 ms on the event loop wakes (in the sync modes the loop runs only that task, beside the query threads).",
           "Latency: from the call to the answer (async: waiting for a worker included; sync: each thread's own "
           "calls). The same ticker in another process (no GIL shared) gives the machine's own scheduling floor; "
           "*longest callback*: the loop thread's CPU time in its longest callback (work done on the loop).",
           "", "| mode | workers | queries/s | p50 ms | p99 ms | recall@10 | loop stall p50 ms | p99 ms | max ms | "
           "stall p99 in another process ms | longest callback ms CPU |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(row: dict[str, Any], f: str, fmt: str) -> str:
        if f not in row:
            return "-"
        lo, hi = row[f + "_range"]
        return f"{row[f]:{fmt}}" + (f" [{lo:{fmt}}-{hi:{fmt}}]" if p["rounds"] > 1 else "")

    names = {"idle": "idle loop (no queries)", "async": "`await store.query()` x 64 tasks, tierstore.aio",
             "sync": "sync `store.query()` on a ThreadPoolExecutor"}
    for row in res["table"]:
        out.append(f"| {names[row['mode']]} | {row['workers'] or '-'} | {cell(row, 'qps', ',.0f')} | "
                   f"{cell(row, 'p50_ms', '.1f')} | {cell(row, 'p99_ms', '.1f')} | {cell(row, 'recall', '.3f')} | "
                   f"{cell(row, 'stall_p50_ms', '.2f')} | {cell(row, 'stall_p99_ms', '.2f')} | "
                   f"{cell(row, 'stall_max_ms', '.1f')} | {cell(row, 'outside_stall_p99_ms', '.2f')} | "
                   f"{cell(row, 'callback_cpu_max_ms', '.2f')} |")
    g = res["goals"]
    lo, hi = g["qps_ratio_range"]
    out += ["", f"Goals, with the default pool ({g['workers']} workers): loop stall p99 <= 2 ms: "
            f"**{'met' if g['stall_p99_ms<=2'] else 'missed'}** ({g['stall_p99_ms']:.2f} ms); async throughput / the "
            f"round's best sync pool >= 0.9x: **{'met' if g['qps_ratio>=0.9'] else 'missed'}** "
            f"({g['qps_ratio']:.2f}x, rounds {lo:.2f}-{hi:.2f}x).", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.aio", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="wordnet rows (a third per tier)")
    ap.add_argument("--queries", type=int, default=3000, help="queries per mode and round")
    ap.add_argument("--concurrency", type=int, default=64, help="queries in flight")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (the modes interleaved in each)")
    ap.add_argument("--idle", type=float, default=2.0, help="seconds of the idle-loop mode")
    ap.add_argument("--async-workers", default="default,2,64",
                    help="pool sizes of the async modes ('default': tierstore.aio.default_workers())")
    ap.add_argument("--sync-workers", default="64,default", help="thread counts of the sync modes")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval() for the run (0: Python's default, 5 ms)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="wordnet-minilm directory")
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    args = ap.parse_args(argv)
    res = run(args, command("benchmarks.aio", argv))
    publish(res, REPO / f"benchmarks/results/aio-{res['date']}.json", render(res), args.results_md,
            json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
