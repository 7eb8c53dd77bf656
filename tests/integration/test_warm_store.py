"""The warm tier inside the store: ingest, seal, merged hot+warm queries, moves, compaction,
crash safety -- against real Redis for the hot side."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tierstore
from tierstore import datasets, filters
from tierstore.catalog import FLAG_PINNED


def vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim))
    return (centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def wn_warm(tmp_path_factory, redis_server, wordnet_20k):
    ds = wordnet_20k
    store = tierstore.open(path=str(tmp_path_factory.mktemp("wnw")), dim=384, env={},
                           schema={"pos": "tag", "lexname": "tag", "nlemmas": "numeric"},
                           hot={"redis_url": redis_server.url},
                           warm={"segment_size": 12_000})
    for s in range(0, 20_000, 5000):
        store.upsert(list(range(s, s + 5000)), ds.base[s : s + 5000], ds.metadata[s : s + 5000], tier="warm")
    yield store
    store.close()


def test_warm_recall_sealed_plus_growing(wn_warm, wordnet_20k):
    info = wn_warm.stats()["tiers"]["warm"]
    # sealed when a batch crosses segment_size: 15k sealed, 5k growing
    assert info["segments"] == 1 and info["growing_live"] == 5000 and info["count"] == 20_000
    found = [h.ids() for h in wn_warm.query_batch(wordnet_20k.queries, k=10)]
    assert datasets.recall_at(found, wordnet_20k.gt, 10) >= 0.95
    hits = wn_warm.query(wordnet_20k.queries[0], k=10)
    assert {h.tier for h in hits} == {"warm"} and hits.tiers["warm"].returned == 10
    rows = np.array(hits.ids())
    np.testing.assert_allclose(hits.distances(), 1 - wordnet_20k.base[rows] @ wordnet_20k.queries[0], atol=2e-3)


@pytest.mark.parametrize("flt", [{"lexname": "noun.animal"},
                                 {"lexname": {"$in": ["noun.plant", "noun.food"]}, "nlemmas": {"$gte": 2}},
                                 {"lexname": {"$ne": "noun.artifact"}, "nlemmas": {"$lt": 2}, "pos": "n"},
                                 {"pos": "v"},
                                 {"lexname": {"$nin": ["noun.artifact", "noun.act"]}, "nlemmas": {"$exists": True}}])
def test_warm_filters_equal_numpy(wn_warm, wordnet_20k, flt):
    ds = wordnet_20k
    node = filters.compile_filter(flt, wn_warm.schema)
    allowed = np.flatnonzero([filters.matches(node, m) for m in ds.metadata])
    q = ds.queries[5]
    hits = wn_warm.query(q, k=10, filter=flt, ef=200)
    expect = allowed[np.argsort(1 - ds.base[allowed] @ q)[:10]]
    assert set(hits.ids()) <= set(allowed.tolist())
    assert len(set(hits.ids()) & set(expect.tolist())) >= min(9, len(allowed))


def test_hot_and_warm_merge_to_the_exact_answer(open_store):
    store = open_store(dim=16)
    v = vectors(2000)
    store.upsert(list(range(1000)), v[:1000])
    store.upsert(list(range(1000, 2000)), v[1000:], tier="warm")
    store.flush()  # seal
    store.upsert(list(range(2000, 2100)), vectors(100, seed=9), tier="warm")  # growing
    allv = np.concatenate([v, vectors(100, seed=9)])
    qs = vectors(20, seed=3)
    truth = datasets.brute_force(allv, qs, 10)
    got = [h.ids() for h in store.query_batch(qs, k=10, ef=400)]
    assert datasets.recall_at(got, truth, 10) >= 0.98
    for h in store.query_batch(qs, k=10):
        assert len(set(h.ids())) == len(h) == 10 and h.tiers["hot"].searched and h.tiers["warm"].searched
    assert list(store.query(qs[0], k=5, tiers=["hot"]).tiers) == ["hot"]
    assert all(x < 1000 for x in store.query(qs[0], k=5, tiers="hot").ids())


def test_moves_keep_results_and_report(open_store):
    store = open_store(dim=16, schema={"g": "tag"})
    v = vectors(600, seed=1)
    store.upsert(list(range(600)), v, [{"g": str(i % 3)} for i in range(600)])
    qs = vectors(10, seed=2)
    before = [h.ids() for h in store.query_batch(qs, k=10, ef=600, filter={"g": {"$ne": "1"}})]
    rep = store.move(list(range(0, 600, 2)) + [10**9], "warm")
    assert (rep.moved, rep.missing, rep.already) == (300, 1, 0)
    assert store.move([0, 1], "warm").already == 1
    assert store.stats()["tiers"]["warm"]["count"] == 301 and store.hot.count() == 299
    mid = [h.ids() for h in store.query_batch(qs, k=10, ef=600, filter={"g": {"$ne": "1"}})]
    assert mid == before
    store.flush()
    assert store.move(list(range(0, 600, 4)), "hot").moved == 150
    after = [h.ids() for h in store.query_batch(qs, k=10, ef=600, filter={"g": {"$ne": "1"}})]
    assert after == before
    assert store.get([4])[0].tier == "hot" and store.get([2])[0].tier == "warm"


def test_query_during_moves_sees_each_vector_exactly_once(open_store):
    store = open_store(dim=16)
    v = vectors(400, seed=4)
    store.upsert(list(range(400)), v)
    movers = list(range(0, 400, 5))
    stop = threading.Event()
    errors: list[str] = []

    def query_loop():
        rng = np.random.default_rng(0)
        while not stop.is_set():
            i = int(rng.choice(movers))
            hits = store.query(v[i], k=5, ef=400)
            ids = hits.ids()
            if len(set(ids)) != len(ids):
                errors.append(f"duplicate in {ids}")
            if ids[:1] != [i]:
                errors.append(f"vector {i} missing from its own query: {ids}")

    threads = [threading.Thread(target=query_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for round_ in range(6):
        store.move(movers, "warm" if round_ % 2 == 0 else "hot")
        if round_ == 2:
            store.flush()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_upsert_replaces_warm_versions_and_deletes_stay_deleted(open_store, tmp_path):
    path = tmp_path / "w"
    store = open_store(path=path, dim=16, warm={"segment_size": 100})
    v = vectors(300, seed=6)
    store.upsert(list(range(300)), v, tier="warm")  # crosses segment_size: sealed as one segment
    store.upsert([5], v[200:201], tier="warm")  # new version of 5 next to 200
    hits = store.query(v[200], k=3, ef=300)
    assert sorted(hits.ids()[:2]) == [5, 200] and len(set(hits.ids())) == 3
    store.upsert([6], v[201:202])  # warm -> hot by replacement
    assert store.get([6])[0].tier == "hot"
    assert store.delete(list(range(100, 180))) == 80
    assert not set(store.query(v[150], k=20, ef=300).ids()) & set(range(100, 180))
    res = store.compact(0.2)["warm"]  # 80 (+2 replaced) of 300 rows are dead
    assert res["segments"] >= 1 and res["rows_dropped"] >= 80
    assert not set(store.query(v[150], k=20, ef=300).ids()) & set(range(100, 180))
    store.close()
    again = open_store(path=path, dim=16, warm={"segment_size": 100})
    assert not set(again.query(v[150], k=20, ef=300).ids()) & set(range(100, 180))
    assert len(again) == 220
    seen = [r.id for b in again.scan(batch_size=50) for r in b]
    assert sorted(seen) == sorted(set(range(300)) - set(range(100, 180)))
    assert again.query(v[200], k=2, ef=300).ids() in ([5, 200], [200, 5])


def test_warm_capacity_and_ingest_tier(open_store):
    store = open_store(dim=16, warm={"capacity": 50}, policy={"ingest_tier": "warm"})
    store.upsert(list(range(50)), vectors(50))
    assert store.stats()["tiers"]["warm"]["count"] == 50
    with pytest.raises(tierstore.CapacityError, match="warm.capacity"):
        store.upsert([99], vectors(1, seed=2), tier="warm")
    store.upsert([99], vectors(1, seed=2))  # ingest spills past the warm budget to cold
    assert store.get([99])[0].tier == "cold"
    store.upsert([200], vectors(1, seed=4), tier="hot")
    with pytest.raises(tierstore.CapacityError, match="warm.capacity"):
        store.move([200], "warm")
    assert store.get([200])[0].tier == "hot"


CRASH = textwrap.dedent("""
    import sys, numpy as np, tierstore
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3000, 16)).astype(np.float32)
    store = tierstore.open(path=sys.argv[1], dim=16, env={}, hot={"redis_url": sys.argv[2]},
                           warm={"segment_size": 700})
    if len(store) == 0:
        store.upsert(list(range(3000)), v)
    print("ready", flush=True)
    i = 0
    while True:  # moves and seals until killed
        ids = list(range(i % 3000, i % 3000 + 300))
        store.move(ids, "warm" if (i // 300) % 2 == 0 else "hot")
        store.upsert([5000 + i], v[:1] + 1, tier="warm")
        i += 300
""")


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.7])
def test_kill_9_during_moves_and_seals_loses_and_duplicates_nothing(tmp_path, redis_server, delay):
    path = str(tmp_path / "crash")
    proc = subprocess.Popen([sys.executable, "-c", CRASH, path, redis_server.url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with tierstore.open(path=path, dim=16, env={}, hot={"redis_url": redis_server.url},
                        warm={"segment_size": 700}) as store:
        ids = [r.id for b in store.scan() for r in b]
        assert len(ids) == len(set(ids)) and set(range(3000)) <= set(ids)
        v = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
        for i in range(0, 3000, 97):
            hits = store.query(v[i], k=3, ef=200)
            assert hits.ids()[0] == i and len(set(hits.ids())) == 3
        st = store.stats()
        assert st["tiers"]["hot"]["num_docs"] == st["tiers"]["hot"]["count"]


def _run_concurrently(worker, reader, seconds: float = 2.0) -> list[str]:
    """Run ``reader`` in two threads while ``worker`` runs; returns reader errors. Fails on a
    deadlock (threads still alive after a generous timeout)."""
    stop = threading.Event()
    errors: list[str] = []

    def loop():
        try:
            while not stop.is_set():
                reader(errors)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "reader threads deadlocked"
    return errors


def test_writes_while_queries_reverify_do_not_deadlock(open_store):
    store = open_store(dim=16)
    v = vectors(3000, seed=11)
    store.upsert(list(range(100)), v[:100])
    next_id = iter(range(100, 3000, 20))

    def worker():
        s = next(next_id, None)
        if s is not None:
            store.upsert(list(range(s, s + 20)), v[s : s + 20])

    def reader(errors):
        store.hot._verified = False  # what every new pooled connection does
        store.query(v[0], k=5)

    assert not _run_concurrently(worker, reader)


def test_queries_during_warm_ingest_never_fail(open_store):
    store = open_store(dim=16, warm={"segment_size": 1500}, schema={"g": "tag"})
    v = vectors(6000, seed=12)
    store.upsert(list(range(1000)), v[:1000], [{"g": "a"}] * 1000, tier="warm")
    next_id = iter(range(1000, 6000, 500))

    def worker():
        s = next(next_id, None)
        if s is not None:
            store.upsert(list(range(s, s + 500)), v[s : s + 500], [{"g": "b"}] * 500, tier="warm")

    def reader(errors):
        store.query(v[7], k=5, filter={"g": "b"})
        hits = store.query(v[7], k=5)
        if hits.ids()[:1] != [7]:
            errors.append(f"7 missing: {hits.ids()}")

    assert not _run_concurrently(worker, reader)


def test_update_moving_between_tiers_stays_visible(open_store):
    store = open_store(dim=16)
    v = vectors(200, seed=13)
    store.upsert(list(range(200)), v)
    flip = iter(range(10**6))

    def worker():
        store.upsert([42], v[42:43], tier="warm" if next(flip) % 2 == 0 else "hot")

    def reader(errors):
        ids = store.query(v[42], k=3, ef=200).ids()
        if ids[:1] != [42] or len(set(ids)) != len(ids):
            errors.append(f"42 not exactly once on top: {ids}")

    assert not _run_concurrently(worker, reader)


def test_vectors_coming_back_to_warm_are_revived_in_place(open_store):
    """hot -> warm of a vector whose dead warm row still holds it (growing or sealed) unmasks
    that row instead of inserting it into a graph again; a changed vector is inserted."""
    store = open_store(dim=16, warm={"segment_size": 150}, cold={"enabled": False}, policy={"interval": 0})
    v = vectors(400)
    store.upsert(list(range(400)), v, tier="warm")  # one sealed segment + the growing one
    ids = list(range(0, 400, 3))
    before = {e.iid: (e.seg, e.pos) for e in store.catalog.iter_entries()}
    for _ in range(2):
        store.move(ids, "hot")
        store.move(ids, "warm")
    assert store.warm.stats["revived"] == 2 * len(ids)
    after = {e.iid: (e.seg, e.pos) for e in store.catalog.iter_entries()}
    assert after == before  # the very same rows
    store.move([3], "hot")
    store.upsert([3], vectors(1, seed=9), tier="hot")  # new content
    store.move([3], "warm")
    assert store.warm.stats["revived"] == 2 * len(ids)  # not revived: inserted
    store.delete([6])
    store.upsert([6], v[6:7], tier="hot")
    store.move([6], "warm")  # a deleted row is never brought back
    assert store.warm.stats["revived"] == 2 * len(ids)
    for i in range(0, 400, 9):
        assert store.query(v[i] if i != 3 else vectors(1, seed=9)[0], k=1, ef=200).ids() == [i]
    assert store.verify()["ok"]


def test_growing_segment_filters_use_cached_masks_and_stay_exact(open_store):
    """Filtered queries on the growing (in-RAM) segment: an exact scan for few matches, the graph
    walk with a cached mask for many; rows added or deleted after a filter was cached count."""
    rng = np.random.default_rng(4)
    dim = 16
    v = rng.standard_normal((3000, dim)).astype(np.float32)
    colour = ["red" if i % 100 == 0 else "blue" for i in range(3000)]  # 30 red, 2970 blue
    s = open_store(dim=dim, schema={"colour": "tag", "n": "numeric"}, cold={"enabled": False},
                   warm={"segment_size": 100_000}, policy={"interval": 0})
    s.upsert(list(range(2000)), v[:2000], [{"colour": c, "n": i} for i, c in enumerate(colour[:2000])], tier="warm")
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)

    def exact(q, ids, k):
        ids = np.asarray(ids)
        d = 1 - unit[ids] @ (q / np.linalg.norm(q))
        return ids[np.argsort(d, kind="stable")[:k]].tolist()

    def live(pred):
        return [i for i in range(3000) if pred(i) and s.get([i])[0] is not None]

    for round_ in range(3):
        q = rng.standard_normal(dim).astype(np.float32)
        red = s.query(q, k=5, filter={"colour": "red"})
        assert red.ids() == exact(q, live(lambda i: colour[i] == "red"), 5), round_
        assert all(h.tier == "warm" for h in red)
        blue = s.query(q, k=5, filter={"colour": "blue", "n": {"$lt": 2500}}, ef=400)
        truth = exact(q, live(lambda i: colour[i] == "blue" and i < 2500), 5)
        assert len(set(blue.ids()) & set(truth)) >= 4, round_  # the graph walk: approximate
        if round_ == 0:  # rows added after the filters were cached, then some deleted
            s.upsert(list(range(2000, 3000)), v[2000:], [{"colour": c, "n": 2000 + i} for i, c in
                                                          enumerate(colour[2000:])], tier="warm")
        elif round_ == 1:
            s.delete([i for i in range(0, 3000, 200)])  # half the red ones


def test_the_store_merges_small_warm_segments_by_itself(open_store, tmp_path):
    """The growing segment (RAM) seals at warm.growing_size rows; the maintenance thread merges
    the small sealed segments into one with no compact() and no policy cycle: every vector finds
    itself before and after, deleted ones never come back, and a reopen serves the same answers."""
    v = vectors(3600, seed=21)
    path = tmp_path / "merging"
    store = open_store(path=path, dim=16, warm={"segment_size": 4000, "growing_size": 1000},
                       cold={"enabled": False}, policy={"interval": 0})
    for s in range(0, 3600, 500):  # (a batch goes to the growing segment whole; sealed after it)
        e = min(s + 500, 3600)
        store.upsert(list(range(s, e)), v[s:e], tier="warm")
    store.delete(list(range(0, 3600, 50)))
    deadline = time.monotonic() + 60
    while store.warm.stats["merges"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    info = store.stats()["tiers"]["warm"]
    assert store.warm.stats["merges"] >= 1 and info["segments"] == 1, info  # three sealed 1000s -> one
    assert info["sealed_live"] == 3000 - 60 and info["growing_rows"] == 600
    assert store.stats()["maintenance"]["warm_merges"] >= 1
    gone = set(range(0, 3600, 50))
    for i in range(0, 3600, 7):
        ids = store.query(v[i], k=3, ef=200).ids()
        assert (ids[0] == i) if i not in gone else (i not in ids)
    before = [store.query(v[i], k=5, ef=200).ids() for i in range(1, 3600, 31)]
    assert store.verify()["ok"]
    store.close()
    again = open_store(path=path, dim=16, warm={"segment_size": 4000, "growing_size": 1000},
                       cold={"enabled": False}, policy={"interval": 0})
    assert [again.query(v[i], k=5, ef=200).ids() for i in range(1, 3600, 31)] == before
    assert sorted(r.id for b in again.scan() for r in b) == sorted(set(range(3600)) - gone)
    rep = again.verify()
    assert rep["ok"], rep["problems"]


def test_a_warm_merge_keeps_writes_made_while_it_builds(open_store, monkeypatch):
    """Writes go on while a merge builds its graph (no lock held): rows deleted or moved out
    meanwhile stay dead in the new segment; a vector coming back to warm is not revived in a
    victim (it goes to the growing segment); after the flip, one is revived in the new segment.
    A merge whose victims were rewritten before it started gives up."""
    from tierstore.tiers.warm import segment as segmod

    v = vectors(2000, seed=22)
    store = open_store(dim=16, hot={"capacity": 1000}, warm={"segment_size": 4000, "growing_size": 500},
                       cold={"enabled": False}, policy={"interval": 0})
    store._engine.maintenance.stop()  # merges run by hand here
    for s in range(0, 2000, 500):  # four sealed segments of 500
        store.upsert(list(range(s, s + 500)), v[s : s + 500], tier="warm")
    assert store.stats()["tiers"]["warm"]["segments"] == 4
    warm, lock = store.warm, store._engine.write_lock
    stale = warm.merge_candidates()
    store.compact(threshold=0.0)  # rewrites them all: a merge of the old ones gives up
    assert warm.merge(stale, lock) is None and all(warm.sealed.get(s.sid) is not s for s in stale)
    for s in range(2000, 4000, 500):  # four new sealed segments (the compacted one is not small)
        store.upsert(list(range(s, s + 500)), vectors(500, seed=s), tier="warm")
    v = np.concatenate([v, *(vectors(500, seed=s) for s in range(2000, 4000, 500))])
    victims = warm.merge_candidates()
    assert len(victims) == 4 and min(s.seg.n for s in victims) == 500
    a, b, c = 2007, 2511, 3012  # rows of three of the victims
    store.move([a], "hot")  # dead in its victim at the snapshot
    real = segmod.exported
    during = []

    @contextlib.contextmanager
    def export_then_write(index, dim, workdir):
        if not during:
            during.append(1)
            store.delete([b])  # alive at the snapshot, deleted before the flip
            store.move([c], "hot")  # alive at the snapshot, moved out before the flip
            store.move([a], "warm")  # not revived in its (retiring) victim: inserted into the growing segment
        with real(index, dim, workdir) as graph:
            yield graph

    monkeypatch.setattr(segmod, "exported", export_then_write)
    # between the flip's first pass over the catalog (no lock) and its write: a metadata update
    # and a pin, which move nothing -- the flip must keep them
    from tierstore.tiers.warm.rewrite import Rewriter
    real_placed, passes = Rewriter._placed, []

    def placed_then_update(self, *args):
        out = real_placed(self, *args)
        if not passes:
            passes.append(1)
            store.update_metadata([2100], {"colour": "blue"})
            store.pin([2200])
        return out

    monkeypatch.setattr(Rewriter, "_placed", placed_then_update)
    revived = warm.stats["revived"]
    moved = warm.merge(victims, lock)
    assert moved == 2000 - 3 and warm.stats["merges"] == 1 and warm.stats["revived"] == revived
    assert warm.retiring == set() and all(s.sid not in warm.sealed for s in victims)
    assert store.get([a])[0].tier == "warm" and store.get([c])[0].tier == "hot" and store.get([b]) == [None]
    assert store.get([2100])[0].metadata == {"colour": "blue"}
    with store.catalog.read() as txn:
        assert store.catalog.entry(txn, store.catalog.iid(2200)).flags & FLAG_PINNED
    assert store.unpin([2200]) == 1  # (it was still pinned)
    store.move([c], "warm")  # its dead row moved into the new segment with the merge: revived there
    assert warm.stats["revived"] == revived + 1 and store.get([c])[0].tier == "warm"
    for i in list(range(0, 4000, 13)) + [a, c]:
        ids_ = store.query(v[i], k=3, ef=200).ids()
        assert (ids_[0] == i) if i != b else (b not in ids_)
    assert sorted(d.name for d in warm.root.iterdir()) == sorted(warm.sealed[sid].seg.path.name for sid in warm.sealed)
    rep = store.verify()
    assert rep["ok"], rep["problems"]


def test_a_warm_merge_of_dead_segments_drops_them_and_tells_readers(open_store):
    """Sealed segments whose rows were all deleted are merged into nothing: their records and
    directories go, and the move generation moves on (read-only processes re-list the segments
    when it does)."""
    v = vectors(1000, seed=23)
    store = open_store(dim=16, warm={"segment_size": 4000, "growing_size": 300}, cold={"enabled": False},
                       policy={"interval": 0})
    store._engine.maintenance.stop()
    for s in range(0, 900, 300):
        store.upsert(list(range(s, s + 300)), v[s : s + 300], tier="warm")
    store.delete(list(range(0, 600)))
    warm = store.warm
    victims = [s for s in warm.merge_candidates() if not s.alive.any()]
    assert len(victims) == 2
    gen = store.catalog.move_generation()
    assert warm.merge(victims, store._engine.write_lock) == 0
    assert store.catalog.move_generation() > gen
    assert all(s.sid not in warm.sealed and s.sid not in store.catalog.segments() and not s.seg.path.exists()
               for s in victims)
    assert [store.query(v[i], k=1, ef=100).ids() for i in range(600, 900, 17)] == [[i] for i in range(600, 900, 17)]
    assert store.verify()["ok"]


MERGE_CRASH = textwrap.dedent("""
    import sys, time
    import numpy as np
    from tierstore.testing import memory_store
    from tierstore.tiers.warm import rewrite, segment
    path, where = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(5)
    v = rng.standard_normal((3000, 16)).astype(np.float32)
    store = memory_store(path, dim=16, warm={"segment_size": 4000, "growing_size": 300}, policy={"interval": 0})
    store._engine.maintenance.stop()
    for s in range(0, 3000, 300):  # ten sealed segments of 300
        store.upsert(list(range(s, s + 300)), v[s : s + 300], tier="warm")
    store.delete(list(range(0, 3000, 10)))
    real_exported, real_flip = segment.exported, rewrite.Rewriter._flip

    def hang(msg):
        print(msg, flush=True)
        time.sleep(60)

    if where == "export":
        import contextlib

        @contextlib.contextmanager
        def exported(index, dim, workdir):
            with real_exported(index, dim, workdir) as graph:
                hang("EXPORTED")  # the graph file exists, the new segment does not
                yield graph
        segment.exported = exported
    else:
        store.warm.wait_readers = lambda: hang("FLIPPED")  # the catalog lists the new segment
    store.warm.merge(store.warm.merge_candidates(), store._engine.write_lock)
""")


@pytest.mark.parametrize("where", ["export", "flip"])
def test_kill_9_inside_a_warm_merge_loses_nothing(tmp_path, where):
    """kill -9 while a merge exports its graph, or right after its catalog flip: the reopened store
    has every live vector exactly once, no deleted one, and no leftover file or directory."""
    proc = subprocess.Popen([sys.executable, "-c", MERGE_CRASH, str(tmp_path), where], stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == ("EXPORTED" if where == "export" else "FLIPPED"), line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    from tierstore.testing import memory_store

    v = np.random.default_rng(5).standard_normal((3000, 16)).astype(np.float32)
    with memory_store(tmp_path, dim=16, warm={"segment_size": 4000, "growing_size": 300},
                      policy={"interval": 0}) as store:
        store._engine.maintenance.stop()
        warm = store.warm
        names = sorted(d.name for d in warm.root.iterdir())
        assert names == sorted(s.seg.path.name for s in warm.sealed.values())  # no leftovers
        if where == "flip":  # the merge happened: the victims are gone, one segment holds them
            assert len(warm.sealed) < 10
        else:
            assert len(warm.sealed) == 10
        live = [i for i in range(3000) if i % 10]
        assert sorted(r.id for b in store.scan() for r in b) == live
        for i in range(0, 3000, 7):
            ids = store.query(v[i], k=2, ef=200).ids()
            assert (ids[0] == i) if i % 10 else (i not in ids)
        rep = store.verify()
        assert rep["ok"], rep["problems"]
