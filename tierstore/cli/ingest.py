"""Getting a store and data in: ``tierstore init`` (a config file and an empty store) and
``tierstore ingest`` (.npy, .npz, .jsonl or .parquet, checked batch by batch before anything is
written; the .npz and .parquet readers are tierstore.io's)."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import inputs, io, paths
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


class Batch(NamedTuple):
    """Rows read from an input file: ``where[i]`` is row i's row (.npy/.npz/.parquet) or line
    (.jsonl) in the file; ``texts`` is None when the file has none."""

    ids: list
    vectors: np.ndarray
    metadata: list | None
    where: list[int]
    texts: list | None = None


PARQUET = (".parquet", ".pq")
SUFFIXES = (".npy", ".npz", ".jsonl", ".ndjson", *PARQUET)


def read_input(path: Path, id_field: str, offset: int, dim: int) -> Iterator[list[Batch]]:
    """Yield the file in blocks of up to 10,000 rows, each block as runs with one kind of id
    (int or str: an export of a store holding both re-ingests; one upsert takes one kind). A row
    that cannot be read (not JSON, no id, a vector that is not ``dim`` numbers) raises a typed
    error naming its line or row."""
    for b in _read_file(path, id_field, offset, dim):
        yield [Batch(b.ids[run], b.vectors[run], None if b.metadata is None else b.metadata[run], b.where[run],
                     None if b.texts is None else b.texts[run]) for run in io.id_runs(b.ids)]


def _read_file(path: Path, id_field: str, offset: int, dim: int) -> Iterator[Batch]:
    if path.suffix == ".npy":
        arr = _load_npy(path, dim)
        for s in range(0, arr.shape[0], _BATCH_ROWS):
            block = np.asarray(arr[s : s + _BATCH_ROWS], dtype=np.float32)
            rows = list(range(s, s + len(block)))
            yield Batch([offset + r for r in rows], block, None, rows)
        return
    if path.suffix in (".npz", *PARQUET):
        reader: Iterator[Any] = (io.read_npz(path, dim=dim, batch_size=_BATCH_ROWS, id_offset=offset)
                                 if path.suffix == ".npz" else io.read_parquet(path, dim=dim, batch_size=_BATCH_ROWS))
        row = 0
        for ids, vecs, metas, texts in reader:
            yield Batch(ids, vecs, metas, list(range(row, row + len(ids))), texts)
            row += len(ids)
        return
    ids: list = []
    vecs: list[np.ndarray] = []
    metas: list = []
    where: list[int] = []
    texts: list = []
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
                # "text": the record's text (where records have one; else a metadata key)
                texts.append(row.pop("text", None))
                if "metadata" in row:
                    row.pop("tier", None)  # (what `export` writes beside it)
                metas.append(row.pop("metadata", row))
                where.append(lineno)
                if len(ids) == _BATCH_ROWS:
                    yield Batch(ids, np.stack(vecs), metas, where, texts if any(t is not None for t in texts) else None)
                    ids, vecs, metas, where, texts = [], [], [], [], []
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path} line {lineno + 1}: not UTF-8 text ({exc.reason})") from None
    if ids:
        yield Batch(ids, np.stack(vecs), metas, where, texts if any(t is not None for t in texts) else None)


_ROW_ERROR = re.compile(r"^(ids|vectors|metadata|texts)\[(\d+)\]")
_ROW_FIELD = {"ids": "id", "vectors": "vector", "metadata": "metadata", "texts": "text"}


def _check_batch(cfg: Config, batch: Batch, batch_size: int, label: str) -> None:
    """Validate a batch read by :func:`read_input` exactly as ``upsert`` will (each upsert of
    ``batch_size`` rows: ids, vectors, duplicates, metadata), before any of it is written; the
    error names the file's line (``label`` "line") or row ("row") instead of the batch index."""
    ids, vecs, metas, where, texts = batch

    def check(sl: slice) -> None:
        part = normalize_ids(ids[sl])
        inputs.vectors_2d(vecs[sl], dim=cfg.store.dim, metric=cfg.store.metric)
        inputs.check_unique(part)
        extra = () if texts is None else (inputs.check_texts(texts[sl], len(part)),)  # (texts: issue 20)
        inputs.clean_metadata(None if metas is None else metas[sl], len(part), cfg.schema, *extra)

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


def _count_rows(path: Path) -> int | None:
    if path.suffix in PARQUET:
        return io.parquet_rows(path) or None
    if path.suffix == ".npz":
        return io.npz_rows(path)
    if path.suffix == ".npy":
        try:
            return int(np.load(path, mmap_mode="r").shape[0])
        except (OSError, ValueError, EOFError, AttributeError, IndexError):
            return 0  # read_input says what is wrong with it
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def cmd_ingest(args: argparse.Namespace) -> int:
    """Read the file in batches of 10,000 rows; check each batch (every row, as upsert would)
    before writing any of it. An error names the line (.jsonl) or row (.npy) and says how many
    rows earlier batches already committed; a bad first batch writes nothing, not even a store."""
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix not in SUFFIXES:
        raise UsageError(f"{path}: unsupported input (use .npy, .npz, .parquet, or .jsonl with one record per line)")
    if path.suffix in PARQUET:
        io.pyarrow()  # a missing pyarrow says which extra installs it, before anything else
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be >= 1")
    cfg = load(args)
    unit = "line" if path.suffix in (".jsonl", ".ndjson") else "row"
    label = f"{path} {unit}"
    blocks = read_input(path, args.id_field, args.id_offset, cfg.store.dim)
    written, last = 0, None
    bar: Progress | None = None

    def next_checked() -> list[Batch] | None:
        """The next block, every row of it checked before any of it is written."""
        block = next(blocks, None)
        for batch in block or ():
            _check_batch(cfg, batch, args.batch_size, label)
        return block

    try:
        block = next_checked()
        with TierStore(cfg) as store:
            bar = Progress(_count_rows(path), f"ingest {path.name}")
            while block is not None:
                for ids, vecs, metas, where, texts in block:
                    for s in range(0, len(ids), args.batch_size):
                        sl = slice(s, s + args.batch_size)
                        kw = {} if texts is None else {"texts": texts[sl]}
                        written += store.upsert(ids[sl], vecs[sl], None if metas is None else metas[sl],
                                                tier=args.tier, **kw)
                        last = where[min(s + args.batch_size, len(ids)) - 1]
                        bar.update(len(ids[sl]))
                block = next_checked()
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
