"""Getting a store and data in: ``tierstore init`` (a config file and an empty store) and
``tierstore ingest`` (.npy or .jsonl, checked batch by batch before anything is written)."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import inputs, paths
from ..catalog import normalize_ids
from ..config import Config, load_config
from ..errors import (
    DimensionError,
    InvalidInputError,
    TierStoreError,
)
from ..store import TierStore
from ..store import open as open_store
from .common import EXIT_OK, Progress, UsageError, emit, load


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.config or "tierstore.toml")
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; pass --force to overwrite it")
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
    emit(info, args.json)
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
                v = inputs.as_float32(vec, f"{path} line {lineno}: vector")
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
        raise UsageError(f"{path}: no such file")
    if path.suffix not in (".npy", ".jsonl", ".ndjson"):
        raise UsageError(f"{path}: unsupported input (use .npy, or .jsonl with one record per line)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be >= 1")
    cfg = load(args)
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
            emit({"written": written, "seconds": round(secs, 2), "vectors_per_s": round(written / max(secs, 1e-9))},
                  args.json)
    except (TierStoreError, UsageError) as exc:
        if bar is not None:
            bar.close()
        done = (f"{written} rows (up to {unit} {last}) were already committed by earlier batches; nothing after "
                f"{unit} {last} was written (ingest upserts: rerunning the fixed file is safe)"
                if written else "nothing was written")
        exc.args = (f"{exc}; {done}",)
        raise
    return EXIT_OK
