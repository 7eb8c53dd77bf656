"""A read-only process with no writer running, on the embedded default (its own redis-server and
S3 server, which only a writer starts).

A writer *process* fills a store of 20k vectors across the three tiers, records its answers and
exits. A read-only open then answers the same queries with the same hits -- ids, distances, tiers,
metadata, and the stored vectors by ``get`` -- with nothing partial: the hot tier from the catalog
(an exact scan of the durable copies), cold from the embedded S3 server the reader starts itself.
A writer that opens meanwhile takes that server over on the same port (the reader follows its
writes); once it closes, the reader runs the server again.

Run as a script (``python test_readonly_nowriter.py writer ARGS.json``), this file is that writer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tierstore
import tierstore.io

DIM, HOT, WARM, COLD = 32, 3000, 10_000, 7000
N = HOT + WARM + COLD
SEARCH = {"k": 10, "ef": 256, "nprobe": 100_000}  # wide searches: the answers are exact on both sides


def config(path: str) -> dict:
    return {"path": path, "dim": DIM, "schema": {"g": "tag"}, "env": {},
            "hot": {"capacity": HOT, "ef_construction": 64}, "warm": {"capacity": WARM, "ef_construction": 64},
            "policy": {"interval": 0}}


def data() -> tuple[np.ndarray, list[dict]]:
    vectors = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    return vectors, [{"g": f"g{i % 7}", "i": i} for i in range(N)]


def queries() -> np.ndarray:
    vectors, _ = data()
    return vectors[::500][:40] + 0.3 * np.random.default_rng(1).standard_normal((40, DIM)).astype(np.float32)


def answers(store: tierstore.TierStore) -> list[list]:
    out = []
    for i, q in enumerate(queries()):
        flt = {"g": "g3"} if i % 4 == 0 else None
        hits = store.query(q, filter=flt, **SEARCH)
        assert not hits.partial, {n: r.error for n, r in hits.tiers.items()}
        out.append([[h.id, h.distance, h.tier, h.metadata] for h in hits])
    return out


def writer(args: dict) -> None:
    """The first writer: fill the store, answer the queries, close. The second (``more``): add
    cold vectors, say so, wait for ``stop``, close."""
    vectors, meta = data()
    with tierstore.open(**config(args["path"])) as store:
        if args["mode"] == "fill":
            store.upsert(list(range(HOT)), vectors[:HOT], meta[:HOT], tier="hot")
            store.upsert(list(range(HOT, HOT + WARM)), vectors[HOT:HOT + WARM], meta[HOT:HOT + WARM], tier="warm")
            store.upsert(list(range(HOT + WARM, N)), vectors[HOT + WARM:], meta[HOT + WARM:], tier="cold")
            assert store.catalog.counts() == {"hot": HOT, "warm": WARM, "cold": COLD}
            Path(args["out"]).write_text(json.dumps(answers(store)))
        else:
            extra = np.random.default_rng(2).standard_normal((300, DIM)).astype(np.float32)
            store.upsert([f"new{i}" for i in range(300)], extra, tier="cold")
            Path(args["ready"]).write_text("")
            deadline = time.time() + 120
            while not Path(args["stop"]).exists() and time.time() < deadline:
                time.sleep(0.05)


def spawn(tmp: Path, **args) -> subprocess.Popen:
    f = tmp / f"args-{args['mode']}.json"
    f.write_text(json.dumps(args))
    return subprocess.Popen([sys.executable, __file__, "writer", str(f)])


def endpoint(path: Path) -> dict:
    return json.loads((path / "cold" / "s3.json").read_text())


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("ro")
    path = tmp / "store"
    proc = spawn(tmp, mode="fill", path=str(path), out=str(tmp / "writer.json"))
    assert proc.wait(timeout=300) == 0
    assert not (path / "cold" / "s3.json").exists()  # the writer's S3 server is gone with it
    return path, json.loads((tmp / "writer.json").read_text())


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tierstore.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def test_a_reader_answers_alone_beside_a_writer_and_alone_again(filled, tmp_path):
    """One reader process (this one) through three phases: no writer (it runs the embedded S3
    server itself), a writer that takes the server over and writes (read-only CLI commands run
    beside it too), the writer gone again."""
    path, expected = filled
    vectors, meta = data()
    with tierstore.open(**config(str(path)), read_only=True) as store:
        # 1. no writer: the same answers as the writer's, nothing partial
        got = answers(store)
        hits = store.query(queries()[0], **SEARCH)
        assert hits.tiers["hot"].details.get("standby")  # no Redis: the catalog answered for it
        assert hits.tiers["cold"].ok and hits.tiers["cold"].details["partitions"] > 0
        for mine, theirs in zip(got, expected, strict=True):
            assert [h[0] for h in mine] == [h[0] for h in theirs]
            assert [h[2] for h in mine] == [h[2] for h in theirs]
            assert [h[3] for h in mine] == [h[3] for h in theirs]
            np.testing.assert_allclose([h[1] for h in mine], [h[1] for h in theirs], rtol=0, atol=1e-5)
        assert {h[2] for q in got for h in q} == {"hot", "warm", "cold"}
        ids = [0, HOT - 1, HOT, HOT + WARM - 1, HOT + WARM, N - 1]  # the first and last of each tier
        recs = store.get(ids)
        assert [r.tier for r in recs] == ["hot", "hot", "warm", "warm", "cold", "cold"]
        for i, r in zip(ids, recs, strict=True):
            np.testing.assert_array_equal(r.vector, vectors[i])
            assert r.metadata == meta[i]
        plan = store.policy.run(dry_run=True)  # planned from the writer's saved counts
        assert plan.vectors == N and plan.before == {"hot": HOT, "warm": WARM, "cold": COLD}
        mine = endpoint(path)

        # 2. a writer opens: it takes the S3 server over on the same port and writes new cold vectors
        proc = spawn(tmp_path, mode="more", path=str(path), ready=str(tmp_path / "ready"), stop=str(tmp_path / "stop"))
        try:
            deadline = time.time() + 120
            while not (tmp_path / "ready").exists():
                assert proc.poll() is None and time.time() < deadline, "the second writer did not start"
                time.sleep(0.05)
            theirs = endpoint(path)
            assert theirs["pid"] != mine["pid"] and theirs["endpoint_url"] == mine["endpoint_url"]
            extra = np.random.default_rng(2).standard_normal((300, DIM)).astype(np.float32)
            for i in (0, 150, 299):  # in a new cold segment: read through the writer's S3 server
                hits = store.query(extra[i], **SEARCH)
                assert not hits.partial and hits[0].id == f"new{i}" and hits[0].tier == "cold"
            # the CLI beside the writer, with --read-only
            toml = tmp_path / "ts.toml"
            toml.write_text(f'[store]\npath = "{path}"\ndim = {DIM}\n[schema]\ng = "tag"\n')
            res = json.loads(cli("query", "--config", str(toml), "--read-only", "--like", "new7", "-k", "3",
                                 "--nprobe", "100000", "--json", cwd=tmp_path).stdout)
            assert res["hits"][0]["id"] == "new7" and not res["partial"]
            out = tmp_path / "all.parquet"
            cli("export", str(out), "--config", str(toml), "--read-only", cwd=tmp_path)
            rows = [(ids, vecs) for ids, vecs, _, _ in tierstore.io.read_parquet(out)]
            assert sum(len(i) for i, _ in rows) == N + 300
            got_vecs = {u: v for ids, vecs in rows for u, v in zip(ids, vecs, strict=True)}
            np.testing.assert_array_equal(got_vecs[N - 1], vectors[N - 1])
            np.testing.assert_array_equal(got_vecs["new5"], extra[5])
        finally:
            (tmp_path / "stop").write_text("")
            assert proc.wait(timeout=120) == 0

        # 3. the writer stopped its S3 server (and its Redis): the reader starts S3 again on the same
        # port; a deep verify, which downloads every cold object, passes once it runs
        deadline = time.time() + 30
        while True:
            rep = store.verify(deep=True)
            if rep["ok"]:
                break
            assert time.time() < deadline, rep["problems"]
            time.sleep(0.5)
        assert rep["cold"]["live"] == COLD + 300 and rep["read_only"]
        again = endpoint(path)
        assert again["pid"] not in (mine["pid"], theirs["pid"]) and again["endpoint_url"] == mine["endpoint_url"]
        for now, before in zip(answers(store), got, strict=True):  # hot stands in for the writer's Redis again
            old = [h for h in now if not str(h[0]).startswith("new")]  # (new vectors may push old ones out)
            assert old == before[: len(old)]
    assert not (path / "cold" / "s3.json").exists()  # the reader stopped its server and removed the file


if __name__ == "__main__" and sys.argv[1:2] == ["writer"]:
    writer(json.loads(Path(sys.argv[2]).read_text()))
