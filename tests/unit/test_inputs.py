"""Unit tests for tierstore.inputs: validation of vectors, k, ids and metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tierstore.catalog import TEXT_KEY
from tierstore.errors import DimensionError, InvalidInputError, SchemaError, TierStoreError
from tierstore.inputs import (
    MAX_K,
    check_k,
    check_positive,
    check_texts,
    check_tiers,
    check_unique,
    clean_metadata,
    encode_metadata,
    query_vector,
    vectors_2d,
)

SCHEMA = {"cat": "tag", "price": "numeric"}


# --- vectors_2d ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        [[1, 0, 0], [0, 1, 0]],
        np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64),
        np.array([[1, 0, 0], [0, 1, 0]], dtype=np.int16),
        np.asfortranarray(np.array([[1.0, 0, 0], [0, 1, 0]], dtype=np.float32)),
        np.array([[1, 0, 0, 9], [0, 1, 0, 9]], dtype=np.float32)[:, :3],  # non-contiguous view
    ],
)
def test_vectors_2d_ok(data):
    out = vectors_2d(data, dim=3, metric="cosine")
    assert out.dtype == np.float32
    assert out.shape == (2, 3)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 1, 0]])


def test_vectors_2d_single_row_and_empty():
    assert vectors_2d([1, 2, 3], dim=3, metric="l2").shape == (1, 3)
    assert vectors_2d(np.zeros((0, 3)), dim=3, metric="cosine").shape == (0, 3)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ([[1, 2]], r"vectors: expected shape \(n, 3\), got \(1, 2\); this store's dim is 3"),
        ([1, 2], r"expected shape \(n, 3\), got \(2,\)"),
        ([[[1, 2, 3]]], r"got \(1, 1, 3\)"),
        (5.0, r"expected shape \(n, 3\), got \(1,\)"),  # a scalar becomes a 1-element row
        ([], r"got \(0,\)"),
        ([[1, 2, 3], [1, 2]], r"vectors: not a rectangular array of numbers"),
        ([[1, 2, 3], [1, 2, "x"]], r"vectors: expected numbers"),
        ([["1", "2", "3"]], r"vectors: expected numbers, got an array of <U1"),
        ("abc", r"vectors: expected numbers"),
        ([[1, None, 3]], r"expected numbers, got an array of object"),
        ([[True, False, True]], r"expected real numbers, got bool"),
        (np.array([[1 + 1j, 0, 0]]), r"expected real numbers, got complex128"),
        ([[1, float("nan"), 3]], r"vectors\[0\] holds NaN or inf; every value must be a finite number"),
        ([[1, 2, 3], [1, float("inf"), 3]], r"vectors\[1\] holds NaN or inf"),
        ([[1, 2, 3], [1e300, 0, 0]], r"vectors\[1\] holds NaN or inf"),  # float32 overflow
    ],
)
def test_vectors_2d_errors(data, pattern):
    with pytest.raises(DimensionError, match=pattern) as info:
        vectors_2d(data, dim=3, metric="l2")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TierStoreError)


def test_vectors_2d_zero_vector():
    with pytest.raises(DimensionError, match=r"vectors\[1\] is all zeros: cosine distance is undefined"):
        vectors_2d([[1, 0, 0], [0, 0, 0]], dim=3, metric="cosine")
    # only cosine cares
    for metric in ("l2", "ip"):
        assert vectors_2d([[0, 0, 0]], dim=3, metric=metric).shape == (1, 3)
    # tiny values that survive float32 conversion are not zero; ones that underflow are
    assert vectors_2d([[1e-30, 0, 0]], dim=3, metric="cosine").shape == (1, 3)
    with pytest.raises(DimensionError, match=r"all zeros"):
        vectors_2d(np.array([[1e-50, 0, 0]]), dim=3, metric="cosine")


def test_vectors_2d_custom_name():
    with pytest.raises(DimensionError, match=r"^queries\[0\] holds NaN"):
        vectors_2d([[np.nan, 1, 1]], dim=3, metric="l2", what="queries")


# --- query_vector ------------------------------------------------------------------------------


def test_query_vector_ok():
    out = query_vector([1, 2, 3], dim=3, metric="cosine")
    assert out.shape == (3,) and out.dtype == np.float32
    assert query_vector([[1, 2, 3]], dim=3, metric="l2").shape == (3,)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ([1, 2], r"vector: expected shape \(3,\), got \(2,\); use query_batch\(\)"),
        ([[1, 2, 3], [4, 5, 6]], r"got \(2, 3\)"),
        ([[[1, 2, 3]]], r"got \(1, 1, 3\)"),
        (1.0, r"expected shape \(3,\), got \(1,\)"),
        ("abc", r"vector: expected numbers"),
        ([1, [2], 3], r"vector: not a rectangular array"),
        ([1, float("nan"), 3], r"vector\[0\] holds NaN or inf"),
        ([1, -float("inf"), 3], r"vector\[0\] holds NaN or inf"),
    ],
)
def test_query_vector_errors(data, pattern):
    with pytest.raises(DimensionError, match=pattern) as info:
        query_vector(data, dim=3, metric="l2")
    assert isinstance(info.value, ValueError)


def test_query_vector_zero_for_cosine():
    with pytest.raises(DimensionError, match=r"vector\[0\] is all zeros"):
        query_vector([0, 0, 0], dim=3, metric="cosine")
    assert query_vector([0, 0, 0], dim=3, metric="ip").shape == (3,)


# --- k and other small checks -----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 10, MAX_K, np.int64(5), np.int32(1)])
def test_check_k_ok(k):
    assert check_k(k) == int(k)
    assert type(check_k(k)) is int


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, True, False, 5.0, 1.5, "5", None, np.float64(3)])
def test_check_k_bad(k):
    with pytest.raises(InvalidInputError, match=r"^k: .* is not allowed: must be an integer in 1\.\.10000$"):
        check_k(k)


def test_check_positive():
    assert check_positive(None, "ef") is None
    assert check_positive(5, "ef") == 5
    for bad in (0, 100_001, True, 2.0):
        with pytest.raises(InvalidInputError, match=r"^ef: "):
            check_positive(bad, "ef")


def test_check_tiers():
    enabled = ["hot", "warm", "cold"]
    assert check_tiers(None, enabled) == enabled
    assert check_tiers("warm", enabled) == ["warm"]
    assert check_tiers(["cold", "hot"], enabled) == ["hot", "cold"]  # enabled order
    with pytest.raises(InvalidInputError, match=r"unknown tier 'lukewarm'"):
        check_tiers("lukewarm", enabled)
    with pytest.raises(InvalidInputError, match=r"tier 'cold' is not enabled"):
        check_tiers(["cold"], ["hot", "warm"])
    with pytest.raises(InvalidInputError, match=r"empty list"):
        check_tiers([], enabled)


def test_check_unique():
    check_unique([])
    check_unique(["a", "b", "A"])
    check_unique([1, 2, 3])
    with pytest.raises(InvalidInputError, match=r"^ids\[2\]: 'a' appears more than once in this batch$"):
        check_unique(["a", "b", "a", "b"])
    with pytest.raises(InvalidInputError, match=r"^ids\[3\]: 7 appears more than once"):
        check_unique([7, 8, 9, 7])


# --- encode_metadata --------------------------------------------------------------------------


def test_encode_metadata_none_and_empty():
    assert encode_metadata(None, 3, SCHEMA) == [b"", b"", b""]
    assert encode_metadata([None, {}, {"cat": "a"}], 3, SCHEMA)[:2] == [b"", b""]


def test_encode_metadata_values():
    md = [
        {"cat": ["a", "b"], "price": 2, "note": "日本", "flag": True, "ratio": 0.5},
        {"cat": ("x",), "price": 1.5},
        {"cat": True},
        {"free": ["only", "strings"]},
    ]
    out = encode_metadata(md, 4, SCHEMA)
    assert all(isinstance(b, bytes) for b in out)
    decoded = [json.loads(b) for b in out]
    assert decoded[0] == md[0]
    assert decoded[1] == {"cat": ["x"], "price": 1.5}  # tuple stored as a list
    assert decoded[2] == {"cat": True}
    assert decoded[3] == md[3]
    assert "日本".encode() in out[0]  # not \u-escaped
    assert b" " not in out[0]  # compact separators


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (b"abc", r"\(bytes\) is not supported"),
        (float("nan"), r"nan is not a finite number"),
        (float("inf"), r"inf is not a finite number"),
        ({1, 2}, r"\(set\) is not supported"),
        (object(), r"\(object\) is not supported"),
        ({"a": [1, float("nan")]}, r"nan is not a finite number"),
        ({"a": {2: "b"}}, r"key 2 is not a str"),
    ],
)
def test_encode_metadata_unsupported_values(value, pattern):
    with pytest.raises(SchemaError, match=r"^metadata\[1\]\['x'\][^:]*: .*" + pattern):
        encode_metadata([{}, {"x": value}], 2, SCHEMA)


def test_metadata_any_json_value_round_trips():
    """What document loaders produce is stored as JSON reads it back: None, nested objects,
    lists of numbers, numpy values; tuples become lists and dates ISO strings (documented)."""
    import datetime

    md = {"author": None, "source": {"path": "/a/b.txt", "page": 3, "tags": ["x", 1, None]},
          "ints": [1, 2, 3], "np": np.float32(0.5), "arr": np.array([1, 2]), "tup": (1, "a"),
          "when": datetime.date(2024, 1, 2), "at": datetime.datetime(2024, 1, 2, 3, 4, 5),
          "cat": None, "price": None, "deep": [[{"a": []}]]}
    (clean, raw), = clean_metadata([md], 1, SCHEMA)
    assert json.loads(raw) == clean
    assert clean == {"author": None, "source": {"path": "/a/b.txt", "page": 3, "tags": ["x", 1, None]},
                     "ints": [1, 2, 3], "np": 0.5, "arr": [1, 2], "tup": [1, "a"], "when": "2024-01-02",
                     "at": "2024-01-02T03:04:05", "cat": None, "price": None, "deep": [[{"a": []}]]}


def test_texts_are_kept_apart_from_metadata():
    (clean, raw), (clean2, _raw2) = clean_metadata([{"a": 1}, None], 2, SCHEMA, check_texts(["doc", None], 2))
    assert clean == {"a": 1, TEXT_KEY: "doc"} and json.loads(raw) == clean
    assert clean2 == {}
    with pytest.raises(SchemaError, match=r"metadata\[0\]: key '\\x00text' starts with NUL"):
        clean_metadata([{TEXT_KEY: "x"}], 1, SCHEMA)
    with pytest.raises(InvalidInputError, match=r"texts\[1\]: expected a str or None, got int"):
        check_texts(["a", 5], 2)
    with pytest.raises(InvalidInputError, match=r"texts: 1 entries for 2 vectors"):
        check_texts(["a"], 2)


@pytest.mark.parametrize("value", [5, 1.5, 0])
def test_encode_metadata_tag_field_wrong_type(value):
    with pytest.raises(
        SchemaError, match=r"metadata field 'cat' is a tag: value must be a str, bool or list of str"
    ):
        encode_metadata([{"cat": value}], 1, SCHEMA)


@pytest.mark.parametrize("value", ["5", True, ["1"], []])
def test_encode_metadata_numeric_field_wrong_type(value):
    with pytest.raises(
        SchemaError, match=r"metadata field 'price' is numeric: value must be a finite int or float"
    ):
        encode_metadata([{"price": value}], 1, SCHEMA)


def test_encode_metadata_non_str_key():
    with pytest.raises(SchemaError, match=r"metadata\[0\]: key 5 is not a str"):
        encode_metadata([{5: "a"}], 1, SCHEMA)


@pytest.mark.parametrize(
    ("metadata", "n", "pattern"),
    [
        ([{}, {}], 3, r"^metadata: 2 entries for 3 vectors$"),
        ([], 1, r"^metadata: 0 entries for 1 vectors$"),
        ({"cat": "a"}, 1, r"expected a list with one dict \(or None\) per vector"),
        (5, 1, r"expected a list with one dict"),
        (["cat"], 1, r"metadata\[0\]: expected a dict or None, got str"),
        ([{}, [("cat", "a")]], 2, r"metadata\[1\]: expected a dict or None, got list"),
    ],
)
def test_encode_metadata_shape_errors(metadata, n, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        encode_metadata(metadata, n, SCHEMA)


def test_encode_metadata_huge_int_in_numeric_field_is_schema_error():
    """numeric_value() calls math.isfinite() on ints; beyond float range that raises OverflowError
    (not a SchemaError, and not even a ValueError) so a caller's `except ValueError` misses it."""
    with pytest.raises(SchemaError):
        encode_metadata([{"price": 10**400}], 1, SCHEMA)
