"""Commands that move or repair what a store holds: ``move``, ``policy``, ``migrate``,
``compact``, ``verify`` and ``rebuild-hot``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import migrate
from .common import EXIT_INTEGRITY, EXIT_OK, Progress, UsageError, emit, open_existing


def cmd_move(args: argparse.Namespace) -> int:
    ids = _read_ids(Path(args.id_file), args.int_ids)
    with open_existing(args) as store:
        rep = store.move(ids, args.tier, defer=args.defer)
    emit({"tier": rep.tier, "moved": rep.moved, "already": rep.already, "missing": rep.missing,
           "queued": rep.queued, "seconds": round(rep.seconds, 2)}, args.json)
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    if args.read_only and not args.dry_run:
        raise UsageError("--read-only plans only: add --dry-run (a policy cycle moves vectors: the writer runs it)")
    with open_existing(args, reads_only=args.dry_run) as store:
        progress: Progress | None = None
        if not args.dry_run:
            plan = store.run_policy(dry_run=True, examples=0)
            progress = Progress(plan.total_planned - plan.deferred, "moving") if plan.total_planned else None
        rep = store.policy.run(dry_run=args.dry_run, examples=args.examples,
                               progress=(lambda d, n: progress.update(n)) if progress else None)
        if progress is not None:
            progress.close()
        if store.read_only:
            rep.warnings.append("read-only: planned from the access counts the writer saved at its last policy "
                                "cycle, flush or close (accesses since then are not counted yet)")
    if args.json:
        emit(rep.to_dict(), True)
        return EXIT_OK
    head = "plan (dry run: nothing moved)" if rep.dry_run else "policy cycle"
    print(f"{head}: {rep.vectors} vectors, {rep.total_planned} moves planned in {rep.seconds:.2f}s")
    print("  budgets:   " + ", ".join(f"{t} {n:,}" for t, n in rep.budgets.items()))
    print("  before:    " + ", ".join(f"{t} {n:,}" for t, n in rep.before.items()))
    print("  after:     " + ", ".join(f"{t} {n:,}" for t, n in rep.after.items()))
    print("  thresholds (decayed accesses to hold a place): "
          + (", ".join(f"{t} {v:.3g}" for t, v in rep.thresholds.items()) or "none"))
    print(f"  pinned: {rep.pinned}  in grace period: {rep.in_grace}  deferred by max_moves_per_cycle: {rep.deferred}")
    print("  half-life: " + half_life_line(rep.half_life))
    for d, n in rep.planned.items():
        done = f", moved {rep.moved.get(d, 0):,}" if not rep.dry_run else ""
        print(f"  {d:<11} {n:>9,}{done}")
    if rep.skipped:
        print(f"  skipped (changed while moving): {rep.skipped}")
    for w in rep.warnings:
        print(f"  warning: {w}")
    if rep.moves:
        print("examples:")
        for m in rep.moves:
            print(f"  {m.id!r:<24} {m.src}->{m.dst:<5} {m.reason}")
    return EXIT_OK


def half_life_line(hl: dict | None) -> str:
    """The half-life the policy used and, with ``half_life = "auto"``, the shadow hit ratios
    that chose it (issue 18)."""
    if not hl:
        return "n/a"
    if hl.get("mode") == "writer's" or (hl.get("mode") == "fixed" and hl.get("seconds") is None):
        return "the writer's (a read-only process plans from the access counts the writer last saved)"
    if hl.get("mode") == "fixed":
        return f"fixed, {hl['seconds']:g} s (wall time)"
    if hl.get("accesses") is None:
        return "auto (logical time): not chosen yet -- the first cycle measures a cycle's traffic"
    line = f"auto (logical time): {hl['accesses']:,.0f} accesses"
    shadows = hl.get("smoothed") or hl.get("shadow_hit_ratios")
    if shadows:
        best = max(shadows, key=shadows.get)
        line += "; shadow hit ratios (smoothed) " + ", ".join(
            f"{float(h):,.0f}: {r:.3f}{' *' if h == best else ''}" for h, r in shadows.items())
    else:
        line += f"; candidates {', '.join(f'{h:,.0f}' for h in hl.get('candidates') or [])}, shadows not scored yet " \
                "(they are scored from the second cycle of a process on)"
    return line


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.resume and (args.filter or args.ids):
        raise UsageError("--resume takes the selection of the interrupted run; do not pass --filter/--ids")
    if not args.resume and bool(args.filter) == bool(args.ids):
        raise UsageError("pass exactly one of --filter JSON or --ids FILE (or --resume)")
    with open_existing(args) as store:
        job = migrate.saved_job(store)
        if args.resume:
            if job is None:
                raise UsageError("nothing to resume: no interrupted `tierstore migrate` in this store")
        else:
            if job is not None:
                print(f"note: replacing an interrupted migrate to {job['tier']} ({job['done']}/{job['total']} done)",
                      file=sys.stderr)
            if not args.tier:
                raise UsageError("--tier is required")
            job = {"tier": args.tier, "filter": json.loads(args.filter) if args.filter else None,
                   "from": args.from_tier, "ids": _read_ids(Path(args.ids), args.int_ids) if args.ids else None}
        ids = migrate.select(store, job)
        job.update(total=len(ids), done=0)
        progress = Progress(len(ids), f"migrate -> {job['tier']}")
        rep = migrate.run_job(store, job, ids, args.batch_size, progress.update)
        secs = progress.close()
    emit({"tier": job["tier"], "selected": len(ids), "moved": rep.moved, "already": rep.already,
           "missing": rep.missing, "seconds": round(secs, 2)}, args.json)
    return EXIT_OK


def _read_ids(path: Path, int_ids: bool) -> list:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    ids: list = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if int_ids:
        try:
            ids = [int(x) for x in ids]
        except ValueError as exc:
            raise UsageError(f"{path}: --int-ids given but {exc}") from None
    return ids


def cmd_verify(args: argparse.Namespace) -> int:
    if args.read_only and args.repair:
        raise UsageError("--repair rewrites damaged segments: run it without --read-only (in the writer)")
    with open_existing(args, reads_only=not args.repair) as store:
        bar = Progress(None, "verify")
        try:
            rep = store.verify(deep=not args.quick, repair=args.repair, progress=bar.callback)
        finally:
            rep_secs = bar.close()
        rep["seconds"] = round(rep_secs, 2)
    if args.json:
        emit(rep, True)
    else:
        problems = rep.pop("problems")
        emit(rep, False)
        for p in problems:
            print(f"PROBLEM: {p}")
    return EXIT_OK if rep["ok"] else EXIT_INTEGRITY


def cmd_compact(args: argparse.Namespace) -> int:
    with open_existing(args) as store:
        bar = Progress(None, "compact (rows)")
        try:
            res = store.compact(args.threshold, progress=bar.callback)
        finally:
            res_secs = bar.close()
        res["seconds"] = round(res_secs, 2)
        emit(res, args.json)
    return EXIT_OK


def cmd_rebuild_hot(args: argparse.Namespace) -> int:
    with open_existing(args) as store:
        bar = Progress(None, "rebuild-hot")
        try:
            n = store.rebuild_hot(progress=bar.callback)
        finally:
            secs = bar.close()
        emit({"rebuilt": n, "seconds": round(secs, 2)}, args.json)
    return EXIT_OK
