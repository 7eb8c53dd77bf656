"""A read-only process for tests/integration/test_multiprocess.py: ``python mp_reader.py ARGS.json``.

Modes (``args["mode"]``):

- ``follow``: query in a loop until ``<dir>/stop`` exists. Ids listed in ``<dir>/known`` (written
  by the writer after the upsert returned; never deleted later) must come back as the top hit,
  exactly once; ids in ``<dir>/deleted`` (written after the delete returned) must never appear;
  no id may appear twice in one answer. Then every id of ``<dir>/final`` is queried once.
- ``writes``: every write on a read-only store must raise ReadOnlyError; a writable open must
  raise StoreLockedError naming read_only=True.

Writes its findings as JSON to ``args["out"]``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import tierstore


def vector(i: int, dim: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32)


def ids_in(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except FileNotFoundError:
        return []


def check(store: tierstore.TierStore, i: int, dim: int, deleted: set[int], expect: bool, out: dict) -> None:
    # every cold partition and a wide HNSW beam: exact search, so a miss can only be a view that
    # is out of step with the catalog (what this checks), not the tiers' approximation
    hits = store.query(vector(i, dim), k=5, ef=256, nprobe=100_000)
    got = hits.ids()
    out["queries"] += 1
    out["partial"] += hits.partial
    problems = []
    if len(got) != len(set(got)):
        problems.append(f"duplicate ids {got}")
    if deleted & set(got):
        problems.append(f"deleted ids {sorted(deleted & set(got))} returned")
    if expect:
        if got[:1] != [i] or got.count(i) != 1:
            problems.append(f"id {i} not the single top hit: {got} tiers={[h.tier for h in hits]}")
        else:
            out["tiers"][hits[0].tier] = out["tiers"].get(hits[0].tier, 0) + 1
    if problems:
        out["failures"].append({"id": i, "problems": problems, "t": time.time()})


def follow(store: tierstore.TierStore, args: dict, out: dict) -> None:
    d, dim = Path(args["dir"]), args["dim"]
    rnd = random.Random(args["seed"])
    out.update(queries=0, partial=0, failures=[], tiers={}, final_checked=0)
    (d / f"ready-{args['seed']}").write_text("1")
    parent, deadline = os.getppid(), time.monotonic() + 300
    # A test that failed (or was killed) never writes "stop": do not outlive it.
    while not (d / "stop").exists() and os.getppid() == parent and time.monotonic() < deadline:
        deleted = set(ids_in(d / "deleted"))  # before the query: these are gone for good
        known = ids_in(d / "known")
        if rnd.random() < 0.2 and deleted:
            check(store, rnd.choice(sorted(deleted)), dim, deleted, False, out)
        elif known:
            pool = known[-60:] if rnd.random() < 0.5 else known  # the newest often: picked up live?
            check(store, rnd.choice(pool), dim, deleted, True, out)
    deleted = set(ids_in(d / "deleted"))
    for i in ids_in(d / "final"):
        check(store, i, dim, deleted, True, out)
        out["final_checked"] += 1
    out["stats"] = {"read_only": store.stats()["store"]["read_only"]}


def writes(store: tierstore.TierStore, args: dict, out: dict) -> None:
    v = vector(0, args["dim"])
    ops = {
        "upsert": lambda: store.upsert([999_999], v[None, :]),
        "delete": lambda: store.delete([0]),
        "move": lambda: store.move([0], "warm"),
        "pin": lambda: store.pin([0]),
        "unpin": lambda: store.unpin([0]),
        "run_policy": lambda: store.run_policy(),
        "compact": lambda: store.compact(),
        "rebuild_hot": lambda: store.rebuild_hot(),
        "verify": lambda: store.verify(repair=True),
    }
    out["errors"] = {}
    for name, fn in ops.items():
        try:
            fn()
            out["errors"][name] = None
        except Exception as exc:  # noqa: BLE001 -- reported to the test
            out["errors"][name] = type(exc).__name__
    out["dry_run_planned"] = store.run_policy(dry_run=True).total_planned  # planning is a read
    out["get"] = [r.id if r else None for r in store.get([0, 1])]
    out["query_top"] = store.query(v, k=1).ids()
    out["touch"] = store.touch([0, 1])
    store.flush()
    try:
        tierstore.open(path=args["path"], dim=args["dim"], hot=args["hot"], cold=args["cold"], env={})
        out["writer_open"] = None
    except Exception as exc:  # noqa: BLE001
        out["writer_open"] = [type(exc).__name__, str(exc)]


def main() -> None:
    args = json.loads(Path(sys.argv[1]).read_text())
    out: dict = {}
    try:
        store = tierstore.open(path=args["path"], dim=args["dim"], hot=args["hot"], cold=args["cold"], env={},
                               read_only=True)
        with store:
            {"follow": follow, "writes": writes}[args["mode"]](store, args, out)
    except BaseException:  # noqa: BLE001 -- reported to the test
        out["crash"] = traceback.format_exc()
    Path(args["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
