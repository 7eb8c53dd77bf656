"""tierstore.io: Parquet and .npz exports read back into a fresh store as identical records.
(No servers: the stores run on the in-memory hot tier, warm on disk.)"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tierstore import DimensionError, InvalidInputError, inputs, io
from tierstore.testing import memory_store

DIM = 6


def _accepts(value) -> bool:
    try:
        inputs.clean_metadata([{"x": value}], 1, {})
    except Exception:  # noqa: BLE001 - (metadata values beyond str/int/float/bool/list[str]: issue 20)
        return False
    return True


NESTED = _accepts({"a": [1, {"b": None}]})


def records() -> tuple[list, np.ndarray, list[dict], list]:
    """Ids of both kinds; metadata of every shape a record can hold: absent and present keys, a
    key whose values mix types (int, float, str), lists, booleans, keys named like the reserved
    columns, None (and nested values where the store keeps them); texts on some records."""
    n = 120
    ids: list = [f"doc-{i}" for i in range(80)] + list(range(1000, 1040))
    vecs = np.random.default_rng(3).standard_normal((n, DIM)).astype(np.float32)
    metas: list[dict] = []
    for i in range(n):
        m: dict = {}
        if i % 2:
            m["color"] = "red" if i % 3 else "blue"
        if i % 5 == 0:
            m["n"] = i if i % 10 else i + 0.5  # ints and floats under one key
        if i == 7:
            m["n"] = "seven"
        if i % 7 == 0:
            m["tags"] = ["a", f"t{i}"]
        if i % 11 == 0:
            m["ok"] = bool(i % 2)
        if i in (3, 90):
            m.update({"id": "not the id", "vector": 1, "tier": "x", "text": "a metadata key"})
        if i == 4:
            m["none"] = None
        if NESTED and i % 13 == 0:
            m["nested"] = {"a": [1, 2.5, "x"], "b": {"c": None}}
        metas.append(m)
    texts = [f"text of {i}" if i % 4 == 0 else None for i in range(n)]
    return ids, vecs, metas, texts


def upsert_all(store, ids, vecs, metas, texts) -> None:
    kw = {"texts": texts}
    store.upsert(ids[:80], vecs[:80], metas[:80], **{k: v[:80] for k, v in kw.items()})
    store.upsert(ids[80:], vecs[80:], metas[80:], tier="warm", **{k: v[80:] for k, v in kw.items()})


def ingest(store, batches) -> int:
    n = 0
    for ids, vecs, metas, texts in batches:
        kw = {"texts": texts} if texts is not None else {}
        n += store.upsert(ids, vecs, metas, **kw)
    return n


@pytest.fixture
def source(tmp_path):
    store = memory_store(tmp_path / "a", dim=DIM, hot={"capacity": 80})
    data = records()
    upsert_all(store, *data)
    yield store, data
    store.close()


def get(store, ids) -> list:
    return store.get(ids[:80]) + store.get(ids[80:])  # (one get takes one kind of id)


def _same_records(a, b, ids) -> None:
    ra, rb = get(a, ids), get(b, ids)
    assert all(r is not None for r in ra + rb)
    for x, y in zip(ra, rb, strict=True):
        assert x.id == y.id and x.metadata == y.metadata and getattr(x, "text", None) == getattr(y, "text", None)
        assert {k: type(v) for k, v in x.metadata.items()} == {k: type(v) for k, v in y.metadata.items()}
        np.testing.assert_array_equal(x.vector, y.vector)


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_export_then_ingest_into_a_fresh_store_gives_identical_records(source, tmp_path, fmt):
    store, (ids, _, metas, texts) = source
    out = tmp_path / f"all.{fmt}"
    seen = []
    write = io.write_parquet if fmt == "parquet" else io.write_npz
    assert write(store, out, progress=lambda d, n: seen.append((d, n))) == len(ids)
    assert seen[-1] == (len(ids), len(ids))
    fresh = memory_store(tmp_path / "b", dim=DIM, hot={"capacity": 60})
    try:
        read = io.read_parquet(out, dim=DIM, batch_size=50) if fmt == "parquet" else io.read_npz(out, dim=DIM)
        assert ingest(fresh, read) == len(ids)
        _same_records(store, fresh, ids)
        assert [r.text for r in get(fresh, ids)] == texts
    finally:
        fresh.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", "b", out.name])  # no temporary files left


def test_parquet_columns_are_native_where_values_round_trip(source, tmp_path):
    store, _ = source
    out = tmp_path / "all.parquet"
    io.write_parquet(store, out, tiers="warm")
    t = pq.read_table(out)
    assert t.num_rows == 40 and set(t.column("tier").to_pylist()) == {"warm"}
    assert t.schema.field("id").type == pa.int64()  # the warm ones are the int ids
    assert t.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert t.schema.field("color").type == pa.string() and t.schema.field("tags").type == pa.list_(pa.string())
    assert "metadata.id" in t.schema.names  # a metadata key named like a reserved column


def test_a_foreign_parquet_file(tmp_path):
    """What another tool writes: a list<double> vector, no tierstore schema metadata, nulls."""
    vecs = np.random.default_rng(0).standard_normal((5, DIM))
    t = pa.table({"id": pa.array([1, 2, 3, 4, 5], pa.int64()), "vector": pa.array(vecs.tolist()),
                  "lang": pa.array(["en", None, "de", None, "fr"]), "year": pa.array([2020, 2021, None, 2023, 2024])})
    pq.write_table(t, tmp_path / "f.parquet")
    [(ids, v, metas, texts)] = list(io.read_parquet(tmp_path / "f.parquet"))
    assert ids == [1, 2, 3, 4, 5] and v.dtype == np.float32 and v.shape == (5, DIM) and texts is None
    np.testing.assert_allclose(v, vecs.astype(np.float32))
    assert metas == [{"lang": "en", "year": 2020}, {"year": 2021}, {"lang": "de"}, {"year": 2023},
                     {"lang": "fr", "year": 2024}]


def test_bad_parquet_files_name_the_row(tmp_path):
    bad_len = pa.table({"id": ["a", "b", "c"], "vector": pa.array([[0.0] * DIM, [0.0] * DIM, [0.0] * (DIM - 1)])})
    pq.write_table(bad_len, tmp_path / "len.parquet")
    with pytest.raises(DimensionError, match="row 2: vector has 5 values; expected 6"):
        list(io.read_parquet(tmp_path / "len.parquet", dim=DIM))
    null_vec = pa.table({"id": ["a", "b"], "vector": pa.array([[0.0] * DIM, None])})
    pq.write_table(null_vec, tmp_path / "null.parquet")
    with pytest.raises(InvalidInputError, match="row 1: vector is null"):
        list(io.read_parquet(tmp_path / "null.parquet"))
    pq.write_table(pa.table({"id": [1], "emb": [[0.0] * DIM]}), tmp_path / "novec.parquet")
    with pytest.raises(InvalidInputError, match="no 'vector' column"):
        list(io.read_parquet(tmp_path / "novec.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        list(io.read_parquet(tmp_path / "junk.parquet"))


def test_without_pyarrow_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    with pytest.raises(io.MissingDependencyError, match=r"pip install 'tierstore\[arrow\]'"):
        io.pyarrow()


def test_jsonl_export_is_what_ingest_reads(source, tmp_path):
    """``tierstore export x.jsonl``: one JSON record per line, read back by ``tierstore ingest``."""
    import json

    from tierstore.cli import ingest as cli_ingest  # the command's own reader

    store, (ids, vecs, metas, texts) = source
    out = tmp_path / "all.jsonl"
    assert io.write_jsonl(store, out) == len(ids)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["tier"] for r in rows} == {"hot", "warm"} and len(rows) == len(ids)
    fresh = memory_store(tmp_path / "b", dim=DIM, hot={"capacity": 200})
    try:
        n = 0
        for b in (run for block in cli_ingest.read_input(out, "id", 0, DIM) for run in block):
            n += fresh.upsert(b.ids, b.vectors, b.metadata, **({"texts": b.texts} if b.texts is not None else {}))
        assert n == len(ids)
        _same_records(store, fresh, ids)
    finally:
        fresh.close()
