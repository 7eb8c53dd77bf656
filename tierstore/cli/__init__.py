"""The ``tierstore`` command line.

    tierstore demo                         embedded store + wordnet-minilm (or generated data)
    tierstore init --path ./data --dim 384 [--schema lexname=tag ...]   -> tierstore.toml
    tierstore ingest vectors.npy|records.jsonl [--tier hot]
    tierstore query --vector '[...]' | --like ID  [-k 10] [--filter '{"pos": "n"}'] [--json]
    tierstore stats [--json]
    tierstore move ids.txt --tier warm|hot|cold [--int-ids] [--defer]
    tierstore policy [--dry-run] [--examples 10]     one policy cycle: what moves and why
    tierstore migrate --tier cold (--filter '{"tenant": "acme"}' | --ids ids.txt) [--resume]
    tierstore compact [--threshold 0.3]
    tierstore verify [--quick | --deep] [--repair] [--json]
    tierstore export out.jsonl|out.npz [--tier cold]
    tierstore rebuild-hot
    tierstore serve-metrics [--port 9464] [--addr 127.0.0.1]   Prometheus /metrics until Ctrl-C

The config comes from ``--config FILE``, else ``$TIERSTORE_CONFIG``, else ``./tierstore.toml``.

Exit codes (for scripts): 0 ok; 1 unexpected error; 2 bad usage, config or input;
3 a server/tier unavailable or the store locked by another process; 4 integrity error (also:
``verify`` found a problem).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import datasets, inputs, migrate, paths
from .catalog import normalize_ids
from .config import Config, load_config
from .errors import (
    DimensionError,
    IntegrityError,
    InvalidInputError,
    StoreLockedError,
    TierStoreError,
    TierUnavailableError,
)
from .store import TierStore
from .store import open as open_store

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTEGRITY = 0, 1, 2, 3, 4


class Progress:
    """A dependency-free progress line on stderr (a bar on a terminal, a line per 10% otherwise)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._next_report = 0.1

    def update(self, n: int) -> None:
        self.done += n
        frac = self.done / max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        if self.tty:
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:,.0f}/s")
        elif frac >= self._next_report or self.done == self.total:
            sys.stderr.write(f"{self.label}: {self.done}/{self.total} ({100 * frac:.0f}%) {rate:,.0f}/s\n")
            self._next_report = frac + 0.1
        sys.stderr.flush()

    def close(self) -> float:
        secs = time.perf_counter() - self.t0
        if self.tty:
            sys.stderr.write("\n")
        return secs


def _load(args: argparse.Namespace, **overrides: Any) -> Config:
    config = args.config or os.environ.get("TIERSTORE_CONFIG")
    if config is None and Path("tierstore.toml").exists():
        config = "tierstore.toml"
    if config is None:
        raise _Usage("no config: pass --config FILE, set TIERSTORE_CONFIG, or run `tierstore init` here")
    # a command-line run never starts the background policy thread: it does one job and exits
    return load_config(config, policy={"interval": 0}, **overrides)


def _open(args: argparse.Namespace, must_exist: bool = True, **overrides: Any) -> TierStore:
    """Open the configured store. Every command but ``init`` and ``ingest`` needs an existing
    store: a mistyped store.path is a ConfigError (exit 2), never a new empty store."""
    cfg = _load(args, **overrides)
    if must_exist:
        paths.require_store(cfg.store.path, cfg.source)
    return TierStore(cfg)


class _Usage(Exception):
    pass


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        _print_tree(obj)


def _print_tree(obj: Any, indent: int = 0) -> None:
    for key, value in obj.items():
        if isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print_tree(value, indent + 2)
        else:
            print(" " * indent + f"{key}: {value}")


# --- commands -------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.config or "tierstore.toml")
    if target.exists() and not args.force:
        raise _Usage(f"{target} exists; pass --force to overwrite it")
    schema = {}
    for item in args.schema or []:
        name, _, kind = item.partition("=")
        schema[name] = kind
    lines = ["[store]", f"path = {json.dumps(args.path)}", f"dim = {args.dim}", f'metric = "{args.metric}"']
    if schema:
        lines += ["", "[schema]"] + [f'{k} = "{v}"' for k, v in schema.items()]
    lines += ["", "[hot]", "# redis_url = \"redis://127.0.0.1:6379/0\"   # absent: an embedded redis-server",
              f"capacity = {args.hot_capacity}",
              "", "[cold]", "# url = \"s3://my-bucket/my-store\"   # absent: an embedded S3 server (weed mini)",
              "# endpoint_url = \"http://127.0.0.1:8333\"  # S3-compatible stores (SeaweedFS, MinIO)"]
    text = "\n".join(lines) + "\n"
    load_config(_toml_dict(text), env={})  # validate before writing anything
    store_path = Path(os.path.expanduser(args.path))  # as the config file will resolve it
    paths.check_new_store_path(store_path if store_path.is_absolute() else target.resolve().parent / store_path,
                               str(target))
    existed = target.exists()
    target.write_text(text)
    try:
        with open_store(target) as store:
            info = {"config": str(target.resolve()), "store": str(store.path), "uuid": store.catalog.uuid}
    except BaseException:
        if not existed:  # the store's failed creation removed its files; so goes the config
            target.unlink(missing_ok=True)
        raise
    _print(info, args.json)
    return EXIT_OK


def _toml_dict(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


_BATCH_ROWS = 10_000  # rows read, checked, then written per step of `ingest`


def _load_npy(path: Path, dim: int) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != dim:
        shape = getattr(arr, "shape", None)
        raise DimensionError(f"{path}: an array of shape {shape}; expected (n, {dim}) (this store's dim is {dim})")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DimensionError(f"{path}: an array of {arr.dtype}; expected real numbers")
    return arr


def _read_input(path: Path, id_field: str, offset: int,
                dim: int) -> Iterator[tuple[list, np.ndarray, list | None, list[int]]]:
    """Yield (ids, vectors, metadata, where) batches of up to 10,000 rows from .npy or .jsonl;
    ``where[i]`` is the row's index in the .npy or its line number in the .jsonl. A row that
    cannot be read (not JSON, no id, a vector that is not ``dim`` numbers) raises a typed error
    naming its line."""
    if path.suffix == ".npy":
        arr = _load_npy(path, dim)
        for s in range(0, arr.shape[0], _BATCH_ROWS):
            block = np.asarray(arr[s : s + _BATCH_ROWS], dtype=np.float32)
            rows = list(range(s, s + len(block)))
            yield [offset + r for r in rows], block, None, rows
        return
    ids: list = []
    vecs: list[np.ndarray] = []
    metas: list = []
    where: list[int] = []
    lineno = 0
    with open(path, encoding="utf-8") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    uid = row.pop(id_field)
                    vec = row.pop("vector")
                except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
                    raise InvalidInputError(f"{path} line {lineno}: expected a JSON object with {id_field!r} and "
                                            f"'vector' ({type(exc).__name__}: {exc})") from None
                v = inputs._as_float32(vec, f"{path} line {lineno}: vector")
                if v.shape != (dim,):
                    got = f"{v.shape[0]} values" if v.ndim == 1 else f"shape {v.shape}"
                    raise DimensionError(f"{path} line {lineno}: vector has {got}; this store's dim is {dim}")
                ids.append(uid)
                vecs.append(v)
                metas.append(row.pop("metadata", row))
                where.append(lineno)
                if len(ids) == _BATCH_ROWS:
                    yield ids, np.stack(vecs), metas, where
                    ids, vecs, metas, where = [], [], [], []
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path} line {lineno + 1}: not UTF-8 text ({exc.reason})") from None
    if ids:
        yield ids, np.stack(vecs), metas, where


_ROW_ERROR = re.compile(r"^(ids|vectors|metadata)\[(\d+)\]")
_ROW_FIELD = {"ids": "id", "vectors": "vector", "metadata": "metadata"}


def _check_batch(cfg: Config, batch: tuple[list, np.ndarray, list | None, list[int]], batch_size: int,
                 label: str) -> None:
    """Validate a batch read by :func:`_read_input` exactly as ``upsert`` will (each upsert of
    ``batch_size`` rows: ids, vectors, duplicates, metadata), before any of it is written; the
    error names the file's line (``label`` "line") or row ("row") instead of the batch index."""
    ids, vecs, metas, where = batch

    def check(sl: slice) -> None:
        part = normalize_ids(ids[sl])
        inputs.vectors_2d(vecs[sl], dim=cfg.store.dim, metric=cfg.store.metric)
        inputs.check_unique(part)
        inputs.clean_metadata(None if metas is None else metas[sl], len(part), cfg.schema)

    for s in range(0, len(ids), batch_size):
        end = min(s + batch_size, len(ids))
        try:
            check(slice(s, end))
        except TierStoreError as exc:
            msg = str(exc)
            m = _ROW_ERROR.match(msg)
            if m is not None:
                exc.args = (f"{label} {where[s + int(m.group(2))]}: {_ROW_FIELD[m.group(1)]}{msg[m.end():]}",)
                raise
            for i in range(s, end):  # an error that names no row (a tag value): the first row failing alone
                try:
                    check(slice(i, i + 1))
                except TierStoreError as one:
                    exc.args = (f"{label} {where[i]}: {_ROW_ERROR.sub(lambda m: _ROW_FIELD[m.group(1)], str(one))}",)
                    raise exc from None
            exc.args = (f"{label}s {where[s]}..{where[end - 1]}: {msg}",)  # mixed id types: no one row
            raise


def _count_rows(path: Path) -> int:
    if path.suffix == ".npy":
        try:
            return int(np.load(path, mmap_mode="r").shape[0])
        except (OSError, ValueError, EOFError, AttributeError, IndexError):
            return 0  # _read_input says what is wrong with it
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def cmd_ingest(args: argparse.Namespace) -> int:
    """Read the file in batches of 10,000 rows; check each batch (every row, as upsert would)
    before writing any of it. An error names the line (.jsonl) or row (.npy) and says how many
    rows earlier batches already committed; a bad first batch writes nothing, not even a store."""
    path = Path(args.file)
    if not path.is_file():
        raise _Usage(f"{path}: no such file")
    if path.suffix not in (".npy", ".jsonl", ".ndjson"):
        raise _Usage(f"{path}: unsupported input (use .npy, or .jsonl with one record per line)")
    if args.batch_size < 1:
        raise _Usage(f"--batch-size {args.batch_size}: must be >= 1")
    cfg = _load(args)
    unit = "row" if path.suffix == ".npy" else "line"
    label = f"{path} {unit}"
    batches = _read_input(path, args.id_field, args.id_offset, cfg.store.dim)
    written, last = 0, None
    bar: Progress | None = None
    try:
        batch = next(batches, None)
        if batch is not None:
            _check_batch(cfg, batch, args.batch_size, label)
        with TierStore(cfg) as store:
            bar = Progress(_count_rows(path), f"ingest {path.name}")
            while batch is not None:
                ids, vecs, metas, where = batch
                for s in range(0, len(ids), args.batch_size):
                    sl = slice(s, s + args.batch_size)
                    written += store.upsert(ids[sl], vecs[sl], None if metas is None else metas[sl], tier=args.tier)
                    last = where[min(s + args.batch_size, len(ids)) - 1]
                    bar.update(len(ids[sl]))
                batch = next(batches, None)
                if batch is not None:
                    _check_batch(cfg, batch, args.batch_size, label)
            secs = bar.close()
            bar = None
            _print({"written": written, "seconds": round(secs, 2), "vectors_per_s": round(written / max(secs, 1e-9))},
                   args.json)
    except (TierStoreError, _Usage) as exc:
        if bar is not None:
            bar.close()
        done = (f"{written} rows (up to {unit} {last}) were already committed by earlier batches; nothing after "
                f"{unit} {last} was written (ingest upserts: rerunning the fixed file is safe)"
                if written else "nothing was written")
        exc.args = (f"{exc}; {done}",)
        raise
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    flt = json.loads(args.filter) if args.filter else None
    with _open(args) as store:
        if args.like is not None:
            like: Any = args.like
            rec = store.get([like])[0]
            if rec is None and like.lstrip("-").isdigit():
                rec = store.get([int(like)])[0]
            if rec is None:
                raise _Usage(f"--like {like}: no such id in the store")
            vector = rec.vector
        elif args.vector is not None:
            vector = np.asarray(json.loads(args.vector), dtype=np.float32)
        else:
            raise _Usage("give --vector '[...]' or --like ID")
        hits = store.query(vector, k=args.k, filter=flt, ef=args.ef, nprobe=args.nprobe, strict=args.strict)
    out = {"partial": hits.partial,
           "hits": [{"id": h.id, "distance": h.distance, "tier": h.tier, "metadata": h.metadata} for h in hits],
           "tiers": {n: r.to_dict() for n, r in hits.tiers.items()}}
    if args.json:
        _print(out, True)
    else:
        for i, h in enumerate(hits, 1):
            print(f"{i:3d}. {h.id!s:<24} {h.distance:.6f}  {h.tier:<5} {json.dumps(h.metadata)}")
        if hits.partial:
            print("(partial: a tier failed or timed out; see --json for details)")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        _print(store.stats(), args.json)
    return EXIT_OK


def cmd_serve_metrics(args: argparse.Namespace) -> int:
    """Open the store (no policy thread) and serve its Prometheus metrics until Ctrl-C / SIGTERM."""
    import signal

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    metrics: dict[str, Any] = {}
    if args.port is not None:
        metrics["port"] = args.port
    if args.addr is not None:
        metrics["addr"] = args.addr
    with _open(args, metrics=metrics) as store:
        if store.metrics.port is None:  # neither --port nor metrics.port: the default port
            store.metrics.serve(9464, store.config.metrics.addr)
        info = {"store": store.metrics.name, "url": store.metrics.url}
        print(json.dumps(info) if args.json else f"serving metrics of {info['store']} on {info['url']} "
              "(Ctrl-C to stop)", flush=True)
        signal.signal(signal.SIGTERM, stop)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_rebuild_hot(args: argparse.Namespace) -> int:
    with _open(args) as store:
        t0 = time.perf_counter()
        n = store.rebuild_hot()
        _print({"rebuilt": n, "seconds": round(time.perf_counter() - t0, 2)}, args.json)
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    with _open(args) as store:
        t0 = time.perf_counter()
        res = store.compact(args.threshold)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        _print(res, args.json)
    return EXIT_OK


def cmd_move(args: argparse.Namespace) -> int:
    ids = _read_ids(Path(args.id_file), args.int_ids)
    with _open(args) as store:
        rep = store.move(ids, args.tier, defer=args.defer)
    _print({"tier": rep.tier, "moved": rep.moved, "already": rep.already, "missing": rep.missing,
            "queued": rep.queued, "seconds": round(rep.seconds, 2)}, args.json)
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    with _open(args) as store:
        progress: Progress | None = None
        if not args.dry_run:
            plan = store.run_policy(dry_run=True, examples=0)
            progress = Progress(plan.total_planned - plan.deferred, "moving") if plan.total_planned else None
        rep = store.policy.run(dry_run=args.dry_run, examples=args.examples,
                               progress=(lambda d, n: progress.update(n)) if progress else None)
        if progress is not None:
            progress.close()
    if args.json:
        _print(rep.to_dict(), True)
        return EXIT_OK
    head = "plan (dry run: nothing moved)" if rep.dry_run else "policy cycle"
    print(f"{head}: {rep.vectors} vectors, {rep.total_planned} moves planned in {rep.seconds:.2f}s")
    print("  budgets:   " + ", ".join(f"{t} {n:,}" for t, n in rep.budgets.items()))
    print("  before:    " + ", ".join(f"{t} {n:,}" for t, n in rep.before.items()))
    print("  after:     " + ", ".join(f"{t} {n:,}" for t, n in rep.after.items()))
    print("  thresholds (decayed accesses to hold a place): "
          + (", ".join(f"{t} {v:.3g}" for t, v in rep.thresholds.items()) or "none"))
    print(f"  pinned: {rep.pinned}  in grace period: {rep.in_grace}  deferred by max_moves_per_cycle: {rep.deferred}")
    print("  half-life: " + _half_life_line(rep.half_life))
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


def _half_life_line(hl: dict | None) -> str:
    """The half-life the policy used and, with ``half_life = "auto"``, the shadow hit ratios
    that chose it (issue 18)."""
    if not hl:
        return "n/a"
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
        raise _Usage("--resume takes the selection of the interrupted run; do not pass --filter/--ids")
    if not args.resume and bool(args.filter) == bool(args.ids):
        raise _Usage("pass exactly one of --filter JSON or --ids FILE (or --resume)")
    with _open(args) as store:
        job = migrate.saved_job(store)
        if args.resume:
            if job is None:
                raise _Usage("nothing to resume: no interrupted `tierstore migrate` in this store")
        else:
            if job is not None:
                print(f"note: replacing an interrupted migrate to {job['tier']} ({job['done']}/{job['total']} done)",
                      file=sys.stderr)
            if not args.tier:
                raise _Usage("--tier is required")
            job = {"tier": args.tier, "filter": json.loads(args.filter) if args.filter else None,
                   "from": args.from_tier, "ids": _read_ids(Path(args.ids), args.int_ids) if args.ids else None}
        ids = migrate.select(store, job)
        job.update(total=len(ids), done=0)
        progress = Progress(len(ids), f"migrate -> {job['tier']}")
        rep = migrate.run_job(store, job, ids, args.batch_size, progress.update)
        secs = progress.close()
    _print({"tier": job["tier"], "selected": len(ids), "moved": rep.moved, "already": rep.already,
            "missing": rep.missing, "seconds": round(secs, 2)}, args.json)
    return EXIT_OK


def _read_ids(path: Path, int_ids: bool) -> list:
    if not path.exists():
        raise _Usage(f"{path}: no such file")
    ids: list = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if int_ids:
        try:
            ids = [int(x) for x in ids]
        except ValueError as exc:
            raise _Usage(f"{path}: --int-ids given but {exc}") from None
    return ids


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as store:
        t0 = time.perf_counter()
        rep = store.verify(deep=not args.quick, repair=args.repair)
        rep["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        _print(rep, True)
    else:
        problems = rep.pop("problems")
        _print(rep, False)
        for p in problems:
            print(f"PROBLEM: {p}")
    return EXIT_OK if rep["ok"] else EXIT_INTEGRITY


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in (".jsonl", ".npz"):
        raise _Usage(f"{out}: export writes .jsonl (one record per line, re-ingestable) or .npz")
    with _open(args) as store:
        bar = Progress(len(store), f"export {out.name}")
        ids, vecs, metas, tiers = [], [], [], []
        n = 0
        with open(out, "w", encoding="utf-8") if out.suffix == ".jsonl" else _null() as fh:
            for batch in store.scan(tiers=args.tier):
                for r in batch:
                    if fh is not None:
                        fh.write(json.dumps({"id": r.id, "vector": r.vector.tolist(), "metadata": r.metadata,
                                             "tier": r.tier}) + "\n")
                    else:
                        ids.append(r.id)
                        vecs.append(r.vector)
                        metas.append(json.dumps(r.metadata))
                        tiers.append(r.tier)
                n += len(batch)
                bar.update(len(batch))
        if out.suffix == ".npz":
            np.savez(out, ids=np.asarray(ids), vectors=np.asarray(vecs, np.float32).reshape(len(vecs), store.dim),
                     metadata=np.asarray(metas), tiers=np.asarray(tiers))
        secs = bar.close()
    _print({"exported": n, "file": str(out), "seconds": round(secs, 2)}, args.json)
    return EXIT_OK


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        pass


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded store, real (or generated) data, recall and latency against exact ground truth."""
    wn = datasets.find_wordnet(args.data)
    if wn is not None:
        ds = datasets.load_wordnet(wn, n=args.n, queries=args.queries)
        schema = {"pos": "tag", "lexname": "tag", "nlemmas": "numeric"}
    else:
        print("wordnet-minilm not found (pass --data DIR): using generated clustered data", file=sys.stderr)
        ds = datasets.clustered(args.n or 20_000, 384, queries=args.queries or 1000)
        schema = {"cluster": "tag", "rank": "numeric"}
    n = len(ds.base)
    tmp = None if args.path else tempfile.mkdtemp(prefix="tierstore-demo-")
    path = args.path or tmp
    report: dict[str, Any] = {"dataset": ds.name, "vectors": n, "queries": len(ds.queries), "path": path}
    try:
        with open_store(path=path, dim=ds.base.shape[1], schema=schema, hot={"capacity": max(n, 100_000)}) as store:
            bar = Progress(n, "ingest")
            for s in range(0, n, 1000):
                store.upsert(list(range(s, min(s + 1000, n))), ds.base[s : s + 1000], ds.metadata[s : s + 1000])
                bar.update(min(1000, n - s))
            secs = bar.close()
            report["ingest_vectors_per_s"] = round(n / secs)
            lat, found = [], []
            for q in ds.queries:
                t0 = time.perf_counter()
                hits = store.query(q, k=10)
                lat.append(time.perf_counter() - t0)
                found.append(hits.ids())
            lat_ms = np.asarray(lat) * 1000
            report["recall@10"] = round(datasets.recall_at(found, ds.gt, 10), 4)
            report["latency_ms"] = {f"p{p}": round(float(np.percentile(lat_ms, p)), 3) for p in (50, 95, 99)}
            if ds.query_texts:
                flt = {"pos": "n"}
                hits = store.query(ds.queries[0], k=3, filter=flt)
                report["example"] = {"query": ds.query_texts[0], "filter": flt,
                                     "top3": [f"{ds.titles[h.id]} ({h.distance:.3f})" for h in hits]}
            st = store.stats()
            report["redis_used_memory"] = st["tiers"]["hot"].get("redis_used_memory_human")
            report["catalog_disk_bytes"] = st["catalog"]["disk_bytes"]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    _print(report, args.json)
    return EXIT_OK


# --- wiring ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tierstore", description="Tiered vector store: Redis HNSW / disk / S3.")
    config_help = "TOML config (default: $TIERSTORE_CONFIG or ./tierstore.toml)"
    p.add_argument("--config", help=config_help)
    # --config is accepted before or after the command name
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common])
        sp.set_defaults(fn=fn)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = add("demo", cmd_demo, "ingest wordnet-minilm (or generated data) into an embedded store; "
             "print recall@10, latency and stats")
    sp.add_argument("--data", help="wordnet-minilm directory (default: found next to the checkout)")
    sp.add_argument("--n", type=int, help="use only the first N vectors (default: all)")
    sp.add_argument("--queries", type=int, help="number of queries (default: all)")
    sp.add_argument("--path", help="keep the store here instead of a temporary directory")

    sp = add("init", cmd_init, "write a config file and create the store")
    sp.add_argument("--path", required=True, help="store directory")
    sp.add_argument("--dim", type=int, required=True)
    sp.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    sp.add_argument("--schema", action="append", metavar="FIELD=tag|numeric", help="filterable field")
    sp.add_argument("--hot-capacity", type=int, default=100_000)
    sp.add_argument("--force", action="store_true", help="overwrite an existing config file")

    sp = add("ingest", cmd_ingest, "upsert vectors from .npy (ids = row numbers) or .jsonl "
             '({"id": ..., "vector": [...], "metadata": {...}} per line)')
    sp.add_argument("file")
    sp.add_argument("--tier", choices=("hot", "warm", "cold"), help="target tier (default: policy.ingest_tier)")
    sp.add_argument("--batch-size", type=int, default=1000)
    sp.add_argument("--id-field", default="id", help="jsonl key holding the id")
    sp.add_argument("--id-offset", type=int, default=0, help=".npy: id of the first row")

    sp = add("query", cmd_query, "nearest neighbours of a vector or of a stored id")
    sp.add_argument("--vector", help="JSON list of floats")
    sp.add_argument("--like", help="use the stored vector of this id")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--filter", help='JSON filter, e.g. \'{"pos": {"$in": ["n", "v"]}}\'')
    sp.add_argument("--ef", type=int)
    sp.add_argument("--nprobe", type=int, help="cold partitions to probe (default: cold.nprobe)")
    sp.add_argument("--strict", action="store_true", help="fail when a tier fails instead of a partial answer")

    add("stats", cmd_stats, "counts, memory, disk and latency per tier")
    sp = add("compact", cmd_compact, "rewrite warm and cold segments whose dead fraction passes the "
             "compact_threshold, merge small ones, delete unreferenced S3 objects")
    sp.add_argument("--threshold", type=float, help="dead fraction (default: <tier>.compact_threshold)")
    sp = add("move", cmd_move, "move the ids listed in a file (one per line) to a tier")
    sp.add_argument("id_file")
    sp.add_argument("--tier", required=True, choices=("hot", "warm", "cold"))
    sp.add_argument("--int-ids", action="store_true", help="the ids are integers")
    sp.add_argument("--defer", action="store_true", help="cold: queue; written as one segment at "
                    "cold.segment_size or the next flush")
    sp = add("policy", cmd_policy, "run one policy cycle now: score every vector by its decayed access "
             "count and move vectors between tiers within the budgets (--dry-run: only show the plan and why)")
    sp.add_argument("--dry-run", action="store_true", help="plan only; move nothing")
    sp.add_argument("--examples", type=int, default=10, help="moves listed per direction with their reason")
    sp = add("migrate", cmd_migrate, "move a selection (by filter or id file) to a tier, in batches with a "
             "progress bar; an interrupted run continues with --resume")
    sp.add_argument("--tier", choices=("hot", "warm", "cold"))
    sp.add_argument("--filter", help='JSON filter over [schema] fields, e.g. \'{"tenant": "acme"}\'')
    sp.add_argument("--ids", help="file with one id per line")
    sp.add_argument("--int-ids", action="store_true", help="the ids in --ids are integers")
    sp.add_argument("--from-tier", action="append", choices=("hot", "warm", "cold"),
                    help="only vectors now in this tier (repeatable)")
    sp.add_argument("--batch-size", type=int, default=5000, help="vectors per batch (cold: per segment)")
    sp.add_argument("--resume", action="store_true", help="continue the interrupted migrate")
    sp = add("verify", cmd_verify, "check catalog vs Redis vs warm segments vs S3 (checksums of every byte of "
             "every warm segment file and cold object, and of the local cold caches); exit 4 when something "
             "is wrong")
    depth = sp.add_mutually_exclusive_group()
    depth.add_argument("--quick", action="store_true", help="do not download cold objects (footers only) nor "
                       "hash warm segment files (sizes and meta.json only)")
    depth.add_argument("--deep", action="store_true", help="check every byte (the default; for scripts that "
                       "want to say so)")
    sp.add_argument("--repair", action="store_true", help="rebuild damaged warm segments (and those without "
                    "checksums) from the catalog, drop damaged cache files; cold objects are only reported")
    sp = add("export", cmd_export, "write every record (cold ones fetched from S3) to .jsonl or .npz")
    sp.add_argument("out")
    sp.add_argument("--tier", action="append", choices=("hot", "warm", "cold"), help="only these tiers")
    add("rebuild-hot", cmd_rebuild_hot, "rebuild the Redis index from the durable catalog")
    sp = add("serve-metrics", cmd_serve_metrics, "open the store and serve its Prometheus metrics over HTTP "
             "until Ctrl-C (no policy thread; the store stays locked meanwhile)")
    sp.add_argument("--port", type=int, help="TCP port (default: metrics.port, else 9464; 0: any free port)")
    sp.add_argument("--addr", help="address to bind (default: metrics.addr, 127.0.0.1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except _Usage as exc:
        print(f"tierstore: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except json.JSONDecodeError as exc:
        print(f"tierstore: bad JSON argument: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TierUnavailableError, StoreLockedError) as exc:
        print(f"tierstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except IntegrityError as exc:
        print(f"tierstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except TierStoreError as exc:
        code = EXIT_USAGE if isinstance(exc, ValueError) else EXIT_ERROR
        print(f"tierstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("tierstore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
