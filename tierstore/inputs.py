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

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import filters
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


def _check_value(value: Any, where: str) -> Any:
    """The value as plain JSON-able Python (numpy scalars unwrapped, tuples -> lists)."""
    if isinstance(value, np.generic) and isinstance(value, np.bool_ | np.integer | np.floating):
        value = value.item()
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SchemaError(
        f"{where}: {value!r} ({type(value).__name__}) is not supported; metadata values are "
        "str, int, float, bool or a list of str"
    )


def clean_metadata(metadata: Any, n: int, schema: Mapping[str, str]) -> list[tuple[dict[str, Any], bytes]]:
    """Validate ``metadata`` (None or one mapping-or-None per vector) -> per row, the clean dict
    (numpy scalars unwrapped, tuples as lists) and its JSON bytes (``b""`` for none)."""
    if metadata is None:
        return [({}, b"")] * n
    if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
        raise InvalidInputError("metadata: expected a list with one dict (or None) per vector")
    if len(metadata) != n:
        raise InvalidInputError(f"metadata: {len(metadata)} entries for {n} vectors")
    out: list[tuple[dict[str, Any], bytes]] = []
    for i, md in enumerate(metadata):
        if md is None or (isinstance(md, Mapping) and not md):
            out.append(({}, b""))
            continue
        if not isinstance(md, Mapping):
            raise InvalidInputError(f"metadata[{i}]: expected a dict or None, got {type(md).__name__}")
        clean: dict[str, Any] = {}
        for key, value in md.items():
            if not isinstance(key, str):
                raise SchemaError(f"metadata[{i}]: key {key!r} is not a str")
            where = f"metadata[{i}][{key!r}]"
            value = _check_value(value, where)
            kind = schema.get(key)
            if kind == "tag":
                filters.tag_values(value, key)
            elif kind == "numeric":
                filters.numeric_value(value, key)
            clean[key] = value
        try:
            raw = json.dumps(clean, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except UnicodeEncodeError as exc:
            raise SchemaError(f"metadata[{i}]: holds text that is not valid Unicode ({exc.reason})") from None
        out.append((clean, raw))
    return out


def encode_metadata(metadata: Any, n: int, schema: Mapping[str, str]) -> list[bytes]:
    """:func:`clean_metadata`, JSON bytes only."""
    return [raw for _clean, raw in clean_metadata(metadata, n, schema)]


__all__ = ["MAX_K", "check_k", "check_positive", "check_tiers", "check_unique", "clean_metadata", "encode_metadata",
           "query_vector", "vectors_2d"]
