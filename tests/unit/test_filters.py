"""Unit tests for tierstore.filters: validation, simplification, and the agreement of the columnar
evaluator (``mask``) and the RediSearch renderer with the reference predicate ``matches``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierstore import filters
from tierstore.errors import SchemaError
from tierstore.filters import (
    FALSE,
    TRUE,
    And,
    Cmp,
    Const,
    NumericColumn,
    Or,
    TagColumn,
    compile_filter,
    encode_tag,
    matches,
    to_redis,
)

SCHEMA = {"cat": "tag", "tags": "tag", "price": "numeric", "year": "numeric"}
TAG_FIELDS = [f for f, k in SCHEMA.items() if k == "tag"]
NUM_FIELDS = [f for f, k in SCHEMA.items() if k == "numeric"]


def compile_(spec):
    return compile_filter(spec, SCHEMA)


# --- parsing ---------------------------------------------------------------------------------------


def test_none_and_empty_are_true():
    assert compile_(None) is TRUE
    assert compile_({}) == TRUE


def test_equality_forms():
    assert compile_({"cat": "a"}) == Cmp("cat", "tag", "$eq", ("a",))
    assert compile_({"cat": {"$eq": "a"}}) == Cmp("cat", "tag", "$eq", ("a",))
    assert compile_({"price": 3}) == Cmp("price", "numeric", "$eq", (3.0,))
    assert compile_({"cat": True}) == Cmp("cat", "tag", "$eq", ("true",))
    assert compile_({"cat": {"$ne": False}}) == Cmp("cat", "tag", "$ne", ("false",))


def test_numeric_values_become_float():
    node = compile_({"price": {"$in": [1, 2.5]}})
    assert node == Cmp("price", "numeric", "$in", (1.0, 2.5))
    assert all(type(v) is float for v in node.values)


def test_several_keys_mean_and():
    node = compile_({"cat": "a", "price": {"$gte": 1, "$lt": 5}})
    assert node == And(
        (
            Cmp("cat", "tag", "$eq", ("a",)),
            And((Cmp("price", "numeric", "$gte", (1.0,)), Cmp("price", "numeric", "$lt", (5.0,)))),
        )
    )


def test_and_or():
    node = compile_({"$or": [{"cat": "a"}, {"$and": [{"price": {"$gt": 1}}, {"year": 2020}]}]})
    assert isinstance(node, Or)
    assert isinstance(node.children[1], And)
    assert filters.fields_of(node) == {"cat", "price", "year"}


def test_in_accepts_tuple():
    assert compile_({"cat": {"$in": ("a", "b")}}) == Cmp("cat", "tag", "$in", ("a", "b"))


def test_unknown_field():
    with pytest.raises(SchemaError, match=r"filter\.color: field 'color' is not declared in \[schema\]"):
        compile_({"color": "red"})
    with pytest.raises(SchemaError, match=r"declared: none"):
        compile_filter({"color": "red"}, {})
    with pytest.raises(SchemaError, match=r"filter\.\$or\[1\]\.color"):
        compile_({"$or": [{"cat": "a"}, {"color": "red"}]})


@pytest.mark.parametrize("spec", [[{"cat": "a"}], "cat", 5, ("cat", "a")])
def test_filter_must_be_dict(spec):
    with pytest.raises(SchemaError, match=r"a filter must be a dict"):
        compile_(spec)


def test_nested_filter_must_be_dict():
    with pytest.raises(SchemaError, match=r"filter\.\$and\[0\]: a filter must be a dict"):
        compile_({"$and": ["cat"]})


@pytest.mark.parametrize("op", ["$not", "$nor", "$where", "$in"])
def test_unknown_top_level_operator(op):
    with pytest.raises(SchemaError, match=r"unknown operator"):
        compile_({op: [{"cat": "a"}]})


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"cat": {"$gt": "a"}}, r"filter\.cat: operator '\$gt' is not valid on a tag field"),
        ({"cat": {"$lte": "a"}}, r"not valid on a tag field"),
        ({"price": {"$regex": "a"}}, r"filter\.price: operator '\$regex' is not valid on a numeric field"),
        ({"cat": {"$contains": "a"}}, r"not valid on a tag field"),
        ({"price": {"gt": 1}}, r"operator 'gt' is not valid"),
    ],
)
def test_bad_operators(spec, pattern):
    with pytest.raises(SchemaError, match=pattern):
        compile_(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"cat": 5},
        {"cat": 1.5},
        {"cat": None},
        {"cat": ["a", "b"]},  # a list is not an implicit $in
        {"cat": {"$in": ["a", 5]}},
        {"cat": {"$ne": b"a"}},
        {"tags": {"$eq": {"x": 1}}},
    ],
)
def test_wrong_value_type_for_tag(spec):
    with pytest.raises(SchemaError, match=r"tag values are str \(or bool\)"):
        compile_(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"price": "5"},
        {"price": True},
        {"price": None},
        {"price": {"$gt": float("nan")}},
        {"price": {"$lt": float("inf")}},
        {"price": {"$gte": -float("inf")}},
        {"price": {"$in": [1, "2"]}},
        {"price": {"$in": [1, False]}},
        {"price": [1, 2]},
    ],
)
def test_wrong_value_type_for_numeric(spec):
    with pytest.raises(SchemaError, match=r"numeric values must be finite int or float"):
        compile_(spec)


def test_huge_int_filter_value_is_schema_error():
    """A Python int beyond float range makes math.isfinite raise OverflowError, which escapes
    _value() instead of the documented SchemaError (and OverflowError is not a ValueError)."""
    with pytest.raises(SchemaError):
        compile_({"price": {"$lt": 10**400}})


@pytest.mark.parametrize("combinator", ["$and", "$or"])
@pytest.mark.parametrize("value", [[], (), "abc", {"cat": "a"}, 5, None])
def test_and_or_need_non_empty_list(combinator, value):
    with pytest.raises(SchemaError, match=rf"filter\.\{combinator}: must be a non-empty list of filters"):
        compile_({combinator: value})


@pytest.mark.parametrize("value", ["a", 5, {"a": 1}, None, {"a"}])
def test_in_needs_list(value):
    with pytest.raises(SchemaError, match=r"\.\$in: must be a list of values"):
        compile_({"cat": {"$in": value}})
    with pytest.raises(SchemaError, match=r"filter\.price\.\$in: must be a list of values"):
        compile_({"price": {"$in": value}})


def test_empty_condition():
    with pytest.raises(SchemaError, match=r"filter\.cat: empty condition"):
        compile_({"cat": {}})


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        compile_({"nope": 1})


# --- simplification --------------------------------------------------------------------------------


def test_empty_in_is_false():
    assert compile_({"cat": {"$in": []}}) == FALSE
    assert compile_({"price": {"$in": []}}) == FALSE


def test_simplification_of_combinations():
    a = Cmp("cat", "tag", "$eq", ("a",))
    assert compile_({"$and": [{"cat": {"$in": []}}, {"cat": "a"}]}) == FALSE
    assert compile_({"cat": {"$in": []}, "price": 1}) == FALSE
    assert compile_({"$or": [{"cat": {"$in": []}}, {"cat": "a"}]}) == a
    assert compile_({"$or": [{"cat": {"$in": []}}, {"price": {"$in": []}}]}) == FALSE
    assert compile_({"$and": [{}]}) == TRUE
    assert compile_({"$and": [{}, {"cat": "a"}]}) == a
    assert compile_({"$or": [{}, {"cat": "a"}]}) == TRUE
    assert compile_({"$or": [{"$and": [{}]}]}) == TRUE
    assert compile_({"$and": [{"cat": "a"}]}) == a  # single child collapses
    # an $in inside an $or inside an $and: absorbing FALSE propagates only where it should
    node = compile_({"$and": [{"$or": [{"cat": {"$in": []}}, {"price": 1}]}, {"cat": "a"}]})
    assert node == And((Cmp("price", "numeric", "$eq", (1.0,)), a))


def test_true_false_semantics():
    assert matches(TRUE, {}) is True
    assert matches(FALSE, {"cat": "a"}) is False
    assert to_redis(TRUE) == "*"
    with pytest.raises(ValueError):
        to_redis(FALSE)
    cols = {"cat": TagColumn.build(["a", None], "cat")}
    assert filters.mask(TRUE, cols, 2).tolist() == [True, True]
    assert filters.mask(FALSE, cols, 2).tolist() == [False, False]


# --- reference semantics (spot checks) ------------------------------------------------------------


def test_matches_examples():
    row = {"cat": ["books", "new"], "price": 12.5, "year": 2020}
    assert matches(compile_({"cat": "books"}), row)
    assert matches(compile_({"cat": {"$in": ["x", "new"]}}), row)
    assert not matches(compile_({"cat": {"$ne": "new"}}), row)
    assert matches(compile_({"cat": {"$ne": "old"}}), row)
    assert matches(compile_({"tags": {"$ne": "x"}}), row)  # missing field: $ne is true
    assert not matches(compile_({"tags": "x"}), row)
    assert matches(compile_({"price": {"$gt": 12, "$lte": 12.5}}), row)
    assert not matches(compile_({"price": {"$lt": 12.5}}), row)
    assert matches(compile_({"year": {"$in": [2019, 2020]}}), row)
    assert matches(compile_({"price": {"$ne": 1}}), {})
    assert not matches(compile_({"price": {"$gte": -1e300}}), {})
    assert matches(compile_({"cat": True}), {"cat": True})
    assert matches(compile_({"cat": "true"}), {"cat": True})
    assert not matches(compile_({"cat": {"$nin": ["x", "new"]}}), row)
    assert matches(compile_({"cat": {"$nin": ["x", "old"]}}), row)
    assert matches(compile_({"tags": {"$nin": ["x"]}}), row)  # missing field: $nin is true
    assert matches(compile_({"price": {"$exists": True}}), row)
    assert not matches(compile_({"price": {"$exists": False}}), row)
    assert matches(compile_({"price": {"$exists": False}}), {"price": None})
    assert compile_({"cat": {"$nin": []}}) == filters.TRUE


def test_to_redis_examples():
    assert to_redis(compile_({"cat": "a b"})) == "@cat:{x612062}"
    assert to_redis(compile_({"cat": {"$ne": "a"}})) == "-@cat:{x61}"
    assert to_redis(compile_({"cat": {"$in": ["a", ""]}})) == "@cat:{x61 | x}"
    assert to_redis(compile_({"price": 3})) == "@price:[3 3]"
    assert to_redis(compile_({"price": {"$ne": 2.5}})) == "-@price:[2.5 2.5]"
    assert to_redis(compile_({"price": {"$gt": 1}})) == "@price:[(1 +inf]"
    assert to_redis(compile_({"price": {"$gte": 1}})) == "@price:[1 +inf]"
    assert to_redis(compile_({"price": {"$lt": -1}})) == "@price:[-inf (-1]"
    assert to_redis(compile_({"price": {"$lte": 0}})) == "@price:[-inf 0]"
    assert to_redis(compile_({"price": {"$in": [1, 2]}})) == "(@price:[1 1] | @price:[2 2])"
    assert to_redis(compile_({"$or": [{"cat": "a"}, {"price": 1}]})) == "(@cat:{x61} | @price:[1 1])"
    assert to_redis(compile_({"cat": {"$nin": ["a", "b"]}})) == "-@cat:{x61 | x62}"
    assert to_redis(compile_({"price": {"$nin": [1, 2]}})) == "-(@price:[1 1] | @price:[2 2])"
    assert to_redis(compile_({"price": {"$exists": True}})) == "@price:[-inf +inf]"
    assert to_redis(compile_({"price": {"$exists": False}})) == "-@price:[-inf +inf]"


def test_exists_on_a_tag_field_is_a_clear_error():
    with pytest.raises(SchemaError, match=r"operator '\$exists' is not valid on a tag field .*RediSearch"):
        compile_({"cat": {"$exists": True}})
    with pytest.raises(SchemaError, match=r"\$exists: must be true or false"):
        compile_({"price": {"$exists": 1}})


def test_encode_tag_examples():
    assert encode_tag("") == "x"
    assert encode_tag("a") == "x61"
    assert encode_tag("é") == "xc3a9"
    assert encode_tag("A") != encode_tag("a")


@given(st.text())
def test_encode_tag_alphabet(s):
    out = encode_tag(s)
    assert re.fullmatch(r"x[0-9a-f]*", out)
    assert bytes.fromhex(out[1:]).decode("utf-8") == s


def test_tag_values_and_numeric_value():
    assert filters.tag_values("a", "f") == ("a",)
    assert filters.tag_values(["a", "b"], "f") == ("a", "b")
    assert filters.tag_values(("a",), "f") == ("a",)
    assert filters.tag_values([], "f") == ()
    assert filters.tag_values(False, "f") == ("false",)
    for bad in (1, 1.5, None, ["a", 1], {"a": 1}, b"a"):
        with pytest.raises(SchemaError, match=r"metadata field 'f' is a tag"):
            filters.tag_values(bad, "f")
    assert filters.numeric_value(3, "p") == 3.0
    for bad in ("3", True, None, [1]):
        with pytest.raises(SchemaError, match=r"metadata field 'p' is numeric"):
            filters.numeric_value(bad, "p")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(SchemaError, match=r"must be a finite int or float"):
            filters.numeric_value(bad, "p")


def test_columns_build():
    col = TagColumn.build(["a", ["a", "b"], None, [], True], "cat")
    assert col.n == 5
    assert col.contains_any(("a",)).tolist() == [True, True, False, False, False]
    assert col.contains_any(("true", "zzz")).tolist() == [False, False, False, False, True]
    assert col.contains_any(("zzz",)).tolist() == [False] * 5
    num = NumericColumn.build([1, None, 2.5], "price")
    assert num.n == 3
    assert np.isnan(num.data[1])
    # a value of another type (stored before the field was declared) is absent, as in matches()
    assert np.isnan(NumericColumn.build(["x"], "price").data[0])
    assert TagColumn.build([5], "cat").contains_any(("5",)).tolist() == [False]
    assert not matches(compile_({"price": {"$gte": 0}}), {"price": "x"})
    assert matches(compile_({"price": {"$ne": 0}}), {"price": "x"})


# --- property: mask == matches, to_redis renders -------------------------------------------------

AWKWARD_TAGS = [
    "a",
    "A",
    "b",
    "books",
    "a b",
    " a",
    "a ",
    "a,b",
    ",",
    "{x}",
    "}",
    "{",
    "-",
    "-a",
    "@",
    "@cat",
    "é",
    "日本",
    "🙂",
    "",
    " ",
    "\t",
    "true",
    "false",
    "x61",
    "\\",
    "|",
    "a|b",
    "*",
    "(",
    ")",
    "$",
    "'",
    '"',
    "a-b@c.d",
    "null",
    "0",
    "1.5",
]
tag_strings = st.one_of(st.sampled_from(AWKWARD_TAGS), st.text(max_size=4))
tag_row_values = st.one_of(
    tag_strings,
    st.lists(tag_strings, max_size=3),
    st.lists(tag_strings, max_size=3).map(tuple),
    st.booleans(),
    st.none(),
)
NUMS = [0, -0.0, 1, -1, 1.5, 2, 2.5, 10, 1e300, -1e300, 2**53, 2**53 + 1, 5e-324, -7]
numbers = st.one_of(
    st.sampled_from(NUMS),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
)
numeric_row_values = st.one_of(numbers, st.none())

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "cat": tag_row_values,
            "tags": tag_row_values,
            "price": numeric_row_values,
            "year": numeric_row_values,
            "other": st.text(max_size=2),  # not in the schema: ignored by every evaluator
        },
    ),
    max_size=12,
)

tag_filter_values = st.one_of(tag_strings, st.booleans())


@st.composite
def leaf_filters(draw):
    field = draw(st.sampled_from(list(SCHEMA)))
    if SCHEMA[field] == "tag":
        cond = draw(
            st.one_of(
                tag_filter_values,
                st.builds(lambda v: {"$eq": v}, tag_filter_values),
                st.builds(lambda v: {"$ne": v}, tag_filter_values),
                st.builds(lambda vs: {"$in": vs}, st.lists(tag_filter_values, max_size=3)),
                st.builds(lambda vs: {"$nin": vs}, st.lists(tag_filter_values, max_size=3)),
                st.builds(
                    lambda v, vs: {"$ne": v, "$in": vs},
                    tag_filter_values,
                    st.lists(tag_filter_values, max_size=3),
                ),
            )
        )
    else:
        ops = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
        cond = draw(
            st.one_of(
                numbers,
                st.dictionaries(ops, numbers, min_size=1, max_size=3),
                st.builds(lambda vs: {"$in": vs}, st.lists(numbers, max_size=3)),
                st.builds(lambda vs: {"$nin": vs}, st.lists(numbers, max_size=3)),
                st.builds(lambda b: {"$exists": b}, st.booleans()),
            )
        )
    return {field: cond}


def _merge_keys(parts):
    """Several field conditions in one dict (implicit AND); later duplicates of a field win."""
    out = {}
    for p in parts:
        out.update(p)
    return out


filter_specs = st.recursive(
    leaf_filters(),
    lambda kids: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(_merge_keys, st.lists(leaf_filters(), min_size=1, max_size=3)),
        st.builds(
            lambda xs, leaf: {"$or": xs, **leaf}, st.lists(kids, min_size=1, max_size=2), leaf_filters()
        ),
        st.just({}),
    ),
    max_leaves=8,
)


def _columns(rows):
    cols = {}
    for field, kind in SCHEMA.items():
        values = [row.get(field) for row in rows]
        cols[field] = TagColumn.build(values, field) if kind == "tag" else NumericColumn.build(values, field)
    return cols


def _no_nested_consts(node) -> bool:
    if isinstance(node, Cmp):
        return True
    if isinstance(node, Const):
        return False
    return all(_no_nested_consts(c) for c in node.children)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=filter_specs, rows=rows_strategy)
def test_mask_agrees_with_matches(spec, rows):
    node = compile_(spec)
    want = [matches(node, row) for row in rows]
    got = filters.mask(node, _columns(rows), len(rows))
    assert got.dtype == np.bool_
    assert got.shape == (len(rows),)
    assert got.tolist() == want


@settings(max_examples=100, deadline=None)
@given(spec=filter_specs)
def test_to_redis_renders(spec):
    node = compile_(spec)
    if isinstance(node, Const):
        if node.value:
            assert to_redis(node) == "*"
        else:
            with pytest.raises(ValueError):
                to_redis(node)
        return
    # after simplification no constant survives below the root
    assert _no_nested_consts(node)
    text = to_redis(node)
    assert isinstance(text, str) and text
    # tag values only ever appear hex-encoded inside {...}
    for body in re.findall(r"\{([^}]*)\}", text):
        assert re.fullmatch(r"x[0-9a-f]*( \| x[0-9a-f]*)*", body), body
    for field in filters.fields_of(node):
        assert f"@{field}:" in text


@settings(max_examples=60, deadline=None)
@given(spec=filter_specs, rows=rows_strategy)
def test_compile_is_idempotent_on_semantics(spec, rows):
    """Wrapping a filter in $and/$or of one child, or AND-ing it with {} never changes its meaning."""
    node = compile_(spec)
    for wrapped in (
        {"$and": [spec]},
        {"$or": [spec]},
        {"$and": [spec, {}]},
        {"$or": [spec, {"cat": {"$in": []}}]},
    ):
        other = compile_(wrapped)
        assert [matches(other, r) for r in rows] == [matches(node, r) for r in rows]
