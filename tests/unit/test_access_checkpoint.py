"""Access-statistics checkpoints in O(changes): after the first snapshot, a checkpoint writes
only the slots changed since the last one (a log record); a reopen replays snapshot + log and
gets exactly the statistics that were saved -- through growth, deletes, placements, rescaled
epochs, both half-life modes and a failed write."""

from __future__ import annotations

import numpy as np
import pytest

from tierstore.catalog import Catalog
from tierstore.policy.access import AccessStats


def same(a: AccessStats, b: AccessStats) -> None:
    n = a.counts.shape[0]
    assert b.counts.shape[0] == n
    for name in ("counts", "last", "placed", "placed_tier"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.t0, a.total_accesses, a.clock, a.half_life) == (b.t0, b.total_accesses, b.clock, b.half_life)
    np.testing.assert_array_equal(a.shadow, b.shadow)


@pytest.mark.parametrize("half_life", [30.0, "auto"])
def test_snapshot_plus_log_restores_exactly_what_was_saved(tmp_path, half_life):
    cat = Catalog(tmp_path / "cat", dim=3, metric="l2", schema={})
    rng = np.random.default_rng(5)
    st = AccessStats(half_life, t0=1000.0, size=50_000)
    kinds = []
    now = 1000.0
    for step in range(40):
        now += float(rng.random() * 40)
        st.record(rng.integers(0, 50_000 if step < 20 else 120_000, size=200), now=now)  # grows past 50k
        if step % 7 == 3:
            st.mark_placed(rng.integers(0, 60_000, size=30), 1, explicit=bool(step % 2), now=now)
        if step % 9 == 5:
            st.forget(rng.integers(0, 60_000, size=20))
        if half_life == "auto" and step % 10 == 9:
            st.tune(np.arange(60_000), cap_hot=500)  # picks (and rescales to) a half-life
        if step % 13 == 12:
            st.set_half_life(float(st.half_life) * 2) if half_life == "auto" else st._rebase(now)
        header, snap, rec = st.checkpoint()
        cat.save_access(header, snap, rec)
        kinds.append(st.last_checkpoint["kind"])
        back = AccessStats.restore(cat.load_access(), half_life)
        same(st, back)
    assert kinds[0] == "snapshot" and kinds.count("log") >= 20, kinds
    cat.close()


def test_a_log_record_is_the_size_of_the_changes_not_of_the_store(tmp_path):
    cat = Catalog(tmp_path / "cat", dim=3, metric="l2", schema={})
    st = AccessStats("auto", size=1_000_000)
    st.record(np.arange(0, 1_000_000, 7), now=1.0)
    cat.save_access(*st.checkpoint())
    assert st.last_checkpoint["kind"] == "snapshot" and st.last_checkpoint["bytes"] > 16_000_000
    rng = np.random.default_rng(1)
    for _ in range(5):  # a cycle's worth of accesses, scattered over the whole store
        st.record(rng.integers(0, 1_000_000, size=3000), now=2.0)
        cat.save_access(*st.checkpoint())
        assert st.last_checkpoint["kind"] == "log" and st.last_checkpoint["bytes"] < 100_000
    header, snap, log = cat.load_access()
    assert len(log) == 5 and len(header) < 1_000_000
    same(st, AccessStats.restore((header, snap, log), "auto"))
    # nothing changed: only the header is written
    cat.save_access(*st.checkpoint())
    assert st.last_checkpoint["kind"] == "header" and len(cat.load_access()[2]) == 5
    cat.close()


def test_the_log_is_folded_into_a_snapshot_when_it_grows_and_after_a_failed_write(tmp_path):
    cat = Catalog(tmp_path / "cat", dim=3, metric="l2", schema={})
    st = AccessStats(60.0, t0=0.0, size=10_000)
    cat.save_access(*st.checkpoint())
    rng = np.random.default_rng(2)
    kinds = []
    for i in range(30):
        st.record(rng.integers(0, 10_000, size=1500), now=float(i))
        cat.save_access(*st.checkpoint())
        kinds.append(st.last_checkpoint["kind"])
        assert len(cat.load_access()[2]) <= 12
    assert "snapshot" in kinds and "log" in kinds
    st.record(np.array([3]), now=40.0)
    st.checkpoint()  # ... whose write never happened
    st.save_failed()
    st.record(np.array([4]), now=41.0)
    cat.save_access(*st.checkpoint())
    assert st.last_checkpoint["kind"] == "snapshot" and cat.load_access()[2] == []
    same(st, AccessStats.restore(cat.load_access(), 60.0))
    cat.close()


def test_a_checkpoint_from_before_the_log_still_loads_and_the_next_one_is_a_snapshot(tmp_path):
    cat = Catalog(tmp_path / "cat", dim=3, metric="l2", schema={})
    st = AccessStats(60.0, t0=0.0, size=5000)
    st.record(np.arange(100), now=1.0)
    cat.set_meta(b"access", st.dumps())  # how checkpoints were written before
    back = AccessStats.restore(cat.load_access(), 60.0)
    same(st, back)
    cat.save_access(*back.checkpoint())
    assert back.last_checkpoint["kind"] == "snapshot"
    same(st, AccessStats.restore(cat.load_access(), 60.0))
    cat.close()


def test_tracking_changed_slots_stays_cheap_past_a_quarter_of_the_store(monkeypatch):
    """Once the raw list of changed slots passes a quarter of the store it is deduplicated, and
    then not again until it has doubled: repeated accesses to the same slots cost a sort of the
    list once per as many new accesses as it holds slots, not on every apply."""
    st = AccessStats(60.0, t0=0.0, size=4000)
    st.checkpoint()  # the first snapshot: tracking starts
    calls = []
    real = np.unique
    monkeypatch.setattr(np, "unique", lambda *a, **k: calls.append(1) or real(*a, **k))
    for i in range(200):  # 100 accesses per apply, over the same 900 slots (under a quarter)
        st.record(np.arange(900)[(i % 9) * 100 : (i % 9 + 1) * 100], now=float(i))
        st.apply()
    assert len(calls) <= 200 * 100 // 900 + 2, len(calls)  # (it was one per apply past 1,000)
    monkeypatch.undo()
    assert st.checkpoint()[2] is not None and st.last_checkpoint == {"kind": "log", "bytes": st.last_checkpoint["bytes"],
                                                                     "slots": 900}


def test_many_tiny_checkpoints_are_folded_into_a_snapshot(tmp_path):
    cat = Catalog(tmp_path / "cat", dim=3, metric="l2", schema={})
    st = AccessStats(60.0, t0=0.0, size=100_000)
    for i in range(150):  # e.g. a flush() after every small write
        st.record(np.array([i]), now=float(i))
        cat.save_access(*st.checkpoint())
        assert len(cat.load_access()[2]) <= 64
    same(st, AccessStats.restore(cat.load_access(), 60.0))
    cat.close()
