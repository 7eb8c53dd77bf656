"""The `tierstore` command line, run as a subprocess on the embedded default (its own redis-server)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

import tierstore


def cli(*args: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tierstore.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_init_ingest_query_stats_rebuild(tmp_path):
    out = cli("init", "--path", "data", "--dim", "8", "--schema", "color=tag", "--schema", "size=numeric",
              "--json", cwd=tmp_path)
    assert json.loads(out.stdout)["store"] == str(tmp_path / "data")
    vecs = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    assert json.loads(cli("ingest", "v.npy", "--json", cwd=tmp_path).stdout)["written"] == 50
    lines = [json.dumps({"id": f"doc{i}", "vector": (vecs[i] + 0.001).tolist(),
                         "metadata": {"color": "red" if i % 2 else "blue", "size": i}}) for i in range(10)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    assert json.loads(cli("ingest", "r.jsonl", "--json", cwd=tmp_path).stdout)["written"] == 10

    res = json.loads(cli("query", "--like", "3", "-k", "2", "--json", cwd=tmp_path).stdout)
    assert [h["id"] for h in res["hits"]] == [3, "doc3"] and res["partial"] is False
    res = json.loads(cli("query", "--vector", json.dumps(vecs[4].tolist()), "--filter",
                         '{"color": "red", "size": {"$lt": 6}}', "--json", cwd=tmp_path).stdout)
    assert {h["id"] for h in res["hits"]} == {"doc1", "doc3", "doc5"}
    human = cli("query", "--like", "doc2", "-k", "1", cwd=tmp_path).stdout
    assert "doc2" in human and "hot" in human

    stats = json.loads(cli("stats", "--json", cwd=tmp_path).stdout)
    assert stats["store"]["vectors"] == 60 and stats["tiers"]["hot"]["num_docs"] == 60
    rebuilt = cli("rebuild-hot", "--json", cwd=tmp_path)
    assert json.loads(rebuilt.stdout)["rebuilt"] == 60
    assert "rebuild-hot: 60/60 (100%)" in rebuilt.stderr  # progress: a line per 10% when stderr is no terminal
    (tmp_path / "ids.txt").write_text("\n".join(str(i) for i in range(0, 50, 2)) + "\n")
    moved = json.loads(cli("move", "ids.txt", "--tier", "warm", "--int-ids", "--json", cwd=tmp_path).stdout)
    assert moved["moved"] == 25
    stats = json.loads(cli("stats", "--json", cwd=tmp_path).stdout)
    assert stats["tiers"]["warm"]["count"] == 25 and stats["tiers"]["warm"]["segments"] == 1  # sealed at close
    res = json.loads(cli("query", "--like", "4", "-k", "1", "--json", cwd=tmp_path).stdout)
    assert res["hits"][0]["id"] == 4 and res["hits"][0]["tier"] == "warm"
    (tmp_path / "back.txt").write_text("4\n6\n")
    cli("move", "back.txt", "--tier", "hot", "--int-ids", cwd=tmp_path)
    res = json.loads(cli("compact", "--threshold", "0", "--json", cwd=tmp_path).stdout)
    assert res["warm"]["segments"] == 1 and res["warm"]["rows_dropped"] == 2
    assert "vectors: 60" in cli("--config", "tierstore.toml", "stats", cwd=tmp_path).stdout


def test_cold_move_verify_export_on_the_embedded_s3(tmp_path):
    """The embedded default: no [cold] url -> the store starts its own S3 server when the cold
    tier is first used, and again at the next open."""
    cli("init", "--path", "data", "--dim", "8", "--schema", "color=tag", cwd=tmp_path)
    vecs = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)
    lines = [json.dumps({"id": f"d{i}", "vector": vecs[i].tolist(), "metadata": {"color": "red"}}) for i in range(40)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    cli("ingest", "r.jsonl", "--tier", "warm", cwd=tmp_path)
    (tmp_path / "ids.txt").write_text("\n".join(f"d{i}" for i in range(30)) + "\n")
    moved = json.loads(cli("move", "ids.txt", "--tier", "cold", "--json", cwd=tmp_path).stdout)
    assert moved["moved"] == 30
    res = json.loads(cli("query", "--like", "d7", "-k", "1", "--nprobe", "100", "--json", cwd=tmp_path).stdout)
    assert res["hits"][0]["id"] == "d7" and res["hits"][0]["tier"] == "cold"
    assert res["tiers"]["cold"]["details"]["probed"] >= 1
    rep = json.loads(cli("verify", "--json", cwd=tmp_path).stdout)
    assert rep["ok"] and rep["cold"]["live"] == 30 and rep["cold"]["checked_bytes"] > 0
    cli("export", "all.parquet", cwd=tmp_path)  # (.jsonl: tests/integration/test_io.py)
    rows = pq.read_table(tmp_path / "all.parquet").to_pylist()
    assert len(rows) == 40 and sum(r["tier"] == "cold" for r in rows) == 30
    got = {r["id"]: r["vector"] for r in rows}
    np.testing.assert_array_equal(np.asarray(got["d3"], np.float32), vecs[3])
    cli("export", "cold.npz", "--tier", "cold", cwd=tmp_path)
    z = np.load(tmp_path / "cold.npz")
    assert z["vectors"].shape == (30, 8) and set(z["tiers"].tolist()) == {"cold"}
    stats = json.loads(cli("stats", "--json", cwd=tmp_path).stdout)
    assert stats["tiers"]["cold"]["embedded"] and stats["tiers"]["cold"]["count"] == 30
    # what export writes, ingest reads: .parquet (every record) and .npz (the cold ones) into a new store
    cli("init", "--config", "two.toml", "--path", "two", "--dim", "8", "--schema", "color=tag", cwd=tmp_path)
    assert json.loads(cli("ingest", "all.parquet", "--config", "two.toml", "--json", cwd=tmp_path).stdout)["written"] == 40
    assert json.loads(cli("ingest", "cold.npz", "--config", "two.toml", "--json", cwd=tmp_path).stdout)["written"] == 30
    with tierstore.open(tmp_path / "two.toml", env={}) as two:
        recs = two.get([f"d{i}" for i in range(40)])
        assert all(r is not None and r.metadata == {"color": "red"} for r in recs)
        np.testing.assert_array_equal(np.stack([r.vector for r in recs]), vecs)


def test_exit_codes_and_messages(tmp_path):
    proc = cli("stats", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no config" in proc.stderr
    assert cli("--version", cwd=tmp_path).stdout.strip() == f"tierstore {tierstore.__version__}"
    (tmp_path / "bad.toml").write_text("[store]\ndim = 8\n[hot]\nef_runtme = 10\n")
    proc = cli("stats", "--config", "bad.toml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "hot.ef_runtme: unknown key (did you mean 'ef_runtime'?)" in proc.stderr
    cli("init", "--path", "d", "--dim", "4", cwd=tmp_path)
    proc = cli("init", "--path", "d", "--dim", "4", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    proc = cli("query", "--vector", "[1, 2]", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "DimensionError" in proc.stderr
    proc = cli("query", "--vector", "[1, 0, 0, 0]", "--filter", "{bad json", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    proc = cli("ingest", "missing.npy", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    with tierstore.open(tmp_path / "tierstore.toml", env={}):
        proc = cli("stats", cwd=tmp_path, check=False)
        assert proc.returncode == 3 and "StoreLockedError" in proc.stderr and "add --read-only" in proc.stderr
        proc = cli("compact", cwd=tmp_path, check=False)  # (a write: no such hint)
        assert proc.returncode == 3 and "--read-only" not in proc.stderr.split("README)")[-1]
        assert json.loads(cli("stats", "--read-only", "--json", cwd=tmp_path).stdout)["store"]["read_only"]
        proc = cli("verify", "--read-only", "--repair", cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "--repair" in proc.stderr


def test_demo_reports_recall(tmp_path):
    out = cli("demo", "--n", "3000", "--queries", "100", "--json", cwd=tmp_path)
    report = json.loads(out.stdout)
    assert report["vectors"] == 3000 and report["recall@10"] >= 0.95
    assert report["latency_ms"]["p50"] > 0


def _cli_env() -> dict:
    import os

    return {"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}


def test_policy_and_migrate_commands(tmp_path, redis_server, s3_server, cold_section):
    import os
    import signal

    cold = cold_section(s3_server, segment_size=20)
    (tmp_path / "tierstore.toml").write_text(f"""
[store]
path = "data"
dim = 8
[schema]
tenant = "tag"
[hot]
redis_url = "{redis_server.url}"
capacity = 5
[cold]
url = "{cold['url']}"
endpoint_url = "{cold['endpoint_url']}"
segment_size = 20
[policy]
ingest_tier = "warm"
grace_period = 0
pin_hot = {{tenant = "acme"}}
""")
    env = _cli_env()

    def run(*args, check=True):
        proc = subprocess.run([sys.executable, "-m", "tierstore.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=env)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    vecs = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    lines = [json.dumps({"id": i, "vector": vecs[i].tolist(), "metadata": {"tenant": "acme" if i < 2 else "other"}})
             for i in range(200)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    run("ingest", "r.jsonl")
    plan = json.loads(run("policy", "--dry-run", "--json").stdout)
    assert plan["planned"] == {"warm->hot": 2} and plan["pinned"] == 2 and plan["dry_run"]
    human = run("policy", "--dry-run").stdout
    assert "nothing moved" in human and "pinned to hot" in human and "warm->hot" in human
    assert "half-life: auto (logical time)" in human  # issue 18: the half-life choice is explained
    assert json.loads(run("stats", "--json").stdout)["tiers"]["hot"]["count"] == 0
    done = json.loads(run("policy", "--json").stdout)
    assert done["moved"] == {"warm->hot": 2}
    assert json.loads(run("stats", "--json").stdout)["tiers"]["hot"]["count"] == 2

    # migrate by filter, interrupted by SIGKILL after its first batch, then resumed
    proc = subprocess.Popen([sys.executable, "-m", "tierstore.cli", "migrate", "--tier", "cold", "--filter",
                             '{"tenant": "other"}', "--batch-size", "20"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # "migrate -> cold: 20/198 (10%) ..." after the first segment
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert "migrate -> cold" in first, first + proc.stderr.read()
    resumed = json.loads(run("migrate", "--resume", "--json").stdout)
    assert resumed["selected"] == 198 and resumed["moved"] + resumed["already"] == 198 and resumed["already"] >= 20
    assert run("migrate", "--resume", check=False).returncode == 2  # nothing left to resume
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["tiers"]["cold"]["count"] == 198 and stats["tiers"]["hot"]["count"] == 2
    (tmp_path / "ids.txt").write_text("5\n6\n7\n")
    out = json.loads(run("migrate", "--tier", "warm", "--ids", "ids.txt", "--int-ids", "--json").stdout)
    assert out["moved"] == 3
    assert run("verify").returncode == 0
    bad = run("migrate", "--tier", "cold", "--filter", '{"tenat": "x"}', check=False)
    assert bad.returncode == 2 and "tenat" in bad.stderr
    assert os.path.exists(tmp_path / "data" / "catalog")
