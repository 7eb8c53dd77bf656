"""Restart figures: how soon a reopened store answers, and how soon it is at full speed.

A store with everything embedded (its own redis-server with RediSearch, its own S3 server), as
a new user runs it. Three ways the service comes back, each measured in a fresh process:

- ``close``: the service closed the store cleanly, then a new process opens it;
- ``kill-service``: the service was killed with SIGKILL while it had the store open (its
  redis-server dies with it), then a new process opens it;
- ``kill-redis``: the service keeps running and its redis-server is killed with SIGKILL; the
  store restarts it and answers on (measured from the kill, in the service).

Per scenario: ``open()`` seconds, seconds to the first complete answer (from the start of
``open()``, or from the kill), whether the hot share came from the catalog stand-in meanwhile,
p50 of queries while standing in, seconds until Redis is verified again (full speed), p50
after, and whether each probe vector found itself first (content, not presence).

    python -m benchmarks.restart                     # 100k all hot (wordnet-minilm), 1M with 100k hot
    python -m benchmarks.restart --sizes 100000      # one size
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, command, log, publish

PROBES = 50
SCENARIOS = ("close", "kill-service", "kill-redis")


def _data(n: int) -> np.ndarray:
    from tierstore import datasets

    path = datasets.find_wordnet()
    if n <= 100_000 and path is not None:
        return datasets.load_wordnet(path, n=n, queries=10).base.astype(np.float32)
    return datasets.clustered(n, 384, queries=10).base.astype(np.float32)


def _cfg(path: str, hot_n: int, backend: str) -> dict:
    return {"store": {"path": path, "dim": 384}, "hot": {"capacity": hot_n, "backend": backend},
            "policy": {"interval": 0}}


# --- the worker (a separate process: the "service") ------------------------------------------------


def worker(mode: str, path: str, n: int, hot_n: int, backend: str) -> None:
    import tierstore

    x = _data(n)
    probes = np.random.default_rng(1).choice(hot_n, PROBES, replace=False)
    cfg = _cfg(path, hot_n, backend)
    if mode == "build":
        t0 = time.perf_counter()
        with tierstore.open(cfg) as s:
            for i in range(0, hot_n, 10_000):
                s.upsert(list(range(i, min(hot_n, i + 10_000))), x[i : min(hot_n, i + 10_000)], tier="hot")
            for i in range(hot_n, n, 100_000):
                s.upsert(list(range(i, min(n, i + 100_000))), x[i : min(n, i + 100_000)], tier="cold")
        print(json.dumps({"build_s": time.perf_counter() - t0}), flush=True)
        return
    t0 = time.perf_counter()
    s = tierstore.open(cfg)
    out = {"open_s": time.perf_counter() - t0}
    if mode == "hold":  # the service: open, say so, wait to be killed (or to have Redis killed)
        print(json.dumps({"ready": True}), flush=True)
        while s.hot.standby_reason is not None:
            time.sleep(0.1)
        print(json.dumps({"verified": True}), flush=True)
        sys.stdin.readline()  # the harness kills Redis, then writes a line
        t0 = time.perf_counter()
    out.update(_measure(s, x, probes, t0))
    s.close()
    print(json.dumps(out), flush=True)


def _measure(s, x: np.ndarray, probes: np.ndarray, t0: float) -> dict:
    lat_standby, found, first = [], 0, None
    standby_seen = False
    i = 0
    deadline = time.perf_counter() + 900
    while time.perf_counter() < deadline:
        p = int(probes[i % len(probes)])
        i += 1
        t = time.perf_counter()
        try:
            hits = s.query(x[p], k=10)
        except Exception:  # noqa: BLE001 - a restart in progress; keep asking
            time.sleep(0.05)
            continue
        dt = time.perf_counter() - t
        if first is None and not hits.partial:
            first = time.perf_counter() - t0
        if "standby" in hits.tiers["hot"].details:
            standby_seen = True
            lat_standby.append(dt)
            found += int(hits[0].id == p)
            time.sleep(0.1)  # a service's trickle of queries, not a loop that starves Redis's load
        if first is not None and s.hot.standby_reason is None:
            break
    full = time.perf_counter() - t0
    after, found_after = [], 0
    for p in probes:
        t = time.perf_counter()
        hits = s.query(x[p], k=10)
        after.append(time.perf_counter() - t)
        found_after += int(hits[0].id == int(p))
    return {"first_answer_s": first, "standby_seen": standby_seen, "full_speed_s": full,
            "standby_queries": len(lat_standby),
            "standby_p50_ms": 1000 * float(np.median(lat_standby)) if lat_standby else None,
            "standby_found_self": f"{found}/{len(lat_standby)}",
            "after_p50_ms": 1000 * float(np.median(after)), "after_found_self": f"{found_after}/{len(probes)}"}


# --- the harness ---------------------------------------------------------------------------------


def _run(args: list[str], stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.restart", "--worker", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None, text=True)


def _last_json(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=1800)
    return json.loads(out.strip().splitlines()[-1])


def _line(proc: subprocess.Popen) -> dict:
    return json.loads(proc.stdout.readline())


def _serving(w: list[str]) -> subprocess.Popen:
    """A service process holding the store open, once Redis serves it (verified)."""
    svc = _run(["hold", *w], stdin=True)
    _line(svc)  # opened
    _line(svc)  # verified
    return svc


def one_size(n: int, hot_n: int, backend: str, root: Path, scenarios: tuple[str, ...] = SCENARIOS) -> dict:
    path = str(root / f"store-{n}-{backend}")
    log(f"{n} vectors ({hot_n} hot, {backend}): building")
    w = [path, str(n), str(hot_n), backend]
    res: dict = {"n": n, "hot": hot_n, "backend": backend, **_last_json(_run(["build", *w]))}
    log(f"built in {res['build_s']:.0f}s; reopen after close()")
    res["close"] = _last_json(_run(["measure", *w]))
    log(f"close: {res['close']}")
    if "kill-service" not in scenarios:
        return res
    svc = _serving(w)
    svc.kill()
    svc.wait()
    time.sleep(1)
    res["kill_service"] = _last_json(_run(["measure", *w]))
    log(f"kill -9 of the service: {res['kill_service']}")
    if "kill-redis" not in scenarios:
        return res
    svc = _serving(w)
    pid = int((Path(path) / "redis" / "redis-server.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    svc.stdin.write("go\n")
    svc.stdin.flush()
    res["kill_redis"] = _last_json(svc)
    log(f"kill -9 of redis: {res['kill_redis']}")
    return res


def table(results: list[dict]) -> str:
    rows = ["| store | how it came back | open() s | first complete answer s | answered from catalog meanwhile | "
            "p50 meanwhile ms | full speed s | p50 after ms | probes found themselves |",
            "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in results:
        for key, label in (("close", "close(), new process"), ("kill_service", "kill -9 of the service"),
                           ("kill_redis", "kill -9 of its redis-server")):
            if key not in r:
                continue
            m = r[key]
            rows.append(f"| {r['n']:,} ({r['hot']:,} hot, {r['backend']}) | {label} | "
                        f"{m['open_s']:.2f} | {m['first_answer_s']:.2f} | {'yes' if m['standby_seen'] else 'no'} | "
                        f"{m['standby_p50_ms'] or 0:.1f} | {m['full_speed_s']:.1f} | {m['after_p50_ms']:.2f} | "
                        f"{m['standby_found_self']} meanwhile, {m['after_found_self']} after |"
                        if key != "kill_redis" else
                        f"| {r['n']:,} ({r['hot']:,} hot, {r['backend']}) | {label} | (running) | {m['first_answer_s']:.2f} | "
                        f"{'yes' if m['standby_seen'] else 'no'} | {m['standby_p50_ms'] or 0:.1f} | "
                        f"{m['full_speed_s']:.1f} | {m['after_p50_ms']:.2f} | "
                        f"{m['standby_found_self']} meanwhile, {m['after_found_self']} after |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="store sizes (comma-separated)")
    ap.add_argument("--hot", type=int, default=100_000, help="hot vectors (at most the size)")
    ap.add_argument("--backends", default="search,vectorset",
                    help="hot backends; the first runs at every size, the others at the smallest")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="close[,kill-service[,kill-redis]] (each needs the ones before it)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="tierstore-restart-") as d:
        sizes = [int(s) for s in args.sizes.split(",")]
        backends = args.backends.split(",")
        for n in sizes:
            for backend in backends if n == min(sizes) else backends[:1]:
                results.append(one_size(n, min(n, args.hot), backend, Path(d), tuple(args.scenarios.split(","))))
    section = "\n".join([
        "## Restart (issue 14): time to first answer and to full speed",
        "",
        f"`{command('benchmarks.restart', argv)}` — everything embedded (redis-server 8.2 + RediSearch, "
        "weed mini), 384-d, one run on this 2-core machine. The hot share is served from the catalog "
        "(exact scan) while Redis replays its AOF; 'full speed' is when Redis is verified again.",
        "",
        table(results),
        ""])
    out = Path(args.out or REPO / f"benchmarks/results/restart-{time.strftime('%Y-%m-%d')}.json")
    publish({"command": command("benchmarks.restart", argv), "results": results}, out, section, args.results_md)


if __name__ == "__main__":
    main()
