"""Several processes, one store: real read-only subprocesses query while this process writes.

The readers (tests/integration/mp_reader.py) check every answer against what the writer has
published: an id whose upsert returned is the single top hit of its own vector, a deleted id never
appears, no id twice -- while the writer ingests into every tier, seals warm segments, runs the
policy, moves explicitly, compacts and deletes.
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
from tierstore import ReadOnlyError, StoreLockedError

DIM = 16
READER = Path(__file__).with_name("mp_reader.py")


def vecs(ids: list[int]) -> np.ndarray:
    return np.stack([np.random.default_rng(i).standard_normal(DIM).astype(np.float32) for i in ids])


def spawn(tmp: Path, store: tierstore.TierStore, mode: str, seed: int) -> tuple[subprocess.Popen, Path]:
    cfg = store.config
    args = {"mode": mode, "seed": seed, "dim": DIM, "path": str(store.path), "dir": str(tmp),
            "out": str(tmp / f"out-{mode}-{seed}.json"),
            "hot": {"redis_url": cfg.hot.redis_url, "backend": cfg.hot.backend},
            "cold": {"url": cfg.cold.url, "endpoint_url": cfg.cold.endpoint_url, "max_attempts": 2,
                     "timeout": "5s"}}
    path = tmp / f"args-{mode}-{seed}.json"
    path.write_text(json.dumps(args))
    return subprocess.Popen([sys.executable, str(READER), str(path)]), Path(args["out"])


def result(proc: subprocess.Popen, out: Path, timeout: float = 120) -> dict:
    assert proc.wait(timeout=timeout) == 0
    res = json.loads(out.read_text())
    assert "crash" not in res, res["crash"]
    return res


def append(path: Path, ids: list[int]) -> None:
    with path.open("a") as f:
        f.write("".join(f"{i}\n" for i in ids))


def test_readers_follow_the_writer(open_store, tmp_path: Path) -> None:
    """Two reader processes stay exact while the writer changes every tier under them."""
    store = open_store(dim=DIM, hot={"capacity": 300}, warm={"segment_size": 200, "capacity": 500},
                       cold={"segment_size": 200}, policy={"interval": 0, "grace_period": 0, "ingest_tier": "warm"})
    known, deleted = tmp_path / "known", tmp_path / "deleted"
    doomed = lambda ids: [i for i in ids if i % 10 == 7]  # noqa: E731 -- deleted later, never "known"

    def ingest(ids: list[int], tier: str | None = None) -> None:
        store.upsert(ids, vecs(ids), tier=tier)
        append(known, [i for i in ids if i % 10 != 7])

    ingest(list(range(300)), "hot")  # hot.capacity is 300
    readers = [spawn(tmp_path, store, "follow", seed) for seed in (1, 2)]
    deadline = time.time() + 60
    while not all((tmp_path / f"ready-{s}").exists() for s in (1, 2)):
        assert time.time() < deadline, "readers did not start"
        assert all(p.poll() is None for p, _ in readers), "a reader died at start"
        time.sleep(0.1)
    nxt = 300
    rng = np.random.default_rng(0)
    for rnd in range(6):
        warm_ids = list(range(nxt, nxt + 120))
        cold_ids = list(range(nxt + 120, nxt + 180))
        nxt += 180
        ingest(warm_ids)  # to warm (spilling to cold once full): the growing segment seals every 200 rows
        time.sleep(0.2)
        ingest(cold_ids, "cold")  # a new S3 segment
        time.sleep(0.2)
        live = [int(i) for i in rng.choice(nxt, 80, replace=False) if i % 10 != 7]
        store.touch(live)  # the policy promotes these and demotes what is not touched
        store.run_policy()
        time.sleep(0.2)
        store.move(live[:20], "cold")
        room = store.capacity("hot") - store.stats()["tiers"]["hot"]["count"]
        store.move(live[20 : 20 + min(10, room)], "hot")
        time.sleep(0.2)
        gone = doomed(warm_ids + cold_ids) + doomed(list(range(rnd * 30, rnd * 30 + 30)))
        store.delete(gone)
        append(deleted, gone)
        if rnd % 2:
            store.compact(threshold=0)  # warm and cold rewritten: old files and objects go
        time.sleep(0.3)
    final = list(range(nxt, nxt + 40))
    warm_now = [r.id for b in store.scan(tiers="warm") for r in b]
    store.move(warm_now[:60], "cold")  # room in warm for the last batch
    ingest(final, "warm")  # only in the growing segment: readers must see it without reopening
    (tmp_path / "final").write_text("".join(f"{i}\n" for i in final))
    (tmp_path / "stop").write_text("1")
    results = [result(p, out) for p, out in readers]
    for res in results:
        assert res["failures"] == [], res["failures"][:5]
        assert res["queries"] > 50
        assert res["final_checked"] == len(final)
        assert res["stats"]["read_only"] is True
        assert set(res["tiers"]) >= {"hot", "warm", "cold"}, res["tiers"]
    # their accesses reached this process's policy
    assert store.stats()["access"]["from_readers"] >= sum(r["queries"] for r in results)
    assert store.verify()["ok"]


def test_read_only_refuses_writes(open_store, tmp_path: Path) -> None:
    store = open_store(dim=DIM, policy={"interval": 0})
    store.upsert([0, 1], vecs([0, 1]))
    proc, out = spawn(tmp_path, store, "writes", 0)
    res = result(proc, out)
    assert res["errors"] == {op: "ReadOnlyError" for op in res["errors"]}
    assert res["get"] == [0, 1] and res["query_top"] == [0] and res["touch"] == 2
    assert res["dry_run_planned"] >= 0
    name, msg = res["writer_open"]
    assert name == "StoreLockedError" and "read_only=True" in msg
    assert store.stats()["access"]["from_readers"] >= 3  # the query's hits and the touch
    assert store.upsert([2], vecs([2])) == 1  # the writer is unaffected


def test_one_writer_per_store(open_store, tmp_path: Path) -> None:
    store = open_store(dim=DIM, policy={"interval": 0})
    cfg = store.config
    kw = {"path": str(store.path), "dim": DIM, "hot": {"redis_url": cfg.hot.redis_url}, "env": {},
          "cold": {"url": cfg.cold.url, "endpoint_url": cfg.cold.endpoint_url}}
    with pytest.raises(StoreLockedError, match="read_only=True"):
        tierstore.open(**kw)
    # LMDB must not be opened twice in one process: share the TierStore instead
    with pytest.raises(StoreLockedError, match="already open in this process"):
        tierstore.open(read_only=True, **kw)
    with pytest.raises(tierstore.ConfigError, match="holds no tierstore store"):
        tierstore.open(read_only=True, **{**kw, "path": str(tmp_path / "nothing")})
    assert issubclass(ReadOnlyError, tierstore.TierStoreError)
