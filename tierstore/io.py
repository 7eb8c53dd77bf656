"""Arrow/Parquet import and export (``pip install tierstore[arrow]``).

A table of records has the columns ``id`` (int or str), ``vector`` (``fixed_size_list<float32>``
of the store's dim preferred; any list of floats is accepted), ``text`` (optional: the record's
document text) and any others, each a metadata key. A null cell means the record has no such key.

>>> import tierstore.io                                                          # doctest: +SKIP
>>> tierstore.io.write_parquet(store, "all.parquet")                             # doctest: +SKIP
20000
>>> for ids, vectors, metadata, texts in tierstore.io.read_parquet("all.parquet"):  # doctest: +SKIP
...     other.upsert(ids, vectors, metadata, texts=texts)

What :func:`write_parquet` writes reads back identically (:func:`read_parquet`): ids of both kinds
in one store, metadata keys with values of mixed types, nested values, keys named like the
reserved columns. It keeps each metadata key a native Arrow column where the values round-trip
exactly, and otherwise JSON-encodes that column (a string column whose values are JSON); the
file's schema metadata (key ``tierstore``) says which columns are JSON, which column holds which
metadata key, and which columns are informational (``tier``, where each record lived). Files from
other tools have no such key: every column but id/vector/text is then metadata, as it is.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DimensionError, InvalidInputError, TierStoreError
from .progress import ProgressFn, Ticker
from .results import Record

ID, VECTOR, TEXT, TIER = "id", "vector", "text", "tier"
_SCHEMA_KEY = b"tierstore"
_BATCH = 10_000


class MissingDependencyError(TierStoreError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def pyarrow() -> Any:
    """``pyarrow`` (with ``pyarrow.parquet`` loaded), imported on first use."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (pa.parquet)
    except ImportError:
        raise MissingDependencyError("Parquet import/export needs pyarrow: pip install 'tierstore[arrow]'") from None
    return pa


# --- reading -----------------------------------------------------------------------------------


def read_parquet(path: str | os.PathLike[str], *, dim: int | None = None, batch_size: int = _BATCH,
                 ) -> Iterator[tuple[list[str | int], np.ndarray, list[dict[str, Any]], list[str | None] | None]]:
    """Batches of ``(ids, vectors, metadata, texts)`` from a Parquet file, ``batch_size`` rows at
    a time (``vectors``: float32 ``(n, dim)``; ``texts``: None when the file has no text column). ``dim``: the length every
    vector must have (default: the first row's). A batch never mixes int and str ids (a file
    written by :func:`write_parquet` from a store holding both yields them in separate batches).
    A bad file or row raises :class:`InvalidInputError`/:class:`DimensionError` naming the row."""
    pa = pyarrow()
    path = Path(path)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size: {batch_size!r} must be a positive integer")
    try:
        pf = pa.parquet.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({exc})") from None
    layout = _Layout.of(pf.schema_arrow, path)
    row = 0
    for rb in pf.iter_batches(batch_size=batch_size):
        ids, vectors, metadata, texts = layout.decode(rb, row, dim)
        if dim is None and len(vectors):
            dim = vectors.shape[1]
        for sl in id_runs(ids):
            yield ids[sl], vectors[sl], metadata[sl], None if texts is None else texts[sl]
        row += rb.num_rows


def parquet_rows(path: str | os.PathLike[str]) -> int:
    """The number of rows of a Parquet file (from its footer; 0 if it cannot be read)."""
    pa = pyarrow()
    try:
        return int(pa.parquet.ParquetFile(path).metadata.num_rows)
    except (OSError, pa.ArrowException):
        return 0


class _Layout:
    """Which column is what, from the file's schema (and its ``tierstore`` schema metadata)."""

    def __init__(self, names: list[str], keys: dict[str, str], json_cols: set[str], skip: set[str],
                 has_text: bool, path: Path) -> None:
        self.keys, self.json_cols, self.has_text, self.path = keys, json_cols, has_text, path
        self.meta_cols = [c for c in names if c not in (ID, VECTOR) and c not in skip
                          and not (c == TEXT and has_text)]

    @classmethod
    def of(cls, schema: Any, path: Path) -> _Layout:
        names = list(schema.names)
        for need in (ID, VECTOR):
            if need not in names:
                raise InvalidInputError(f"{path}: no {need!r} column (columns: {', '.join(names) or 'none'}); "
                                        f"a table of records has 'id', 'vector', optionally 'text', and metadata columns")
        info: dict[str, Any] = {}
        raw = (schema.metadata or {}).get(_SCHEMA_KEY)
        if raw is not None:
            try:
                info = json.loads(raw)
            except ValueError:
                info = {}
        keys = {c: c for c in names}
        keys.update(info.get("keys", {}))
        return cls(names, keys, set(info.get("json", [])), set(info.get("skip", [])),
                   TEXT in names, path)

    def decode(self, rb: Any, start: int, dim: int | None) -> tuple[list, np.ndarray, list[dict[str, Any]],
                                                                      list[str | None] | None]:
        cols = dict(zip(rb.schema.names, rb.columns, strict=True))
        ids = self._ids(cols[ID], start)
        vectors = self._vectors(cols[VECTOR], start, dim)
        texts = None
        if self.has_text:
            texts = cols[TEXT].to_pylist()
            for i, t in enumerate(texts):
                if t is not None and not isinstance(t, str):
                    raise InvalidInputError(f"{self.path} row {start + i}: text: expected a string, got {t!r}")
        metadata: list[dict[str, Any]] = [{} for _ in range(rb.num_rows)]
        for c in self.meta_cols:
            values = cols[c].to_pylist()
            key = self.keys.get(c, c)
            for i, v in enumerate(values):
                if v is None:
                    continue
                if c in self.json_cols:
                    v = json.loads(v)
                metadata[i][key] = v
        return ids, vectors, metadata, texts

    def _ids(self, col: Any, start: int) -> list:
        ids = col.to_pylist()
        for i, uid in enumerate(ids):
            if uid is None:
                raise InvalidInputError(f"{self.path} row {start + i}: id is null")
        if ID in self.json_cols:
            ids = [json.loads(u) for u in ids]
        return ids

    def _vectors(self, col: Any, start: int, dim: int | None) -> np.ndarray:
        pa = pyarrow()
        t = col.type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) or not (
                pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
            raise InvalidInputError(f"{self.path}: column 'vector' is {t}; expected a list of floats "
                                    "(fixed_size_list<float32> preferred)")
        if col.null_count:
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InvalidInputError(f"{self.path} row {start + i}: vector is null")
        n = len(col)
        if pa.types.is_fixed_size_list(t):
            width = t.list_size
            flat = col.flatten()
        else:
            offsets = col.offsets.to_numpy()
            lengths = np.diff(offsets)
            width = int(lengths[0]) if n else (dim or 0)
            bad = np.flatnonzero(lengths != (dim if dim is not None else width))
            if len(bad):
                i = int(bad[0])
                raise DimensionError(f"{self.path} row {start + i}: vector has {int(lengths[i])} values; "
                                     f"expected {dim if dim is not None else width}")
            flat = col.flatten()
        if dim is not None and width != dim:
            raise DimensionError(f"{self.path} row {start}: vector has {width} values; expected {dim}")
        if flat.null_count:
            i = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]) // max(width, 1)
            raise InvalidInputError(f"{self.path} row {start + i}: vector holds a null value")
        return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, width)


def id_runs(ids: list) -> list[slice]:
    """Slices of ``ids`` in which every id has the same kind (int or str). An id of neither kind
    (a float, None) stays in the run it interrupts, so that run's validation names it."""
    def kind(uid: Any) -> type | None:
        return str if isinstance(uid, str) else (int if isinstance(uid, int) and not isinstance(uid, bool) else None)

    out, s, current = [], 0, None
    for i, uid in enumerate(ids):
        k = kind(uid)
        if k is not None and current is not None and k is not current:
            out.append(slice(s, i))
            s = i
        current = k or current
    if ids:
        out.append(slice(s, len(ids)))
    return out


# --- writing -----------------------------------------------------------------------------------


def write_parquet(store_or_records: Any, path: str | os.PathLike[str], *, tiers: Sequence[str] | str | None = None,
                  batch_size: int = _BATCH, progress: ProgressFn | None = None, compression: str = "zstd") -> int:
    """Write records to a Parquet file; returns how many. ``store_or_records``: a store (every
    live record, or those of ``tiers``, through ``store.scan``: cold ones are fetched from S3), or
    an iterable of :class:`Record` or of lists of them. ``progress(done, total)``: records written
    (``total`` known for a store). The file appears complete or not at all (written to a temporary
    name, then renamed)."""
    pa = pyarrow()
    tick = Ticker(progress)
    batches = _batches_of(store_or_records, tiers, batch_size, tick)
    path = Path(path)
    n = 0
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent or ".") as tmp:
        parts: list[tuple[Path, _Part]] = []
        for batch in batches:
            if not batch:
                continue
            part = _Part.of(batch)
            fname = Path(tmp) / f"part-{len(parts):06d}.arrow"
            with pa.ipc.new_file(str(fname), part.table.schema) as w:
                w.write_table(part.table)
            part.table = None  # (read back from the file when merging)
            parts.append((fname, part))
            n += len(batch)
            tick.set(n)
        final = _Final([p for _, p in parts])
        tmp_out = Path(tmp) / "out.parquet"
        with pa.parquet.ParquetWriter(str(tmp_out), final.schema, compression=compression) as w:
            for fname, part in parts:
                with pa.memory_map(str(fname)) as src:
                    w.write_table(final.conform(pa.ipc.open_file(src).read_all(), part))
        os.replace(tmp_out, path)
    tick.finish(n)
    return n


def _record_batches(records: Any, batch_size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in records:
        items = item if isinstance(item, list | tuple) else [item]
        for r in items:
            if not isinstance(r, Record):
                raise InvalidInputError(f"store_or_records: expected a store or Records, got {type(r).__name__}")
            batch.append(r)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types, all the way down (1 is not 1.0, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


_ABSENT = object()  # a record without the metadata key (a null cell; a JSON null is a present None)


def _native(values: list[Any]) -> Any:
    """An Arrow array of ``values`` (``_ABSENT``: null) if it reads back exactly, else None (also
    when a value is None: a null cell means "no such key", so a present None is JSON-encoded)."""
    pa = pyarrow()
    if any(v is None for v in values):
        return None
    values = [None if v is _ABSENT else v for v in values]
    try:
        arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    back = arr.to_pylist()
    return arr if all(v is None or _same(v, w) for v, w in zip(values, back, strict=True)) else None


def _json_array(values: list[Any]) -> Any:
    """A string column of the values' JSON (``_ABSENT``: a null cell)."""
    pa = pyarrow()
    return pa.array([None if v is _ABSENT else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                     for v in values], pa.string())


class _Part:
    """One batch of records as a table: id, vector, text, tier, and a column per metadata key,
    native where the values allow (``json``: the keys that had to be JSON-encoded)."""

    def __init__(self, table: Any, dim: int, id_json: bool, keys: list[str], json_keys: set[str],
                 types: dict[str, Any], has_text: bool) -> None:
        self.table, self.dim, self.id_json, self.keys = table, dim, id_json, keys
        self.json_keys, self.types, self.has_text = json_keys, types, has_text
        self.id_str = not id_json and pyarrow().types.is_string(table.schema.field(ID).type)

    @classmethod
    def of(cls, batch: Sequence[Record]) -> _Part:
        pa = pyarrow()
        ids = [r.id for r in batch]
        id_json = len({isinstance(u, str) for u in ids}) > 1
        id_arr = _json_array(ids) if id_json else pa.array(ids, pa.string() if isinstance(ids[0], str) else pa.int64())
        vecs = np.stack([np.asarray(r.vector, np.float32) for r in batch])
        dim = vecs.shape[1]
        vec_arr = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)
        cols = {"id": id_arr, "vector": vec_arr, "tier": pa.array([r.tier for r in batch], pa.string())}
        texts = [r.text for r in batch]
        has_text = any(t is not None for t in texts)
        if has_text:
            cols["text"] = pa.array(texts, pa.string())
        keys: list[str] = []
        seen: set[str] = set()
        for r in batch:
            for k in r.metadata:
                if k not in seen:
                    seen.add(k)
                    keys.append(k)
        json_keys: set[str] = set()
        types: dict[str, Any] = {}
        for i, k in enumerate(keys):
            values = [r.metadata.get(k, _ABSENT) for r in batch]
            arr = _native(values)
            if arr is None:
                arr = _json_array(values)
                json_keys.add(k)
            types[k] = arr.type
            cols[f"m{i}"] = arr
        return cls(pa.table(cols), dim, id_json, keys, json_keys, types, has_text)


class _Final:
    """The file's schema: every part's columns unified (a key whose parts disagree on the type
    is JSON-encoded in all of them) and the ``tierstore`` schema metadata that says so."""

    def __init__(self, parts: Sequence[_Part]) -> None:
        pa = pyarrow()
        self.dim = parts[0].dim if parts else 0
        ids_str = {p.id_str for p in parts if not p.id_json}
        self.id_json = any(p.id_json for p in parts) or len(ids_str) > 1
        id_type = pa.string() if self.id_json or ids_str == {True} else pa.int64()
        self.has_text = any(p.has_text for p in parts)
        order: list[str] = []
        kinds: dict[str, set] = {}
        for p in parts:
            for k in p.keys:
                if k not in kinds:
                    order.append(k)
                    kinds[k] = set()
                kinds[k].add("json" if k in p.json_keys else p.types[k])
        self.types: dict[str, Any] = {}
        for k in order:
            typed = {t for t in kinds[k] if t != "json" and not pa.types.is_null(t)}
            self.types[k] = pa.string() if "json" in kinds[k] or len(typed) > 1 else (typed.pop() if typed else
                                                                                      pa.null())
        self.json_keys = {k for k in order if "json" in kinds[k] or len(
            {t for t in kinds[k] if t != "json" and not pa.types.is_null(t)}) > 1}
        reserved = {ID, VECTOR, TIER} | ({TEXT} if self.has_text else set())
        self.column: dict[str, str] = {}  # metadata key -> column name
        taken = set(reserved)
        for k in order:
            name = k
            while name in taken:
                name = f"metadata.{name}"
            taken.add(name)
            self.column[k] = name
        fields = [pa.field(ID, id_type, nullable=False),
                  pa.field(VECTOR, pa.list_(pa.float32(), self.dim), nullable=False)]
        if self.has_text:
            fields.append(pa.field(TEXT, pa.string()))
        fields += [pa.field(self.column[k], self.types[k]) for k in order]
        fields.append(pa.field(TIER, pa.string()))
        info = {"format": 1, "skip": [TIER],
                "json": ([ID] if self.id_json else []) + [self.column[k] for k in order if k in self.json_keys],
                "keys": {self.column[k]: k for k in order if self.column[k] != k}}
        self.order = order
        self.schema = pa.schema(fields, metadata={_SCHEMA_KEY: json.dumps(info).encode()})

    def conform(self, table: Any, part: _Part) -> Any:
        """``table`` (one part) with the file's columns, types and encodings."""
        pa = pyarrow()
        n = table.num_rows
        ids = table.column("id")
        if self.id_json and not part.id_json:
            ids = _json_array(ids.to_pylist())  # (ids are never null)
        cols = [ids, table.column("vector")]
        if self.has_text:
            cols.append(table.column("text") if part.has_text else pa.nulls(n, pa.string()))
        index = {k: f"m{i}" for i, k in enumerate(part.keys)}
        for k in self.order:
            if k not in index:
                cols.append(pa.nulls(n, self.types[k]))
                continue
            col = table.column(index[k])
            if k in self.json_keys and k not in part.json_keys:  # a native column's nulls are absent keys
                col = _json_array([_ABSENT if v is None else v for v in col.to_pylist()])
            elif pa.types.is_null(col.type) and not pa.types.is_null(self.types[k]):
                col = pa.nulls(n, self.types[k])
            cols.append(col)
        cols.append(table.column("tier"))
        return pa.Table.from_arrays(cols, schema=self.schema)


# --- .npz and .jsonl ------------------------------------------------------------------------------


def _batches_of(store_or_records: Any, tiers: Any, batch_size: int, tick: Ticker) -> Iterable[Any]:
    if hasattr(store_or_records, "scan"):
        tick.total = len(store_or_records) if tiers is None else None
        return store_or_records.scan(batch_size=batch_size, tiers=tiers)
    if tiers is not None:
        raise InvalidInputError("tiers: only allowed when writing a store (records are written as given)")
    return _record_batches(store_or_records, batch_size)


def write_npz(store_or_records: Any, path: str | os.PathLike[str], *, tiers: Sequence[str] | str | None = None,
              progress: ProgressFn | None = None) -> int:
    """Write records to one ``.npz`` (held in memory until written): ``vectors`` (n, dim)
    float32, ``ids`` (int64 or str; JSON text with ``id_json`` when a store holds both kinds),
    ``metadata`` (JSON per row), ``tiers``, and ``texts`` (JSON per row: a string or null) when
    any record has a text. :func:`read_npz` (``tierstore ingest``) reads it back."""
    tick = Ticker(progress)
    ids: list = []
    vecs: list[np.ndarray] = []
    metas: list[str] = []
    where: list[str] = []
    texts: list[str | None] = []
    dim = getattr(store_or_records, "dim", 0)
    for batch in _batches_of(store_or_records, tiers, _BATCH, tick):
        for r in batch:
            ids.append(r.id)
            vecs.append(np.asarray(r.vector, np.float32))
            metas.append(json.dumps(r.metadata, ensure_ascii=False))
            where.append(r.tier)
            texts.append(r.text)
        tick.set(len(ids))
    dim = vecs[0].shape[0] if vecs else dim
    arrays: dict[str, np.ndarray] = {"vectors": np.asarray(vecs, np.float32).reshape(len(vecs), dim),
                                     "metadata": np.asarray(metas, dtype=str), "tiers": np.asarray(where, dtype=str)}
    kinds = {isinstance(u, str) for u in ids}
    if len(kinds) > 1:
        arrays["ids"] = np.asarray([json.dumps(u) for u in ids], dtype=str)
        arrays["id_json"] = np.asarray(True)
    else:
        arrays["ids"] = np.asarray(ids, dtype=str if kinds == {True} else np.int64)
    if any(t is not None for t in texts):
        arrays["texts"] = np.asarray([json.dumps(t, ensure_ascii=False) for t in texts], dtype=str)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    tick.finish(len(ids))
    return len(ids)


def read_npz(path: str | os.PathLike[str], *, dim: int | None = None, batch_size: int = _BATCH, id_offset: int = 0,
             ) -> Iterator[tuple[list[str | int], np.ndarray, list[dict[str, Any]] | None, list[str | None] | None]]:
    """Batches of ``(ids, vectors, metadata, texts)`` from an ``.npz``: what :func:`write_npz`
    (``tierstore export x.npz``) writes, or any archive with a ``vectors`` array (ids: an ``ids``
    array, else ``id_offset`` + row number; ``metadata``: JSON objects per row, optional)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{path}: not a readable .npz archive ({exc})") from None
    if not hasattr(z, "files"):  # an .npy (one array) under an .npz name
        raise InvalidInputError(f"{path}: a single array, not an .npz archive of named arrays ('vectors', ...)")
    with z:
        if "vectors" not in z.files:
            raise InvalidInputError(f"{path}: no 'vectors' array (arrays: {', '.join(z.files) or 'none'})")
        vecs = z["vectors"]
        if vecs.ndim != 2 or (dim is not None and vecs.shape[1] != dim) or not np.issubdtype(vecs.dtype, np.number):
            raise DimensionError(f"{path}: 'vectors' is an array of {vecs.dtype}, shape {vecs.shape}; expected "
                                 f"(n, {dim if dim is not None else 'dim'}) numbers")
        n = vecs.shape[0]
        cols = {name: z[name] for name in ("ids", "metadata", "texts") if name in z.files}
        id_json = "id_json" in z.files and bool(z["id_json"])
    for name, arr in cols.items():
        if arr.shape != (n,):
            raise InvalidInputError(f"{path}: '{name}' has shape {arr.shape}; expected ({n},), one per vector")
    for s in range(0, n, batch_size):
        sl = slice(s, min(s + batch_size, n))
        if "ids" in cols:
            ids = [json.loads(u) for u in cols["ids"][sl].tolist()] if id_json else cols["ids"][sl].tolist()
        else:
            ids = list(range(id_offset + s, id_offset + sl.stop))
        metadata = None
        if "metadata" in cols:
            metadata = [_json_cell(path, "metadata", s + i, m) for i, m in enumerate(cols["metadata"][sl].tolist())]
        texts = None
        if "texts" in cols:
            texts = [_json_cell(path, "texts", s + i, t) for i, t in enumerate(cols["texts"][sl].tolist())]
        block = np.asarray(vecs[sl], dtype=np.float32)
        for run in id_runs(ids):
            yield (ids[run], block[run], None if metadata is None else metadata[run],
                   None if texts is None else texts[run])


def npz_rows(path: str | os.PathLike[str]) -> int | None:
    """The number of vectors in an ``.npz`` (from the ``vectors`` array's header, without reading
    it; None if it cannot be read)."""
    try:
        with np.load(path) as z, z.zip.open("vectors.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return int(header(f)[0][0])
    except (OSError, ValueError, EOFError, KeyError, IndexError, AttributeError, zipfile.BadZipFile):
        return None


def _json_cell(path: Path, name: str, row: int, raw: str) -> Any:
    if raw == "":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInputError(f"{path} row {row}: '{name}' is not JSON ({raw[:60]!r})") from None


def write_jsonl(store_or_records: Any, path: str | os.PathLike[str], *, tiers: Sequence[str] | str | None = None,
                progress: ProgressFn | None = None) -> int:
    """Write records as JSON lines ``{"id", "vector", "metadata", "tier"[, "text"]}`` (what
    ``tierstore ingest x.jsonl`` reads)."""
    tick = Ticker(progress)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for batch in _batches_of(store_or_records, tiers, _BATCH, tick):
                for r in batch:
                    row = {"id": r.id, "vector": np.asarray(r.vector, np.float32).tolist(), "metadata": r.metadata,
                           "tier": r.tier}
                    if r.text is not None:
                        row["text"] = r.text
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += len(batch)
                tick.set(n)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    tick.finish(n)
    return n


__all__ = ["MissingDependencyError", "id_runs", "npz_rows", "parquet_rows", "pyarrow", "read_npz", "read_parquet",
           "write_jsonl", "write_npz", "write_parquet"]
