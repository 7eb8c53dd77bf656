"""Framework filters -> tierstore's filter language (tierstore/filters.py).

LangChain has no filter standard of its own; its stores mostly take MongoDB-style dicts (Chroma,
PGVector, MongoDB Atlas, ...), which is tierstore's own syntax, so those pass through with a few
translations. LlamaIndex has ``MetadataFilters``, translated operator by operator. What tierstore
cannot evaluate exactly raises :class:`SchemaError` naming it, never a silently wider answer.
Fields must be declared in the store's ``[schema]``; the store itself checks that (and the
values' types) and raises :class:`SchemaError` for an undeclared field.

>>> from_mongo({"year": {"$between": [2000, 2010]}, "lang": "en"})
{'year': {'$gte': 2000, '$lte': 2010}, 'lang': 'en'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SchemaError

# operators tierstore evaluates itself; $between is rewritten; anything else is refused
NATIVE = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")


def from_mongo(spec: Any, where: str = "filter") -> dict[str, Any] | None:
    """A LangChain (MongoDB-style) dict filter as a tierstore filter. ``None``/``{}``: no filter."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, Mapping):
        raise SchemaError(f"{where}: a Python callable cannot be evaluated by the store's indexes; "
                          "pass a dict filter over [schema] fields")
    if not isinstance(spec, Mapping):
        raise SchemaError(f"{where}: expected a dict filter, got {type(spec).__name__}")
    return _node(spec, where) or None


def _node(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, cond in spec.items():
        if key in ("$and", "$or"):
            if isinstance(cond, str) or not isinstance(cond, Sequence):
                raise SchemaError(f"{where}.{key}: must be a list of filters")
            out[key] = [_node(_mapping(c, f"{where}.{key}[{i}]"), f"{where}.{key}[{i}]") for i, c in enumerate(cond)]
        elif isinstance(key, str) and key.startswith("$"):
            raise SchemaError(f"{where}: operator {key!r} is not supported at this level "
                              "(tierstore combines filters with $and and $or; $not/$nor have no exact form)")
        else:
            out[key] = _field(cond, f"{where}.{key}")
    return out


def _mapping(spec: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(spec, Mapping):
        raise SchemaError(f"{where}: expected a dict filter, got {spec!r}")
    return spec


def _field(cond: Any, where: str) -> Any:
    if not isinstance(cond, Mapping):
        return cond  # plain equality
    ops: dict[str, Any] = {}
    for op, value in cond.items():
        if op == "$between":
            if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
                raise SchemaError(f"{where}.$between: expected [low, high], got {value!r}")
            ops["$gte"], ops["$lte"] = value[0], value[1]
        elif op in NATIVE:
            ops[op] = value
        else:
            raise SchemaError(f"{where}: operator {op!r} is not supported (supported: "
                              f"{', '.join(NATIVE)}, $between; combine with $and / $or)")
    return ops


# --- LlamaIndex ----------------------------------------------------------------------------------------


def from_llama(filters: Any, schema: Mapping[str, str], where: str = "filters") -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` as a tierstore filter. ``None`` or no filters: no filter.

    EQ, NE, GT, GTE, LT, LTE, IN, NIN map one to one; on a ``tag`` field (a str or a list of str
    per record) CONTAINS is equality, ANY is IN and ALL an AND of equalities -- what a tag means.
    Conditions AND and OR nest. NOT, IS_EMPTY, TEXT_MATCH and the array operators on numeric
    fields raise :class:`SchemaError`."""
    from llama_index.core.vector_stores.types import FilterCondition, MetadataFilters

    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise SchemaError(f"{where}: expected MetadataFilters, got {type(filters).__name__}")
    if not filters.filters:
        return None
    parts = []
    for i, f in enumerate(filters.filters):
        w = f"{where}.filters[{i}]"
        parts.append(from_llama(f, schema, w) if isinstance(f, MetadataFilters) else _llama_leaf(f, schema, w))
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if cond == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else {"$or": parts}
    raise SchemaError(f"{where}.condition: {cond.value!r} is not supported (and, or): a negation has no "
                      "exact form over records that lack the field")


_SIMPLE = {"==": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte", "in": "$in", "nin": "$nin"}


def _llama_leaf(f: Any, schema: Mapping[str, str], where: str) -> dict[str, Any]:
    op, key, value = f.operator.value, f.key, f.value
    if op in _SIMPLE:
        if op in ("in", "nin") and (isinstance(value, str) or not isinstance(value, list)):
            raise SchemaError(f"{where}: operator {op!r} needs a list of values, got {value!r}")
        return {key: {_SIMPLE[op]: value}}
    if op in ("contains", "any", "all"):
        if schema.get(key) != "tag":
            raise SchemaError(f"{where}: operator {op!r} is supported on tag fields only "
                              f"({key!r} is {schema.get(key) or 'not declared in [schema]'})")
        if op == "contains":
            return {key: {"$eq": value}}
        if isinstance(value, str) or not isinstance(value, list) or not value:
            raise SchemaError(f"{where}: operator {op!r} needs a non-empty list of values, got {value!r}")
        if op == "any":
            return {key: {"$in": value}}
        return {"$and": [{key: {"$eq": v}} for v in value]}
    raise SchemaError(f"{where}: operator {op!r} is not supported (supported: ==, !=, >, >=, <, <=, in, nin; "
                      "contains, any, all on tag fields)")


__all__ = ["NATIVE", "from_llama", "from_mongo"]
