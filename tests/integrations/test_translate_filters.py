"""Framework filters -> tierstore filters, without a store (tierstore.integrations.translate)."""

from __future__ import annotations

import pytest
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from tierstore import SchemaError
from tierstore.integrations.translate import from_llama, from_mongo

SCHEMA = {"t": "tag", "n": "numeric"}


def test_mongo_passes_through_and_rewrites_between():
    assert from_mongo(None) is None and from_mongo({}) is None
    spec = {"$or": [{"t": "a"}, {"n": {"$between": [1, 2], "$ne": 1.5}}], "t": {"$nin": ["b"]}}
    assert from_mongo(spec) == {"$or": [{"t": "a"}, {"n": {"$gte": 1, "$lte": 2, "$ne": 1.5}}], "t": {"$nin": ["b"]}}
    for bad, word in [({"$nor": [{"t": "a"}]}, "nor"), ({"t": {"$regex": "a.*"}}, "regex"), ({"$and": {"t": "a"}}, "list"),
                      ({"$or": ["t"]}, "dict"), ("t == 'a'", "dict"), ({"n": {"$between": [1, 2, 3]}}, "low, high")]:
        with pytest.raises(SchemaError, match=word):
            from_mongo(bad)


def _leaf(key, op, value):
    return MetadataFilter(key=key, value=value, operator=op)


def test_llama_operators():
    one = lambda op, v, key="n": from_llama(MetadataFilters(filters=[_leaf(key, op, v)]), SCHEMA)  # noqa: E731
    assert one(FilterOperator.EQ, 3) == {"n": {"$eq": 3}}
    assert one(FilterOperator.NIN, [1, 2]) == {"n": {"$nin": [1, 2]}}
    assert one(FilterOperator.CONTAINS, "x", "t") == {"t": {"$eq": "x"}}
    assert one(FilterOperator.ANY, ["x", "y"], "t") == {"t": {"$in": ["x", "y"]}}
    assert one(FilterOperator.ALL, ["x", "y"], "t") == {"$and": [{"t": {"$eq": "x"}}, {"t": {"$eq": "y"}}]}
    nested = MetadataFilters(filters=[_leaf("n", FilterOperator.GT, 1),
                                      MetadataFilters(filters=[_leaf("t", FilterOperator.EQ, "a"),
                                                               _leaf("t", FilterOperator.EQ, "b")],
                                                      condition=FilterCondition.OR)])
    assert from_llama(nested, SCHEMA) == {"$and": [{"n": {"$gt": 1}}, {"$or": [{"t": {"$eq": "a"}}, {"t": {"$eq": "b"}}]}]}
    assert from_llama(None, SCHEMA) is None and from_llama(MetadataFilters(filters=[]), SCHEMA) is None
    for op, v, key, word in [(FilterOperator.IN, "x", "t", "list"), (FilterOperator.ALL, [], "t", "non-empty"),
                             (FilterOperator.ANY, [1], "n", "tag fields only"), (FilterOperator.IS_EMPTY, None, "t", "is_empty"),
                             (FilterOperator.TEXT_MATCH_INSENSITIVE, "x", "t", "text_match_insensitive")]:
        with pytest.raises(SchemaError, match=word):
            one(op, v, key)
    with pytest.raises(SchemaError, match="MetadataFilters"):
        from_llama({"n": 1}, SCHEMA)
