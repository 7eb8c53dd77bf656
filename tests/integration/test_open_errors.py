"""Bad input and bad paths get a typed error and write nothing (issue 14, finding 7), on the real
servers: an empty query batch, store directories, a failed creation cleaned up, CLI read commands
on a mistyped path, CLI ingest of bad rows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest

import tierstore
from tierstore.errors import ClosedError, ConfigError, DimensionError, InvalidInputError, TierUnavailableError


def tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    return port


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    return subprocess.run([sys.executable, "-m", "tierstore.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


# --- query_batch of no rows ----------------------------------------------------------------------


def test_query_batch_of_no_rows_is_an_empty_list(open_store):
    """Was ZeroDivisionError; like get([]) -> [], the arguments are still checked."""
    store = open_store(dim=8)
    store.upsert([1, 2], np.eye(8, dtype=np.float32)[:2])
    queries = store.stats()["queries"]
    assert store.query_batch(np.empty((0, 8))) == []
    assert store.query_batch(np.empty((0, 8), np.float32), k=3, filter=None, tiers=["hot", "warm"]) == []
    assert store.query_batch([]) == [] and store.query_batch(np.empty((0,))) == []
    assert store.get([]) == []
    assert store.stats()["queries"] == queries  # nothing was asked
    with pytest.raises(InvalidInputError, match="k: 0"):
        store.query_batch(np.empty((0, 8)), k=0)
    with pytest.raises(InvalidInputError, match="unknown tier"):
        store.query_batch(np.empty((0, 8)), tiers=["lukewarm"])
    with pytest.raises(DimensionError, match=r"expected shape \(n, 8\), got \(0, 5\)"):
        store.query_batch(np.empty((0, 5)))
    assert [h.ids() for h in store.query_batch(np.eye(8, dtype=np.float32)[:2], k=1)] == [[1], [2]]
    store.close()
    with pytest.raises(ClosedError):
        store.query_batch(np.empty((0, 8)))


# --- which directories a store opens in ----------------------------------------------------------


def test_new_and_empty_directories_become_stores_and_reopen(open_store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (empty, tmp_path / "new" / "deeper"):
        store = open_store(path=where)
        store.upsert(["a"], np.ones((1, 8), np.float32))
        store.close()
        assert (where / "catalog").is_dir()
        store = open_store(path=where, cold={"url": store.config.cold.url})  # reopen: an existing store
        assert store.get(["a"])[0] is not None
        store.close()


def test_store_directory_may_hold_its_config_file(tmp_path, redis_server):
    (tmp_path / "tierstore.toml").write_text(f'[store]\npath = "."\ndim = 4\n[hot]\nredis_url = "{redis_server.url}"\n'
                                             "[cold]\nenabled = false\n")
    with tierstore.open(tmp_path / "tierstore.toml", env={}) as store:
        assert store.path == tmp_path and (tmp_path / "catalog").is_dir()


# --- a failed open of a new store removes what it created ----------------------------------------


@pytest.mark.parametrize("where", ["new", "empty"])
def test_failed_creation_unreachable_redis_leaves_nothing(tmp_path, where):
    """Was: catalog/, cold/ and LOCK left behind (and the next open found a half-made store)."""
    (tmp_path / "keep.txt").write_text("not ours")
    path = tmp_path / "a" / "b" if where == "new" else tmp_path / "empty"
    if where == "empty":
        path.mkdir()
    before = tree(tmp_path)
    with pytest.raises(TierUnavailableError, match="hot tier"):
        tierstore.open(path=str(path), dim=4, env={}, hot={"redis_url": f"redis://127.0.0.1:{closed_port()}/0",
                                                          "socket_timeout": "2s"})
    assert tree(tmp_path) == before


def test_an_unreachable_redis_is_named_without_its_password(tmp_path):
    """Error messages (and stats()'s error strings, made from them) never show the password."""
    url = f"redis://default:s3cret-pw@127.0.0.1:{closed_port()}/0"
    with pytest.raises(TierUnavailableError) as err:
        tierstore.open(path=str(tmp_path / "s"), dim=4, env={}, hot={"redis_url": url, "socket_timeout": "2s"})
    assert "s3cret-pw" not in str(err.value) and "default:***@127.0.0.1" in str(err.value)


def test_failed_creation_after_the_embedded_redis_started_leaves_nothing(tmp_path, s3_server):
    """The embedded redis-server (data under <path>/redis) is stopped, then its files go too."""
    path = tmp_path / "store"
    with pytest.raises(ConfigError, match="does not exist"):
        tierstore.open(path=str(path), dim=4, env={}, cold={
            "url": f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p", "endpoint_url": s3_server.endpoint_url,
            "max_attempts": 1, "timeout": "5s"})
    assert tree(tmp_path) == []


def test_failed_open_of_an_existing_store_deletes_nothing(open_store, tmp_path):
    path = tmp_path / "store"
    store = open_store(path=path)
    store.upsert(["a", "b"], np.eye(8, dtype=np.float32)[:2])
    cold = store.config.cold.url
    store.close()
    before = tree(path)
    with pytest.raises(TierUnavailableError):
        tierstore.open(path=str(path), dim=8, env={}, cold={"enabled": False},
                       hot={"redis_url": f"redis://127.0.0.1:{closed_port()}/0", "socket_timeout": "2s"})
    assert tree(path) == before
    with open_store(path=path, cold={"url": cold}) as again:
        assert [r.id for r in again.get(["a", "b"])] == ["a", "b"]


def test_a_locked_store_is_left_alone(open_store, tmp_path):
    """The second opener fails on the lock: it created nothing and removes nothing."""
    path = tmp_path / "store"
    store = open_store(path=path)
    before = tree(path)
    with pytest.raises(tierstore.StoreLockedError):
        tierstore.open(path=str(path), dim=8, env={}, cold={"enabled": False}, hot={"redis_url": store.config.hot.redis_url})
    assert tree(path) == before and store.query(np.ones(8, np.float32), k=1).ids() == []


# --- CLI: commands that need a store refuse a path that holds none -------------------------------


@pytest.mark.parametrize("command", [
    ["query", "--vector", "[1, 0, 0, 0]"], ["stats"], ["verify"], ["export", "out.jsonl"], ["rebuild-hot"],
    ["compact"], ["move", "ids.txt", "--tier", "warm"], ["policy", "--dry-run"], ["migrate", "--tier", "cold",
    "--ids", "ids.txt"], ["serve-metrics", "--port", "0"]])
def test_cli_commands_on_a_mistyped_store_path(tmp_path, command):
    """Was: an empty store created at the typo and exit 0."""
    (tmp_path / "tierstore.toml").write_text('[store]\npath = "dta"\ndim = 4\n')
    (tmp_path / "ids.txt").write_text("a\n")
    before = tree(tmp_path)
    proc = cli(*command, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"store.path: '{tmp_path / 'dta'}' (store.path in tierstore.toml) does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and tree(tmp_path) == before


def test_cli_init_refuses_a_foreign_directory_and_writes_no_config(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "report.pdf").write_bytes(b"%PDF")
    proc = cli("init", "--path", "stuff", "--dim", "4", cwd=tmp_path)
    assert proc.returncode == 2 and "holds other files (report.pdf) and no tierstore store" in proc.stderr
    assert tree(tmp_path) == ["stuff", "stuff/report.pdf"]


# --- CLI ingest: every batch checked before it is written, errors by line / row ------------------


def _config(tmp_path, redis_server) -> None:
    (tmp_path / "tierstore.toml").write_text(
        f'[store]\npath = "data"\ndim = 8\n[schema]\ncolor = "tag"\n[hot]\nredis_url = "{redis_server.url}"\n'
        "[cold]\nenabled = false\n")


def _jsonl(tmp_path, rows: list, blank_first: bool = False) -> str:
    lines = [""] if blank_first else []
    lines += [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    return "in.jsonl"


def _row(i: int, vec=None, **meta) -> dict:
    v = np.random.default_rng(i).standard_normal(8).tolist() if vec is None else vec
    return {"id": f"d{i}", "vector": v, "metadata": {"color": "red", **meta}}


@pytest.mark.parametrize(("bad", "line", "message"), [
    ({"id": "x", "vector": [1.0] * 7}, 4, "line 4: vector has 7 values; this store's dim is 8"),
    ({"id": "x", "vector": [1.0] * 7 + ["a"]}, 4, "line 4: vector: expected numbers"),
    ({"id": "x", "vector": [1.0] * 7 + [float("nan")]}, 4, "line 4: vector holds NaN or inf"),
    ({"id": "x", "vector": [0.0] * 8}, 4, "line 4: vector is all zeros"),
    ({"id": "x", "vector": [1.0] * 8, "metadata": {"color": 5}}, 4,
     "line 4: metadata['color']: metadata field 'color' is a tag"),
    ({"id": "x", "vector": [1.0] * 8, "metadata": {"color": {"a": 1}}}, 4,
     "line 4: metadata['color']: metadata field 'color' is a tag: value must be a str, bool or list of str"),
    ({"id": 1.5, "vector": [1.0] * 8}, 4, "line 4: id: 1.5 is a float"),
    ({"vector": [1.0] * 8}, 4, "line 4: expected a JSON object with 'id' and 'vector'"),
    ("{not json", 4, "line 4: expected a JSON object"),
    ({"id": "d0", "vector": [1.0] * 8}, 4, "line 4: id: 'd0' appears more than once in this batch"),
])
def test_cli_ingest_bad_row_in_the_first_batch_writes_nothing(tmp_path, redis_server, bad, line, message):
    """Was: a raw traceback (rc 1) for a wrong-length vector, a batch index for the rest. A bad
    row in the first batch writes nothing, not even the store."""
    _config(tmp_path, redis_server)
    name = _jsonl(tmp_path, [_row(0), _row(1), bad, _row(3)], blank_first=True)
    proc = cli("ingest", name, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"in.jsonl {message}" in proc.stderr and "nothing was written" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()
    assert proc.stderr.count("\n") == 1  # one line


def test_cli_ingest_bad_row_after_committed_batches_says_so(tmp_path, redis_server):
    """A NaN in the second batch of 10,000 rows: the first batch is committed, the message names
    the line and says how many rows were already committed; nothing of the second batch is written."""
    _config(tmp_path, redis_server)
    rows = np.random.default_rng(7).standard_normal((10_600, 8)).round(4)
    rows[10_400, 3] = np.nan
    lines = [json.dumps({"id": i, "vector": [None if np.isnan(x) else x for x in r]}).replace("null", "NaN")
             for i, r in enumerate(rows.tolist())]
    (tmp_path / "in.jsonl").write_text("\n\n" + "\n".join(lines) + "\n")  # two blank lines: line = row + 3
    proc = cli("ingest", "in.jsonl", "--batch-size", "3000", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "in.jsonl line 10403: vector holds NaN or inf" in proc.stderr
    assert "10000 rows (up to line 10002) were already committed by earlier batches; nothing after line 10002 " \
           "was written" in proc.stderr
    assert "Traceback" not in proc.stderr
    with tierstore.open(tmp_path / "tierstore.toml", env={}) as store:
        assert len(store) == 10_000 and store.get([9_999, 10_000]) [1] is None


def test_cli_ingest_npy_rows(tmp_path, redis_server):
    _config(tmp_path, redis_server)
    vecs = np.random.default_rng(3).standard_normal((20, 8)).astype(np.float32)
    vecs[13] = np.inf
    np.save(tmp_path / "v.npy", vecs)
    proc = cli("ingest", "v.npy", "--id-offset", "100", cwd=tmp_path)
    assert proc.returncode == 2 and "v.npy row 13: vector holds NaN or inf" in proc.stderr, proc.stderr
    np.save(tmp_path / "w.npy", vecs[:, :5])
    proc = cli("ingest", "w.npy", cwd=tmp_path)
    assert proc.returncode == 2 and r"w.npy: an array of shape (20, 5); expected (n, 8)" in proc.stderr
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    proc = cli("ingest", "x.npy", cwd=tmp_path)
    assert proc.returncode == 2 and "x.npy: not a readable .npy array" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()
    vecs[13] = 1.0
    np.save(tmp_path / "v.npy", vecs)
    out = cli("ingest", "v.npy", "--id-offset", "100", "--json", cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["written"] == 20
