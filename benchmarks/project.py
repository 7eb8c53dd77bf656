"""Per-vector costs measured by a ``benchmarks.compare`` run, and a projection to a larger store.

Reads the result JSON of a compare run (``--scale``: 1M x 384, 10/30/60 split) and prints a
markdown table: for tierstore and all-in-Redis, what each measured figure costs per vector (the
fixed share -- libraries, an empty engine -- taken out once) and what it comes to at ``--to``
vectors (default 10M) with the same split. Only linear terms are projected: RAM that grows with
the data, Redis memory, local disk and S3 bytes; the policy cycle's planning is a numba pass over
dense per-slot arrays (linear too). Query latency is not projected: it is measured, not modelled
(the cold probe budget grows with sqrt(cold rows)).

Run::

    .venv/bin/python -m benchmarks.project benchmarks/results/<run>.json [--to 10000000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .compare import PRICES


def per_vector(r: dict[str, Any], n: int) -> dict[str, float]:
    """Bytes per vector of each measured figure (RAM without its fixed share)."""
    ram = r["ram"]
    fixed_anon = max(0, r["rss_open"]["RssAnon"] - r["rss_baseline"]["RssAnon"])
    return {"anon": max(0, ram["client_anon"] - fixed_anon) / n, "redis": ram["redis_used_memory"] / n,
            "disk": r["disk_bytes"] / n, "s3": r["s3_bytes"] / n, "fixed_anon": fixed_anon}


def project(res: dict[str, Any], to: int) -> str:
    n = res["params"]["n"]
    rows = [f"| engine | figure | per vector (measured at {n:,}) | at {to:,} vectors | $/month at {to:,} |",
            "|---|---|---:|---:|---:|"]
    price = {"anon": PRICES["ram_gib_month"] / 2**30, "redis": PRICES["ram_gib_month"] / 2**30,
             "disk": PRICES["disk_gb_month"] / 1e9, "s3": PRICES["s3_gb_month"] / 1e9}
    names = {"anon": "client anonymous RAM (grows with the data)", "redis": "Redis used_memory",
             "disk": "local disk", "s3": "S3 stored"}
    for eng, r in res["engines"].items():
        if "ram" not in r:
            continue
        pv = per_vector(r, n)
        total = 0.0
        for key in ("anon", "redis", "disk", "s3"):
            at = pv[key] * to + (pv["fixed_anon"] if key == "anon" else 0)
            cost = at * price[key]
            total += cost
            rows.append(f"| {eng} | {names[key]} | {pv[key]:,.0f} B | {at / 2**30:,.2f} GiB | {cost:,.2f} |")
        rows.append(f"| {eng} | **total (no S3 requests)** | | | **{total:,.2f}** |")
    pol = res["engines"].get("tierstore", {}).get("details", {}).get("policy", {}).get("last_cycle") or {}
    out = "\n".join(rows)
    if pol:
        out += (f"\n\nLast policy cycle of the run: {pol.get('seconds', 0):.2f} s for {sum((pol.get('moved') or {}).values())} "
                f"moves ({pol.get('planned')} planned).")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.project", description=__doc__.split("\n")[0])
    ap.add_argument("result", help="a benchmarks.compare result JSON")
    ap.add_argument("--to", type=int, default=10_000_000, help="vectors to project to")
    args = ap.parse_args(argv)
    print(project(json.loads(Path(args.result).read_text()), args.to))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
