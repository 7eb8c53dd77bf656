"""The long crash campaign: kill -9 the writer (and its redis-server / S3 server) at random points
of ``open()`` and of every operation, on both hot backends, with the store's own embedded
redis-server and with an external one, and check every acknowledged write by content after each
crash (the harness: ``tests/chaos/``; what is checked: ``tests/chaos/chaos_model.check_store``).

Each configuration (``--configs``, default all four of search|vectorset x embedded|external) runs
``--trials / len(configs)`` trials on one store that accumulates history (``--size`` live vectors,
kept near that size), then a last open that only checks. A trial = one worker process: open,
check the previous crash, random operations, SIGKILL at the planned point.

Run::

    .venv/bin/python -m benchmarks.chaos                       # 240 trials, ~25 min on 2 cores
    .venv/bin/python -m benchmarks.chaos --trials 20 --configs search-embedded   # smoke

Writes ``benchmarks/results/chaos-<date>.json`` (every trial and every violation, with its seed)
and ``chaos-<date>.md`` (the table), and replaces the "## Crash campaign" section of
``benchmarks/RESULTS.md`` (``--results-md ''`` skips that). Worker logs stay under ``--workdir``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .common import REPO, command, log, publish

sys.path.insert(0, str(REPO / "tests" / "chaos"))

from chaos_harness import OP_KINDS, Campaign  # noqa: E402

SECTION = "## Crash campaign (issue 14): kill -9 of the writer and its servers, content checked"
CONFIGS = ("search-embedded", "search-external", "vectorset-embedded", "vectorset-external")


def run_config(name: str, trials: int, seed: int, size: int, workdir: Path, src: str | None = None) -> dict[str, Any]:
    backend, redis = name.split("-")
    camp = Campaign(workdir / name, backend=backend, redis=redis, seed=seed, size=size, verbose=True, src=src)
    t0 = time.time()
    try:
        for _ in range(trials):
            camp.trial()
        camp.final_check()
    finally:
        camp.close()
    s = camp.summary()
    s["seconds"] = round(time.time() - t0, 1)
    s["trial_log"] = [{k: r.get(k) for k in ("trial", "seed", "plan", "hit", "killed", "killed_servers", "ops",
                                              "errors", "open_error")} for r in camp.trials]
    s["workdir"] = str(workdir / name)
    return s


def table(res: dict[str, Any]) -> str:
    rows = ["| configuration | trials | kill -9 | in open | in an op (kinds) | redis / S3 killed | checks | "
            "violations (checks with) | kinds |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in res["configs"]:
        kp = s["kill_points"]
        ops = {k[3:]: v for k, v in kp.items() if k.startswith("op:")}
        sk = s["server_kills"]
        rows.append(f"| {s['backend']} / {s['redis']} redis | {s['trials']} | {s['kills']} | {kp.get('open', 0)} | "
                    f"{sum(ops.values())} ({len(ops)}/{len(OP_KINDS)}) | {sk.get('redis', 0)} / {sk.get('s3', 0)} | "
                    f"{s['checks']} | {s['violations']} ({s['checks_with_violations']}) | "
                    f"{', '.join(f'{k}: {v}' for k, v in sorted(s['violation_kinds'].items())) or '-'} |")
    t = res["total"]
    rows.append(f"| **all** | {t['trials']} | {t['kills']} | {t['kill_points'].get('open', 0)} | "
                f"{sum(v for k, v in t['kill_points'].items() if k.startswith('op:'))} | "
                f"{t['server_kills'].get('redis', 0)} / {t['server_kills'].get('s3', 0)} | {t['checks']} | "
                f"{t['violations']} ({t['checks_with_violations']}) | "
                f"{', '.join(f'{k}: {v}' for k, v in sorted(t['violation_kinds'].items())) or '-'} |")
    kp = Counter()
    for s in res["configs"]:
        kp.update(s["kill_points"])
    rows += ["", "Where the kills landed (all configurations): " +
             ", ".join(f"{k} {v}" for k, v in sorted(kp.items())) + "."]
    return "\n".join(rows)


def violations_md(res: dict[str, Any], limit: int = 30) -> str:
    out = []
    for s in res["configs"]:
        for c in s["failures"]:
            kills = "; ".join(
                f"trial {k['trial']} (worker seed {k['seed']}) {k['phase']}"
                + (f" in {k['op']} after {k['in_op_s']} s" if k.get("op") else "")
                + (f" + {'/'.join(k['servers'])} killed" if k.get("servers") else "")
                for k in c["after_kills"]) or "none (an error in this open)"
            items = "; ".join(f"{i['kind']}" + (f" id {i['id']}" if "id" in i else "")
                              + (f" ({i.get('scope')})" if i.get("scope") else "")
                              + (f": {i['msg'][:120]}" if i.get("msg") else "") for i in c["items"][:3])
            out.append(f"- {s['backend']}/{s['redis']}, check in trial {c['trial']}: {c['violations']} "
                       f"({', '.join(f'{k} {v}' for k, v in c['kinds'].items())}) after {kills}. E.g. {items}")
    if len(out) > limit:
        out = out[:limit] + [f"- ... {len(out) - limit} more in the JSON"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=240, help="trials in all (split over the configurations)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--size", type=int, default=400, help="live vectors per store (kept near it)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}")
    ap.add_argument("--workdir", default=None, help="stores, servers and worker logs (default: a new temp dir)")
    ap.add_argument("--src", default=None, help="run the workers on the tierstore package in this directory "
                    "(e.g. an older commit: git archive <commit> tierstore | tar -x -C DIR); default: this checkout")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    a = ap.parse_args(argv)
    # SIGTERM (and SIGINT where a background shell ignores it) unwinds: workers and servers stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"--configs: unknown {c!r}")
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="tierstore-chaos-"))
    per = -(-a.trials // len(configs))
    log(f"chaos: {per} trials x {configs}, seed {a.seed}, size {a.size}, workdir {workdir}")
    t0 = time.time()
    results = [run_config(c, per, a.seed, a.size, workdir, a.src) for c in configs]
    total: dict[str, Any] = {"trials": 0, "kills": 0, "checks": 0, "violations": 0, "checks_with_violations": 0}
    kinds, kp, sk = Counter(), Counter(), Counter()
    for s in results:
        for k in total:
            total[k] += s[k]
        kinds.update(s["violation_kinds"])
        kp.update(s["kill_points"])
        sk.update(s["server_kills"])
    total.update(violation_kinds=dict(kinds), kill_points=dict(kp), server_kills=dict(sk))
    date = datetime.date.today().isoformat()
    res = {"benchmark": "chaos", "date": date, "command": command("benchmarks.chaos", sys.argv[1:] if argv is None else argv),
           "machine": {"platform": platform.platform(), "python": platform.python_version()},
           "seed": a.seed, "size": a.size, "src": a.src, "seconds": round(time.time() - t0, 1), "total": total, "configs": results}
    tab = table(res)
    viol = violations_md(res)
    section = "\n".join([
        SECTION, "",
        f"`{res['command']}` ({date}, {res['seconds'] / 60:.0f} min on 2 shared cores; seed {a.seed}, "
        f"~{a.size} live vectors per store, dim 32, hot {max(20, a.size // 4)} / warm {max(20, a.size // 3)} "
        "vectors, the rest in S3). A trial: a worker opens the store, checks the previous crash, runs seeded "
        "random operations (upsert new / existing ids with and without tier=, delete, move to every tier, "
        "touch + run_policy, compact, flush) logging an fsync'd intent before and an ack after each call, "
        "and is SIGKILLed at a planned point: inside open(), or inside an operation of a chosen kind, "
        "sometimes with the redis-server and/or the S3 server killed in the same instant or a moment "
        "before. A check: get() of every id ever written returns exactly its last acknowledged vector "
        "(float32 equality) and metadata (or one of the candidates of a call the worker died in), deleted "
        "ids are absent, scan() has no duplicate or unknown id and agrees with len(), every live id's own "
        "vector queried with tiers=[its tier] (k 1-3) returns it first at distance ~0, and so does a query "
        "over all tiers (100 live ids per check), Redis's copy of every hot vector is the acknowledged one "
        "(RediSearch: the hash's bytes; vector sets: VEMB by cosine), verify() is ok (deep, downloading "
        "every cold object, every 4th check and the last); open() and the check must not raise.", "",
        tab, "",
        *(["Violations (the kills since the previous check, and the first items):", "", viol, ""] if viol else []),
    ])
    out = Path(a.out) if a.out else REPO / f"benchmarks/results/chaos-{date}.json"
    out.with_suffix(".md").parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(section + "\n")
    publish(res, out, section, a.results_md or None)
    return 0 if total["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
