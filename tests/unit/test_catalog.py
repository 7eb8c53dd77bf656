"""Unit tests for tierstore.catalog: id normalisation and the LMDB catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tierstore.catalog import (
    INT64_MAX,
    INT64_MIN,
    MAX_STR_ID_BYTES,
    TIER_COLD,
    TIER_HOT,
    TIER_WARM,
    Catalog,
    Entry,
    decode_uid,
    encode_uid,
    iid_of,
    location,
    normalize_ids,
    split_location,
)
from tierstore.errors import ConfigError, IntegrityError, InvalidInputError

SCHEMA = {"cat": "tag", "price": "numeric"}


@pytest.fixture
def cat_path(tmp_path):
    return tmp_path / "catalog"


@pytest.fixture
def cat(cat_path):
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    yield c
    c.close()


def entry(uid, tier=TIER_HOT, slot=0, version=1, flags=0, seg=0, pos=0):
    return Entry(iid_of(uid), tier, flags, slot, seg, pos, version, uid)


# --- normalize_ids -----------------------------------------------------------------------------


def test_normalize_scalars():
    assert normalize_ids("a") == ["a"]
    assert normalize_ids(5) == [5]
    out = normalize_ids(np.int64(7))
    assert out == [7] and type(out[0]) is int


def test_normalize_sequences():
    assert normalize_ids(["a", "b"]) == ["a", "b"]
    assert normalize_ids((1, 2)) == [1, 2]
    assert normalize_ids([]) == []
    out = normalize_ids([np.int32(1), np.uint8(2), 3])
    assert out == [1, 2, 3] and all(type(x) is int for x in out)


def test_normalize_numpy_arrays():
    out = normalize_ids(np.arange(3, dtype=np.int64))
    assert out == [0, 1, 2] and all(type(x) is int for x in out)
    assert normalize_ids(np.array(["x", "y"])) == ["x", "y"]
    with pytest.raises(InvalidInputError, match=r"1-d sequence.*\(2, 2\)"):
        normalize_ids(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(InvalidInputError, match=r"ids\[0\]: 1\.0 is a float"):
        normalize_ids(np.array([1.0, 2.0]))


@pytest.mark.parametrize(
    ("ids", "pattern"),
    [
        ([True], r"ids\[0\]: True is a bool"),
        (True, r"ids\[0\]: True is a bool"),
        ([1, False], r"ids\[1\]: False is a bool"),
        ([np.bool_(True)], r"ids\[0\]"),
        ([1.0], r"ids\[0\]: 1\.0 is a float; ids must be str or int"),
        (["a", None], r"ids\[1\]: None is a NoneType"),
        ([b"a"], r"ids\[0\]: b'a' is a bytes"),
        ([("a",)], r"ids\[0\]"),
        (1.5, r"ids must be a sequence of str or int, got float"),
        (None, r"got NoneType"),
        (["a", 1], r"must all be str or all be int"),
        ([1, "1"], r"must all be str or all be int"),
        ([""], r"ids\[0\]: string ids must be 1\.\.1024 bytes"),
        (["ok", "x" * (MAX_STR_ID_BYTES + 1)], r"ids\[1\]: string ids must be 1\.\.1024 bytes"),
        (["é" * 513], r"1\.\.1024 bytes"),  # 1026 bytes of UTF-8 though only 513 characters
        ([2**63], r"ids\[0\]: 9223372036854775808 does not fit in a signed 64-bit integer"),
        ([-(2**63) - 1], r"does not fit in a signed 64-bit integer"),
        ([np.uint64(2**64 - 1)], r"does not fit in a signed 64-bit integer"),
    ],
)
def test_normalize_rejects(ids, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        normalize_ids(ids)


def test_normalize_limits_accepted():
    assert normalize_ids([INT64_MIN, INT64_MAX]) == [INT64_MIN, INT64_MAX]
    long_id = "x" * MAX_STR_ID_BYTES
    assert normalize_ids([long_id]) == [long_id]
    assert normalize_ids(["é" * 512]) == ["é" * 512]


def test_invalid_input_error_is_value_error():
    with pytest.raises(ValueError):
        normalize_ids([1.5])


# --- uid encoding / internal ids ---------------------------------------------------------------


@pytest.mark.parametrize("uid", ["a", "5", "日本 語", "x" * 1024, 0, 5, -1, INT64_MIN, INT64_MAX])
def test_uid_roundtrip(uid):
    assert decode_uid(encode_uid(uid)) == uid
    assert type(decode_uid(encode_uid(uid))) is type(uid)
    assert decode_uid(memoryview(encode_uid(uid))) == uid


def test_iid_typed_and_deterministic(cat):
    assert iid_of("5") != iid_of(5)
    assert cat.iid("doc") == iid_of("doc")
    assert 0 <= iid_of("doc") < 2**64


# --- entries and counts --------------------------------------------------------------------------


def test_entry_roundtrip(cat):
    entries = [
        entry("doc-1", TIER_HOT, slot=3, version=1),
        Entry(iid_of(-5), TIER_WARM, 1, 2**32 - 1, 7, 12345, 2**64 - 1, -5),
        entry("日本", TIER_COLD, slot=9, seg=4, pos=2**32 - 1),
    ]
    with cat.write() as txn:
        for e in entries:
            cat.put_entry(txn, e)
    with cat.read() as txn:
        for e in entries:
            assert cat.entry(txn, e.iid) == e
            assert cat.entry_tier(txn, e.iid) == e.tier
        assert cat.entry(txn, iid_of("missing")) is None
        assert cat.entry_tier(txn, iid_of("missing")) == -1


def test_counts_after_put_move_delete(cat):
    assert cat.counts() == {"hot": 0, "warm": 0, "cold": 0}
    with cat.write() as txn:
        for i in range(3):
            cat.put_entry(txn, entry(f"h{i}", TIER_HOT, slot=i))
        for i in range(2):
            cat.put_entry(txn, entry(f"w{i}", TIER_WARM, slot=10 + i))
    assert cat.counts() == {"hot": 3, "warm": 2, "cold": 0}
    # rewrite in the same tier (new version): counts unchanged
    with cat.write() as txn:
        cat.put_entry(txn, entry("h0", TIER_HOT, slot=0, version=2))
    assert cat.counts() == {"hot": 3, "warm": 2, "cold": 0}
    # move hot -> cold, warm -> hot
    with cat.write() as txn:
        cat.put_entry(txn, entry("h1", TIER_COLD, slot=1, version=2))
        cat.put_entry(txn, entry("w0", TIER_HOT, slot=10, version=2))
    assert cat.counts() == {"hot": 3, "warm": 1, "cold": 1}
    assert cat.count(TIER_COLD) == 1
    with cat.read() as txn:
        assert cat.count(TIER_HOT, txn) == 3
    # delete
    with cat.write() as txn:
        gone = cat.delete_entry(txn, iid_of("h1"))
        assert gone is not None and gone.uid == "h1" and gone.tier == TIER_COLD
        assert cat.delete_entry(txn, iid_of("nope")) is None
        assert cat.delete_entry(txn, iid_of("h1")) is None  # second delete is a no-op
    assert cat.counts() == {"hot": 3, "warm": 1, "cold": 0}


def test_counts_survive_reopen(cat_path):
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    with c.write() as txn:
        cat_uid = ["a", "b", "c"]
        for i, uid in enumerate(cat_uid):
            c.put_entry(txn, entry(uid, TIER_WARM, slot=i))
    uuid = c.uuid
    c.close()
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    try:
        assert c.counts() == {"hot": 0, "warm": 3, "cold": 0}
        assert c.uuid == uuid
        assert c.schema_changed is False
    finally:
        c.close()


def test_counts_match_entries_after_random_operations(cat):
    rng = np.random.default_rng(1)
    truth: dict[str, int] = {}
    for _ in range(20):
        with cat.write() as txn:
            for _ in range(10):
                uid = f"u{rng.integers(30)}"
                if rng.random() < 0.25:
                    cat.delete_entry(txn, iid_of(uid))
                    truth.pop(uid, None)
                else:
                    tier = int(rng.integers(3))
                    cat.put_entry(txn, entry(uid, tier))
                    truth[uid] = tier
    want = {
        name: sum(1 for t in truth.values() if t == code) for code, name in enumerate(("hot", "warm", "cold"))
    }
    assert cat.counts() == want
    assert {e.uid: e.tier for e in cat.iter_entries()} == truth


# --- write transactions and generation --------------------------------------------------------


def test_generation_bumps_on_write(cat):
    g0 = cat.generation()
    with cat.write() as txn:
        cat.put_entry(txn, entry("a"))
    assert cat.generation() == g0 + 1
    with cat.write():
        pass
    assert cat.generation() == g0 + 2


def test_failed_write_aborts_and_does_not_bump(cat):
    g0 = cat.generation()
    with pytest.raises(RuntimeError), cat.write() as txn:
        cat.put_entry(txn, entry("a"))
        raise RuntimeError("boom")
    assert cat.generation() == g0
    with cat.read() as txn:
        assert cat.entry(txn, iid_of("a")) is None
    assert cat.counts()["hot"] == 0


# --- vectors and metadata ----------------------------------------------------------------------


def test_vectors_and_metadata_roundtrip(cat):
    vec = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    meta = {"cat": ["a", "b"], "price": 2.5, "note": "日本"}
    iid, iid2 = iid_of("r1"), iid_of(-7)
    with cat.write() as txn:
        cat.put_vector(txn, iid, vec.tobytes())
        cat.put_entry(txn, entry("r1", slot=3)._replace(meta=json.dumps(meta).encode()))
        cat.put_vector(txn, iid2, vec.tobytes())
        cat.put_entry(txn, entry(-7, slot=4))
    with cat.read() as txn:
        got = cat.vector(txn, iid)
        assert got.dtype == np.float32 and got.shape == (3,)
        np.testing.assert_array_equal(got, vec)
        got[0] = 99  # a copy, writable, not a view into LMDB
        assert cat.entry(txn, iid).metadata == meta and cat.entry(txn, iid2).metadata == {}
        assert bytes(cat.vector_raw(txn, iid)) == vec.tobytes()
        assert cat.vector(txn, iid_of("missing")) is None and cat.vector_raw(txn, iid_of("missing")) is None
    with cat.read(buffers=True) as txn:  # the query path's zero-copy decode
        raw = txn.get(iid.to_bytes(8, "big"), db=cat.entries_db)
        assert cat.decode_hit(raw) == ("r1", 3, meta)
        raw = txn.get(iid2.to_bytes(8, "big"), db=cat.entries_db)
        assert cat.decode_hit(raw) == (-7, 4, {})
    with cat.write() as txn:
        cat.delete_vector(txn, iid)
    with cat.read() as txn:
        assert cat.vector(txn, iid) is None
        np.testing.assert_array_equal(cat.vector(txn, iid2), vec)


# --- slots -------------------------------------------------------------------------------------


def test_slot_allocation_and_reuse(cat):
    assert cat.slot_limit() == 0
    with cat.write() as txn:
        slots = cat.alloc_slots(txn, 3)
        assert slots == [0, 1, 2]
        for uid, s in zip(["a", "b", "c"], slots, strict=True):
            cat.put_entry(txn, entry(uid, slot=s))
    assert cat.slot_limit() == 3
    with cat.write() as txn:
        cat.delete_entry(txn, iid_of("b"))  # frees slot 1
    with cat.write() as txn:
        assert cat.alloc_slots(txn, 2) == [1, 3]  # freed slot first, then fresh ones
    assert cat.slot_limit() == 4
    with cat.write() as txn:
        cat.free_slot(txn, 3)
        cat.free_slot(txn, 0)
        cat.free_slot(txn, 0)  # double free is idempotent
        assert cat.alloc_slots(txn, 1) == [0]  # lowest freed slot first
        assert cat.alloc_slots(txn, 3) == [3, 4, 5]
        assert cat.alloc_slots(txn, 0) == []
    assert cat.slot_limit() == 6


def test_slot_allocation_rolled_back_with_txn(cat):
    with pytest.raises(RuntimeError), cat.write() as txn:
        cat.alloc_slots(txn, 5)
        raise RuntimeError
    assert cat.slot_limit() == 0
    with cat.write() as txn:
        assert cat.alloc_slots(txn, 2) == [0, 1]


def test_slots_never_handed_out_twice(cat):
    rng = np.random.default_rng(7)
    live: set[int] = set()
    for _ in range(30):
        with cat.write() as txn:
            if live and rng.random() < 0.4:
                for s in rng.choice(sorted(live), size=min(len(live), 3), replace=False):
                    cat.free_slot(txn, int(s))
                    live.discard(int(s))
            else:
                new = cat.alloc_slots(txn, int(rng.integers(1, 5)))
                assert not live & set(new)
                assert len(set(new)) == len(new)
                live.update(new)
    assert max(live, default=-1) < cat.slot_limit()


# --- pending ---------------------------------------------------------------------------------


def test_pending_marks(cat):
    assert cat.pending() == []
    assert cat.has_pending() is False
    with cat.write() as txn:
        cat.add_pending(txn, [5, 1, 2**64 - 1, 3])
        cat.add_pending(txn, [3])  # idempotent
    assert cat.has_pending() is True
    assert cat.pending() == [1, 3, 5, 2**64 - 1]  # numeric order (big-endian keys)
    assert cat.pending(limit=2) == [1, 3]
    cat.clear_pending([1, 2**64 - 1, 42])  # clearing a non-pending id is fine
    assert cat.pending() == [3, 5]
    cat.clear_pending([3, 5])
    assert cat.pending() == []
    assert cat.has_pending() is False


# --- iteration ---------------------------------------------------------------------------------


def test_iter_entries_resume(cat):
    uids = [f"doc-{i}" for i in range(57)] + list(range(20))
    with cat.write() as txn:
        for i, uid in enumerate(uids):
            cat.put_entry(txn, entry(uid, tier=i % 3, slot=i))
    full = cat.iter_entries()
    assert [e.iid for e in full] == sorted(iid_of(u) for u in uids)
    assert {e.uid for e in full} == set(uids)
    pages, after = [], None
    while True:
        page = cat.iter_entries(start_after=after, limit=7)
        if not page:
            break
        assert len(page) <= 7
        pages.extend(page)
        after = page[-1].iid
    assert pages == full
    # tier filter, also paged
    warm = cat.iter_entries(tiers=[TIER_WARM])
    assert warm == [e for e in full if e.tier == TIER_WARM]
    paged, after = [], None
    while page := cat.iter_entries(tiers={TIER_WARM, TIER_COLD}, start_after=after, limit=4):
        paged.extend(page)
        after = page[-1].iid
    assert paged == [e for e in full if e.tier in (TIER_WARM, TIER_COLD)]
    # resuming after an id that is not stored starts at the next larger one
    mid = full[10].iid
    assert cat.iter_entries(start_after=mid - 1, limit=1) == [full[10]]
    assert cat.iter_entries(start_after=2**64 - 1) == []
    assert cat.iter_entries(start_after=full[-1].iid) == []
    assert cat.iter_entries(start_after=-1, limit=2) == full[:2]


def test_iter_entries_empty(cat):
    assert cat.iter_entries() == []
    assert cat.iter_entries(start_after=5) == []


# --- identity -----------------------------------------------------------------------------------


def test_reopen_with_different_dim(cat_path):
    Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA).close()
    with pytest.raises(ConfigError, match=r"^store\.dim: 4 does not match the existing store .* dim = 3"):
        Catalog(cat_path, dim=4, metric="l2", schema=SCHEMA)


def test_reopen_with_different_metric(cat_path):
    Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA).close()
    with pytest.raises(ConfigError, match=r"^store\.metric: 'cosine' does not match .* metric = 'l2'"):
        Catalog(cat_path, dim=3, metric="cosine", schema=SCHEMA)


def test_schema_type_change_rejected(cat_path):
    Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA).close()
    with pytest.raises(
        ConfigError,
        match=r"^schema\.price: 'tag' does not match the existing store, where price is 'numeric'",
    ):
        Catalog(cat_path, dim=3, metric="l2", schema={"cat": "tag", "price": "tag"})


def test_schema_field_added_and_dropped(cat_path):
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    uuid = c.uuid
    c.close()
    wider = {**SCHEMA, "year": "numeric"}
    c = Catalog(cat_path, dim=3, metric="l2", schema=wider)
    try:
        assert c.schema_changed is True
        assert c.identity["schema"] == wider
        assert c.uuid == uuid
    finally:
        c.close()
    c = Catalog(cat_path, dim=3, metric="l2", schema=wider)
    try:
        assert c.schema_changed is False  # persisted
    finally:
        c.close()
    c = Catalog(cat_path, dim=3, metric="l2", schema={"cat": "tag"})  # dropping a field is allowed too
    try:
        assert c.schema_changed is True
        assert c.identity["schema"] == {"cat": "tag"}
    finally:
        c.close()


def test_mismatch_does_not_modify_store(cat_path):
    Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA).close()
    with pytest.raises(ConfigError):
        Catalog(cat_path, dim=3, metric="l2", schema={"cat": "numeric", "extra": "tag"})
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    try:
        assert c.identity["schema"] == SCHEMA
        assert c.schema_changed is False
    finally:
        c.close()


def test_newer_format_rejected(cat_path):
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    ident = dict(c.identity, format=99)
    with c.env.begin(db=c.meta_db, write=True) as txn:
        txn.put(b"identity", json.dumps(ident).encode())
    c.close()
    with pytest.raises(ConfigError, match=r"newer tierstore \(format 99"):
        Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)


def test_read_only_reopen(cat_path):
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    with c.write() as txn:
        c.put_entry(txn, entry("a"))
    c.close()
    ro = Catalog(cat_path, dim=3, metric="l2", schema={**SCHEMA, "new": "tag"}, read_only=True)
    try:
        with ro.read() as txn:
            assert ro.entry(txn, iid_of("a")).uid == "a"
        assert ro.counts()["hot"] == 1
        ro.sync()  # no-op on a read-only catalog
    finally:
        ro.close()


def test_read_only_on_empty_directory_is_config_error(tmp_path):
    """Catalog documents ConfigError("... holds no tierstore catalog") for a read-only open of a
    path without a catalog, but lmdb.open(readonly=True) fails first with a bare lmdb.Error."""
    with pytest.raises(ConfigError, match=r"holds no tierstore catalog"):
        Catalog(tmp_path / "empty", dim=3, metric="l2", schema={}, read_only=True)


# --- collisions -------------------------------------------------------------------------------


def test_check_collision(cat):
    iid = iid_of("alice")
    forged = Entry(iid, TIER_HOT, 0, 0, 0, 0, 1, "mallory")  # same iid, different user id
    with cat.write() as txn:
        cat.put_entry(txn, forged)
    with cat.read() as txn:
        stored = cat.entry(txn, iid)
    with pytest.raises(IntegrityError, match=r"internal id collision: 'alice' and the stored 'mallory'"):
        cat.check_collision(stored, "alice")
    cat.check_collision(stored, "mallory")  # same id: fine
    cat.check_collision(None, "alice")  # nothing stored: fine
    int_forged = Entry(iid_of(5), TIER_HOT, 0, 0, 0, 0, 1, "5")
    with pytest.raises(IntegrityError, match=f"{iid_of(5):#018x}"):
        cat.check_collision(int_forged, 5)


# --- meta blobs ----------------------------------------------------------------------------------


def test_get_set_meta(cat):
    assert cat.get_meta(b"stats") is None
    cat.set_meta(b"stats", b"\x00\x01payload")
    assert cat.get_meta(b"stats") == b"\x00\x01payload"
    cat.set_meta(b"stats", b"")
    assert cat.get_meta(b"stats") == b""
    cat.set_meta(b"other", b"x")
    assert cat.get_meta(b"stats") == b""
    # blobs live in their own namespace: they cannot clobber the identity or counters
    assert cat.get_meta(b"identity") is None
    cat.set_meta(b"identity", b"junk")
    assert cat.identity["dim"] == 3
    assert type(cat.get_meta(b"other")) is bytes


def test_meta_survives_reopen(cat_path):
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    c.set_meta(b"k", b"v" * 10_000)
    c.close()
    c = Catalog(cat_path, dim=3, metric="l2", schema=SCHEMA)
    try:
        assert c.get_meta(b"k") == b"v" * 10_000
        assert c.disk_bytes() > 0
    finally:
        c.close()


# --- locations and the query's catalog check (confirm) -------------------------------------------


@pytest.mark.parametrize(("seg", "pos"), [(0, 0), (1, 0), (0, 1), (7, 123_456), (2**32 - 1, 2**32 - 1)])
def test_location_round_trip(seg, pos):
    loc = location(seg, pos)
    assert split_location(loc) == (seg, pos)
    assert 0 <= loc < 2**64


def test_location_is_how_an_entry_stores_seg_and_pos(cat):
    """confirm() compares a tier's location with the entry's bytes: the two encodings must agree."""
    e = entry("w", tier=TIER_WARM, seg=5, pos=70_000)
    with cat.write() as txn:
        cat.put_entry(txn, e)
    with cat.read() as txn:
        assert cat.confirm(txn, TIER_WARM, [e.iid], [0.5], [location(5, 70_000)])
        assert not cat.confirm(txn, TIER_WARM, [e.iid], [0.5], [location(70_000, 5)])


def test_confirm_keeps_what_the_catalog_places_in_the_tier(cat):
    hot, warm, cold = entry("h"), entry("w", tier=TIER_WARM, seg=2, pos=9), entry("c", tier=TIER_COLD, seg=4, pos=1)
    gone = iid_of("never-written")
    with cat.write() as txn:
        for e in (hot, warm, cold):
            cat.put_entry(txn, e)
    with cat.read(buffers=True) as txn:
        # no locations (hot): tier only; wrong tier and missing ids are dropped, order kept
        kept = cat.confirm(txn, TIER_HOT, [warm.iid, hot.iid, gone], [0.1, 0.2, 0.3])
        assert [(d, iid, t) for d, iid, t, _raw in kept] == [(0.2, hot.iid, TIER_HOT)]
        assert cat.decode_hit(kept[0][3])[0] == "h"  # the raw entry is what a hit decodes from
        # with locations: the very row, not an older one of the same id
        kept = cat.confirm(txn, TIER_WARM, [warm.iid, warm.iid, hot.iid], [0.1, 0.2, 0.3],
                           [location(2, 9), location(0, 9), location(2, 9)])
        assert [(d, iid) for d, iid, _t, _raw in kept] == [(0.1, warm.iid)]
        kept = cat.confirm(txn, TIER_COLD, [cold.iid], [0.4], [location(4, 1)])
        assert [iid for _d, iid, _t, _raw in kept] == [cold.iid]
        assert cat.confirm(txn, TIER_COLD, [], [], []) == []
