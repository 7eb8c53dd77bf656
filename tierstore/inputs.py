"""Validation of what callers pass in: vectors, metadata, k, tier names.

Every check raises a subclass of both :class:`TierStoreError` and ``ValueError`` with a message
that says which argument (and which row) is wrong and what is allowed. Validation happens before
anything is written, so a rejected batch writes nothing.

>>> vectors_2d([[1, 0], [0, 1]], dim=2, metric="cosine").dtype
dtype('float32')
>>> vectors_2d([[1, float("nan")]], dim=2, metric="l2")
Traceback (most recent call last):
...
tierstore.errors.DimensionError: vectors[0] holds NaN or inf; every value must be a finite number
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import filters
from .catalog import TEXT_KEY
from .errors import DimensionError, InvalidInputError, SchemaError

MAX_K = 10_000  # RediSearch's KNN limit per query; larger pages should use scan()


def as_float32(data: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise DimensionError(f"{what}: not a rectangular array of numbers ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DimensionError(f"{what}: expected numbers, got an array of {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating) or arr.dtype == np.bool_:
        raise DimensionError(f"{what}: expected real numbers, got {arr.dtype}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
        return np.ascontiguousarray(arr, dtype=np.float32)


def _check_rows(arr: np.ndarray, what: str, metric: str) -> None:
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DimensionError(f"{what}[{i}] holds NaN or inf; every value must be a finite number")
    if metric == "cosine":
        zero = ~arr.any(axis=1)
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise DimensionError(f"{what}[{i}] is all zeros: cosine distance is undefined for it")


def vectors_2d(data: Any, *, dim: int, metric: str, what: str = "vectors") -> np.ndarray:
    """``(n, dim)`` float32, C-contiguous, finite (non-zero for cosine). A ``(dim,)`` is one row."""
    arr = as_float32(data, what)
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DimensionError(f"{what}: expected shape (n, {dim}), got {arr.shape}; this store's dim is {dim}")
    _check_rows(arr, what, metric)
    return arr


def query_vector(data: Any, *, dim: int, metric: str) -> np.ndarray:
    """One query vector ``(dim,)`` (a ``(1, dim)`` is accepted too)."""
    if type(data) is np.ndarray and data.dtype == np.float32 and data.shape == (dim,) and data.flags.c_contiguous:
        # Fast path (the common case, on every query): one dot product proves "finite and
        # non-zero"; only an overflowing or zero norm needs the full check below.
        norm = float(data @ data)
        if 0.0 < norm < math.inf:
            return data
    arr = as_float32(data, "vector")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (dim,):
        raise DimensionError(
            f"vector: expected shape ({dim},), got {arr.shape}; use query_batch() for several vectors"
        )
    _check_rows(arr.reshape(1, dim), "vector", metric)
    return arr


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k: {k!r} is not allowed: must be an integer in 1..{MAX_K}")
    return int(k)


def check_positive(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= 100_000:
        raise InvalidInputError(f"{name}: {value!r} is not allowed: must be an integer in 1..100000")
    return int(value)


def check_tiers(tiers: Any, enabled: Sequence[str]) -> list[str]:
    """``None`` -> every enabled tier; otherwise a str or a list of tier names."""
    if tiers is None:
        return list(enabled)
    names = [tiers] if isinstance(tiers, str) else list(tiers)
    for t in names:
        if t not in ("hot", "warm", "cold"):
            raise InvalidInputError(f"tiers: unknown tier {t!r}; tiers are 'hot', 'warm', 'cold'")
        if t not in enabled:
            raise InvalidInputError(f"tiers: tier {t!r} is not enabled in this store (enabled: {list(enabled)})")
    if not names:
        raise InvalidInputError("tiers: empty list; pass None to search every tier")
    return [t for t in enabled if t in names]


def check_unique(ids: Sequence[str | int]) -> None:
    """Duplicate ids in one write batch are an error (not "last wins"): they almost always mean
    a bug upstream, and silently dropping one of two different vectors would lose data."""
    if len(set(ids)) != len(ids):
        seen: set[str | int] = set()
        for i, uid in enumerate(ids):
            if uid in seen:
                raise InvalidInputError(f"ids[{i}]: {uid!r} appears more than once in this batch")
            seen.add(uid)


_MAX_DEPTH = 64  # nesting deeper than this is almost surely a cycle or a bug
_MAX_INT_BITS = 8192  # ~2,466 digits: below Python's default int <-> str limit (4,300 digits)


def _check_value(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as plain JSON Python: what ``json.loads(json.dumps(value))`` gives back, so a
    record reads back exactly as it was stored. Numpy scalars and arrays are unwrapped, tuples
    become lists (JSON has no tuple), dates and datetimes become ISO 8601 strings (the documented
    rule: declare a numeric field and store epoch seconds to range-filter on time). Anything
    else JSON cannot hold -- NaN/inf, non-str dict keys, sets, bytes, objects -- is an error."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise SchemaError(f"{where}: an integer of {value.bit_length()} bits is too large to store "
                              f"(at most {_MAX_INT_BITS} bits: every reader must be able to parse it back)")
        return int(value)  # an IntEnum or bool subclass becomes the plain int JSON reads back
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{where}: {value!r} is not a finite number")
        return float(value)
    if isinstance(value, np.generic) and isinstance(value, np.bool_ | np.integer | np.floating):
        return _check_value(value.item(), where, depth)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if depth >= _MAX_DEPTH:
        raise SchemaError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_check_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SchemaError(f"{where}: key {k!r} is not a str (JSON object keys are strings)")
            out[k] = _check_value(v, f"{where}[{k!r}]", depth + 1)
        return out
    raise SchemaError(
        f"{where}: {value!r} ({type(value).__name__}) is not supported; metadata values are what "
        "JSON holds: None, bool, int, float, str, lists and dicts of them (dates become ISO strings)"
    )


def check_texts(texts: Any, n: int) -> list[str | None]:
    """``texts``: None, or one str (or None) per vector -- the records' document text."""
    if texts is None:
        return [None] * n
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise InvalidInputError("texts: expected a list with one str (or None) per vector")
    if len(texts) != n:
        raise InvalidInputError(f"texts: {len(texts)} entries for {n} vectors")
    for i, t in enumerate(texts):
        if t is not None and not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}]: expected a str or None, got {type(t).__name__}")
        if t is not None and not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(f"texts[{i}]: not valid Unicode text ({exc.reason})") from None
    return list(texts)


def clean_metadata(metadata: Any, n: int, schema: Mapping[str, str],
                   texts: Sequence[str | None] | None = None) -> list[tuple[dict[str, Any], bytes]]:
    """Validate ``metadata`` (None or one mapping-or-None per vector) -> per row, the clean dict
    (as JSON reads it back; with the row's text under the catalog's text key) and its JSON bytes
    (``b""`` for none). Declared ``[schema]`` fields must have their type (or be None: absent)."""
    if metadata is None:
        metadata = [None] * n
    elif isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
        raise InvalidInputError("metadata: expected a list with one dict (or None) per vector")
    if len(metadata) != n:
        raise InvalidInputError(f"metadata: {len(metadata)} entries for {n} vectors")
    out: list[tuple[dict[str, Any], bytes]] = []
    for i, md in enumerate(metadata):
        text = texts[i] if texts is not None else None
        if (md is None or (isinstance(md, Mapping) and not md)) and text is None:
            out.append(({}, b""))
            continue
        if md is not None and not isinstance(md, Mapping):
            raise InvalidInputError(f"metadata[{i}]: expected a dict or None, got {type(md).__name__}")
        clean: dict[str, Any] = {}
        for key, value in (md or {}).items():
            if not isinstance(key, str):
                raise SchemaError(f"metadata[{i}]: key {key!r} is not a str")
            if key.startswith("\x00"):
                raise SchemaError(f"metadata[{i}]: key {key!r} starts with NUL (reserved for the store)")
            where = f"metadata[{i}][{key!r}]"
            value = _check_value(value, where)
            kind = schema.get(key)
            try:
                if value is None:
                    pass  # a declared field with None is absent: no filter matches it (but $ne/$nin)
                elif kind == "tag":
                    filters.tag_values(value, key)
                elif kind == "numeric":
                    filters.numeric_value(value, key)
            except SchemaError as exc:
                raise SchemaError(f"metadata[{i}][{key!r}]: {exc}") from None
            clean[key] = value
        if text is not None:
            clean[TEXT_KEY] = text
        try:
            raw = json.dumps(clean, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except UnicodeEncodeError as exc:
            raise SchemaError(f"metadata[{i}]: holds text that is not valid Unicode ({exc.reason})") from None
        out.append((clean, raw))
    return out


def encode_metadata(metadata: Any, n: int, schema: Mapping[str, str]) -> list[bytes]:
    """:func:`clean_metadata`, JSON bytes only."""
    return [raw for _clean, raw in clean_metadata(metadata, n, schema)]


__all__ = ["MAX_K", "check_k", "check_positive", "check_texts", "check_tiers", "check_unique", "clean_metadata",
           "encode_metadata",
           "query_vector", "vectors_2d"]
