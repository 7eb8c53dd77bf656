"""The one relocation protocol (tierstore.engine.relocate) and the executor, without Redis or S3.

A relocation that fails at its copy or inside its flip must leave the store as it was: the
catalog unchanged, the staged copy undone (warm rows discarded, hot copies put back to what the
catalog holds), every vector still found once in its old tier, verify() clean.
"""

from __future__ import annotations

import numpy as np
import pytest

from tierstore import datasets, tiers
from tierstore.engine import moves
from tierstore.engine.relocate import Batch, relocate
from tierstore.testing import memory_store

DIM = 12


@pytest.fixture(scope="module")
def ds() -> datasets.Dataset:
    return datasets.clustered(400, DIM, queries=10, seed=5)


def placement(store) -> dict:
    return {e.uid: (e.tier, e.version) for b in store.catalog.entry_batches() for e in b}


def finds_itself(store, ds, ids) -> None:
    for i, hits in zip(ids, store.query_batch(ds.base[ids], k=1), strict=True):
        assert hits.ids() == [i]


class Boom(Exception):
    pass


def fail_nth_catalog_write(monkeypatch, store, n: int) -> None:
    """The n-th catalog write transaction from now raises inside (before it commits)."""
    cat = type(store.catalog)
    orig = cat.write
    calls = [0]

    def write(self, *a, **k):
        calls[0] += 1
        if calls[0] == n:
            raise Boom("injected")
        return orig(self, *a, **k)

    monkeypatch.setattr(cat, "write", write)


@pytest.mark.parametrize("target", ["hot", "warm"])
def test_a_move_whose_flip_fails_changes_nothing(tmp_path, ds, monkeypatch, target):
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(200)), ds.base[:200], tier="hot")
        store.upsert(list(range(200, 400)), ds.base[200:], tier="warm")
        before = placement(store)
        ids = list(range(150, 250))  # 50 of each tier
        # the move to hot writes its pending marks first (write #1) and flips in write #2
        fail_nth_catalog_write(monkeypatch, store, 2 if target == "hot" else 1)
        with pytest.raises(Boom):
            store.move(ids, target)
        monkeypatch.undo()
        assert placement(store) == before
        assert store.hot.count() == store.catalog.counts()["hot"] or store.catalog.has_pending()
        store.flush()  # applies what the failed move left pending (Redis side)
        assert store.hot.count() == store.catalog.counts()["hot"]
        finds_itself(store, ds, ids)
        rep = store.verify()
        assert rep["ok"], rep["problems"]
        # and the same move goes through afterwards
        assert store.move(ids, target).moved == 50
        finds_itself(store, ds, ids)
        assert store.verify()["ok"]


def test_an_upsert_whose_flip_fails_writes_nothing(tmp_path, ds, monkeypatch):
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(100)), ds.base[:100], tier="hot")
        before = placement(store)
        fail_nth_catalog_write(monkeypatch, store, 1)
        with pytest.raises(Boom):  # new rows and updates of existing ones, to hot
            store.upsert(list(range(50, 150)), ds.base[200:300], tier="hot")
        monkeypatch.undo()
        assert placement(store) == before
        # the staged Redis copies were put back to what the catalog holds
        assert store.hot.keys() == {store.catalog.iid(i) for i in range(100)}
        finds_itself(store, ds, list(range(100)))
        assert store.verify(deep=True)["ok"]


def test_relocate_keeps_versions_when_asked_and_reports_slots(tmp_path, ds):
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(20)), ds.base[:20], tier="warm")
        eng = store._engine
        with eng.write_lock, store.catalog.read() as txn:
            entries = [store.catalog.entry(txn, store.catalog.iid(i)) for i in range(20)]
        with eng.write_lock:
            out = relocate(eng, Batch.of_entries(entries, moves.load(eng, entries)), "hot", origin="explicit",
                           new_version=False)
        assert out.error is None and out.slots == [e.slot for e in entries]
        after = placement(store)
        assert [after[i] for i in range(20)] == [(tiers.CODES["hot"], e.version) for e in entries]
        finds_itself(store, ds, list(range(20)))


def test_the_executor_skips_what_changed_since_planning(tmp_path, ds):
    with memory_store(tmp_path, dim=DIM, policy={"interval": 0}) as store:
        store.upsert(list(range(40)), ds.base[:40], tier="warm")
        with store.catalog.read() as txn:
            entries = [store.catalog.entry(txn, store.catalog.iid(i)) for i in range(40)]
        plan = {"warm->hot": (np.array([e.iid for e in entries], np.uint64),
                              np.array([e.version for e in entries], np.int64))}
        store.upsert(list(range(10)), ds.base[100:110], tier="warm")  # new versions: planned ones are stale
        store.delete([10, 11])
        moved, skipped = moves.execute(store._engine, plan)
        assert moved["warm->hot"] == 28 and skipped == 12
        assert store.catalog.counts() == {"hot": 28, "warm": 10, "cold": 0}
        assert store.verify()["ok"]


def test_plan_order_makes_room_before_filling():
    assert moves.plan_order() == (("hot->cold", "warm->cold"), ("hot->warm",), ("cold->warm",),
                                  ("warm->hot", "cold->hot"))


def test_spill_fills_each_limited_tier_then_goes_down(tmp_path, ds):
    with memory_store(tmp_path, dim=DIM, hot={"capacity": 30}) as store:
        store.upsert(list(range(20)), ds.base[:20])  # ingest tier hot
        store.upsert(list(range(10, 60)), ds.base[10:60])  # 10 updates in place, 10 fit, 30 spill
        counts = store.catalog.counts()
        assert counts == {"hot": 30, "warm": 30, "cold": 0}
        assert store.stats()["queries"]["spilled"] == 30
        finds_itself(store, ds, list(range(60)))


def test_a_hot_write_interrupted_after_reaching_redis_is_put_back(tmp_path, ds, monkeypatch):
    """Anything but TierUnavailableError out of the copy (KeyboardInterrupt, an unmapped
    Redis error) may come after the pipeline went out: the flip never happened, so Redis is put
    back to what the catalog holds."""
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(["a", "b"], ds.base[:2], tier="hot")
        orig = type(store.hot).write

        def write(self, *a, **k):
            orig(self, *a, **k)
            raise KeyboardInterrupt("after the pipeline went out")

        monkeypatch.setattr(type(store.hot), "write", write)
        with pytest.raises(KeyboardInterrupt):
            store.upsert(["a", "c"], ds.base[2:4], tier="hot")
        monkeypatch.undo()
        assert store.get(["c"]) == [None]
        assert store.query(ds.base[2], k=1, tiers="hot").ids() != ["a"] or np.allclose(ds.base[0], ds.base[2])
        assert store.hot.keys() == {store.catalog.iid("a"), store.catalog.iid("b")}
        assert store.verify(deep=True)["ok"]


def test_losing_the_race_to_create_a_store_leaves_the_winners_files(tmp_path, ds, monkeypatch):
    """Two openers of a path that did not exist: the one whose lock fails must not clean up the
    other's new store (it did not create it)."""
    from pathlib import Path

    from tierstore import StoreLockedError, paths
    from tierstore.engine import opening

    winner = memory_store(tmp_path, dim=DIM)
    try:
        winner.upsert(["a"], ds.base[:1])
        # what the loser saw a moment before the winner created the directory
        monkeypatch.setattr(opening.paths, "check_new_store_path",
                            lambda p, src=None: paths.NewStore(Path(p), (Path(p),), frozenset()))
        with pytest.raises(StoreLockedError):
            memory_store(tmp_path, dim=DIM)
        monkeypatch.undo()
        assert (tmp_path / "store" / "LOCK").exists() and (tmp_path / "store" / "catalog").is_dir()
        assert winner.get(["a"])[0] is not None
    finally:
        winner.close()
    with memory_store(tmp_path, dim=DIM) as again:
        assert again.query(ds.base[0], k=1).ids() == ["a"]


def test_dead_warm_rows_remembered_for_revival_are_bounded(tmp_path, ds, monkeypatch):
    from tierstore.tiers.warm import tier as warm_tier

    monkeypatch.setattr(warm_tier, "DEAD_ROWS", 10)
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(40)), ds.base[:40], tier="warm")
        store.move(list(range(40)), "hot")  # 40 warm rows die, reusable
        assert len(store.warm.dead_rows) == 10
        before = store.warm.stats["revived"]
        store.move(list(range(40)), "warm")  # the 10 remembered (the last killed) come back in place
        assert store.warm.stats["revived"] - before == 10
        finds_itself(store, ds, list(range(40)))
        assert store.verify()["ok"]


CRASH_CHILD = """
import os, sys, numpy as np
from tierstore.testing import memory_store
base = np.load(sys.argv[2])
store = memory_store(sys.argv[1], dim=base.shape[1])
store.upsert(list(range(300)), base[:300], tier="warm")     # growing-segment rows, never sealed
store.move(list(range(0, 40)), "hot")
store.move(list(range(0, 20)), "warm")                     # 20 revived or re-added
store.delete([100, 101])
store.upsert(list(range(300, 320)), base[300:320], tier="warm")
os._exit(0)                                                # no close: nothing sealed or checkpointed
"""


def test_growing_segment_rebuilt_from_the_table_after_a_crash(tmp_path, ds):
    import subprocess
    import sys

    np.save(tmp_path / "base.npy", ds.base)
    subprocess.run([sys.executable, "-c", CRASH_CHILD, str(tmp_path), str(tmp_path / "base.npy")], check=True,
                   timeout=300)
    for _ in range(2):  # the first reopen reads the growing table; so does the second
        with memory_store(tmp_path, dim=DIM) as store:
            assert store.catalog.growing_table_ready()
            live = [i for i in range(320) if i not in (100, 101)]
            assert len(store) == len(live) and store.catalog.counts()["warm"] == len(live) - 20
            finds_itself(store, ds, live)
            rep = store.verify()
            assert rep["ok"], rep["problems"]


def test_sealed_alive_masks_saved_at_close_are_used_only_when_nothing_moved(tmp_path, ds, monkeypatch):
    from tierstore.tiers.warm import tier as warm_tier

    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(300)), ds.base[:300], tier="warm")
        store.flush()  # sealed
        store.move(list(range(0, 30)), "hot")  # 30 dead sealed rows
        store.delete([50, 51])
    reads = []
    orig = warm_tier.WarmTier._alive_rows
    monkeypatch.setattr(warm_tier.WarmTier, "_alive_rows", lambda self, sid, seg: reads.append(sid) or orig(self, sid, seg))
    with memory_store(tmp_path, dim=DIM) as store:
        assert reads == []  # the saved masks were current
        alive = sum(int(sd.alive.sum()) for sd in store.warm.sealed.values())
        assert alive == store.catalog.counts()["warm"] == 268
        finds_itself(store, ds, [i for i in range(300) if i not in (50, 51)])
        assert store.verify()["ok"]
        store.move(list(range(30, 40)), "hot")
        store.warm.save_alive = lambda: None  # as if it crashed after the move: the saved masks are stale
    with memory_store(tmp_path, dim=DIM) as store:
        assert reads  # the catalog's move generation moved on: read from the catalog
        assert sum(int(sd.alive.sum()) for sd in store.warm.sealed.values()) == store.catalog.counts()["warm"]
        assert store.verify()["ok"]


def test_an_id_named_twice_in_a_move_moves_once_and_masks_stay_true(tmp_path, ds):
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(100)), ds.base[:100], tier="warm")
        store.flush()
        store.move([5], "hot")
        assert store.move([5, 5], "warm").moved == 1
        alive = sum(int(sd.alive.sum()) for sd in store.warm.sealed.values()) + store.warm.growing.alive
        assert alive == store.catalog.counts()["warm"] == 100
        finds_itself(store, ds, list(range(100)))


def test_saved_alive_masks_that_disagree_with_the_catalog_are_recomputed(tmp_path, ds):
    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(100)), ds.base[:100], tier="warm")
        store.flush()
        store.move(list(range(10)), "hot")
        sd = next(iter(store.warm.sealed.values()))
        sd.alive[:] = True  # a mask gone wrong in memory (saved at close as it is)
    with memory_store(tmp_path, dim=DIM) as store:
        assert sum(int(sd.alive.sum()) for sd in store.warm.sealed.values()) == store.catalog.counts()["warm"] == 90


def test_an_older_writer_since_the_save_means_neither_shortcut_is_trusted(tmp_path, ds):
    from tierstore.catalog import Catalog

    with memory_store(tmp_path, dim=DIM) as store:
        store.upsert(list(range(50)), ds.base[:50], tier="warm")
        assert store.catalog.own_writes_only and store.catalog.growing_table_ready()
    path = tmp_path / "store" / "catalog"
    cat = Catalog(path, dim=DIM, metric="cosine", schema={})
    with cat.env.begin(db=cat.meta_db, write=True) as txn:  # as a version that records no writer_gen commits
        txn.put(b"gen", str(int(txn.get(b"gen")) + 1).encode())
    cat.close()
    again = Catalog(path, dim=DIM, metric="cosine", schema={})
    try:
        assert not again.own_writes_only and not again.growing_table_ready()
    finally:
        again.close()
    with memory_store(tmp_path, dim=DIM) as store:  # walks the entries, rebuilds the table
        finds_itself(store, ds, list(range(50)))
        assert store.verify()["ok"]


def test_a_failure_between_flip_and_index_update_makes_the_next_cycle_rebuild(tmp_path, ds, monkeypatch):
    with memory_store(tmp_path, dim=DIM, policy={"interval": 0}) as store:
        store.upsert(list(range(50)), ds.base[:50], tier="warm")
        store.policy.placement()  # built
        idx = store._engine.placement

        def boom(*a, **k):
            raise MemoryError("injected")

        monkeypatch.setattr(idx, "put", boom)
        with pytest.raises(MemoryError):
            store.upsert(list(range(10)), ds.base[50:60], tier="warm")  # same tier: counts agree
        monkeypatch.undo()
        assert idx.stale
        snap = store.policy.placement()
        assert idx.rebuilds == 1 and not idx.stale
        with store.catalog.read() as txn:
            want = {store.catalog.entry(txn, store.catalog.iid(i)).version for i in range(10)}
        assert want == {2} and {int(v) for v, i in zip(snap["version"], snap["iid"], strict=True)
                                if int(i) in {store.catalog.iid(j) for j in range(10)}} == {2}
        finds_itself(store, ds, list(range(10, 50)))
