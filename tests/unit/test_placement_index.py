"""The engine's placement index (tierstore.engine.placement) stays equal to the catalog through
upserts, updates, spills, moves, deletes, pins and policy cycles; a change behind its back makes
the next cycle rebuild it."""

from __future__ import annotations

import numpy as np
import pytest

from tierstore.catalog import FLAG_PINNED, Entry
from tierstore.testing import memory_store

DIM = 8


def by_slot(cols: dict) -> dict[int, tuple]:
    return {int(s): (int(t), int(f), int(v), int(i)) for s, t, f, v, i in
            zip(cols["slot"], cols["tier"], cols["flags"], cols["version"], cols["iid"], strict=True)}


def check(store) -> None:
    eng = store._engine
    snap = store.policy.placement()
    assert by_slot(snap) == by_slot(store.catalog.placement())
    assert eng.placement.built


@pytest.fixture()
def data():
    return np.random.default_rng(7).standard_normal((600, DIM)).astype(np.float32)


def test_the_index_follows_every_change(tmp_path, data):
    with memory_store(tmp_path, dim=DIM, hot={"capacity": 100}, warm={"capacity": 10_000},
                      policy={"interval": 0, "grace_period": 0, "pin_warm": {"kind": "w"}},
                      schema={"kind": "tag"}) as store:
        metas = [{"kind": "w" if i % 7 == 0 else "x"} for i in range(600)]
        store.upsert(list(range(300)), data[:300], metas[:300])  # 100 hot, 200 spill to warm
        check(store)  # built from the catalog
        store.upsert(list(range(300, 450)), data[300:450], metas[300:450], tier="warm")
        store.upsert(list(range(0, 50)), data[450:500], metas[:50])  # updates in place: new versions
        store.move(list(range(0, 40)), "warm")
        store.move(list(range(100, 140)), "hot")
        store.delete([5, 150, 301, 449])
        store.pin([7, 8, 9])
        store.unpin([8])
        store.upsert([5, 1000], data[[5, 9]], [metas[5], metas[9]])  # a deleted id comes back; slots reused
        check(store)
        store.touch(list(range(200, 260)) * 4)
        report = store.run_policy()
        assert sum(report.moved.values()) > 0
        check(store)
        snap = store.policy.placement()
        pinned = snap["flags"] & FLAG_PINNED
        assert {int(i) for i in snap["iid"][pinned != 0]} == {store.catalog.iid(7), store.catalog.iid(9)}
        # the pin_warm filter's verdict is kept per slot
        w = {store.catalog.iid(i) for i in range(450) if i % 7 == 0 and i != 301}  # (301 was deleted)
        assert {int(i) for i in snap["iid"][snap["pin"] == 1]} == w


def test_a_change_behind_its_back_is_caught(tmp_path, data):
    with memory_store(tmp_path, dim=DIM, policy={"interval": 0}) as store:
        store.upsert(list(range(50)), data[:50], tier="warm")
        check(store)
        e = store.catalog.iid(3)
        with store.catalog.write() as txn:  # not through the engine
            old = store.catalog.entry(txn, e)
            store.catalog.put_entry(txn, Entry(e, 0, old.flags, old.slot, 0, 0, old.version + 1, old.uid, old.meta))
        check(store)  # counts disagree: rebuilt
        assert store._engine.placement.rebuilds == 1
