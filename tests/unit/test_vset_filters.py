"""The vector-set backend's attribute JSON and FILTER expressions (no server: the expressions are
run by Redis itself in tests/integration/test_hot_vectorset.py)."""

from __future__ import annotations

import json
import math
import re
import struct

import numpy as np
import pytest

from tierstore import filters
from tierstore.tiers.hot.vectorset import attributes, number, render_filter

SCHEMA = {"kind": "tag", "price": "numeric"}

# What the FILTER tokenizer accepts as a number: digits, '.', 'e' and only a leading '-'.
_TOKEN = re.compile(r"-?[0-9.e]+")
_PRODUCT = re.compile(r"\((-?\d+) \* 2 \*\* (-\d+)\)")


def parse_number(text: str) -> float:
    """How Redis reads what number() wrote (strtod, or the product m * pow(2, e))."""
    m = _PRODUCT.fullmatch(text)
    if m:
        return int(m.group(1)) * math.pow(2.0, int(m.group(2)))
    assert _TOKEN.fullmatch(text) and "-" not in text[1:], text
    return float(text)


EDGE = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 1e-5, -1e-7, 1e16, 1e20, 1.7976931348623157e308, -1e300,
        2.2250738585072014e-308, 1e-300, 5e-324, -5e-324, 123456789.123, 2.0**53 + 2, 1e-200, 1e-230]


@pytest.mark.parametrize("x", EDGE)
def test_number_round_trips_exactly(x):
    text = number(x)
    assert len(text) < 256  # the tokenizer's buffer
    y = parse_number(text)
    assert y == x and math.copysign(1, y) == math.copysign(1, x), (x, text)


def test_number_round_trips_random_doubles():
    rng = np.random.default_rng(0)
    for bits in rng.integers(0, 2**63, 3000, dtype=np.uint64):
        x = struct.unpack("<d", struct.pack("<Q", int(bits) | (int(rng.integers(2)) << 63)))[0]
        if math.isfinite(x):
            assert parse_number(number(x)) == x, x


def test_attributes_write_every_field():
    schema = {"t": "tag", "n": "numeric", "b": "tag"}
    doc = json.loads(attributes({"t": ["a", "é"], "n": 3, "b": True, "other": "x"}, schema))
    assert doc == {"t": ["x61", "xc3a9"], "n": 3.0, "__n": 1, "b": ["x74727565"]}
    # absent fields are still written: a missing selector fails a whole expression in Redis
    assert json.loads(attributes({}, schema)) == {"t": [], "n": 0, "__n": 0, "b": []}


RENDERED = [
    ({"kind": "a"}, '("x61" in .kind)'),
    ({"kind": {"$in": ["a", "b"]}}, '("x61" in .kind or "x62" in .kind)'),
    ({"kind": {"$ne": "a"}}, 'not ("x61" in .kind)'),
    ({"price": 3}, "(.__price and .price == 3.0)"),
    ({"price": {"$ne": -2}}, "not (.__price and .price == -2.0)"),
    ({"price": {"$gt": 1e-5, "$lte": 1e20}}, "((.__price and .price > 0.00001) and (.__price and .price <= 1e20))"),
    ({"price": {"$in": [1, 2.5]}}, "(.__price and .price in [1.0, 2.5])"),
    ({"price": {"$in": [1, 5e-324]}}, "(.__price and (.price == 1.0 or .price == (1 * 2 ** -1074)))"),
    ({"$or": [{"kind": "a"}, {"$and": [{"price": {"$lt": 0}}, {"kind": "b"}]}]},
     '(("x61" in .kind) or ((.__price and .price < 0.0) and ("x62" in .kind)))'),
]


@pytest.mark.parametrize("spec,expr", RENDERED)
def test_render_filter(spec, expr):
    assert render_filter(filters.compile_filter(spec, SCHEMA)) == expr


def test_rendered_tags_never_need_escaping():
    values = ['"', "'", "\\", "a b", "ünï", "", "x" * 100, "in", ".kind"]
    expr = render_filter(filters.compile_filter({"kind": {"$in": values}}, SCHEMA))
    for lit in re.findall(r'"([^"]*)"', expr):
        assert re.fullmatch(r"x[0-9a-f]*", lit)
