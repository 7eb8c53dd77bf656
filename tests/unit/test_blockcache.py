"""The cold tier's block cache: staged (fetched, not yet written) blocks are served like cached
ones, and a dropped segment's staged blocks are never written."""

from __future__ import annotations

import pytest

from tierstore.errors import IntegrityError
from tierstore.tiers.cold.blockcache import BlockCache


def load(raw: memoryview) -> bytes:
    if bytes(raw[:3]) == b"bad":
        raise IntegrityError("checksum")
    return bytes(raw)


def test_a_staged_block_is_served_before_and_after_it_is_written(tmp_path):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    assert cache.get("7-1", load) is None
    assert cache.stage("7-1", memoryview(b"block one"), limit=1 << 20)
    assert not cache.stage("7-1", memoryview(b"block one"), limit=1 << 20)  # staged once
    assert cache.get("7-1", load) == b"block one"  # not on disk yet, served from RAM
    assert not (tmp_path / "7-1.blk").exists() and cache.staged_bytes == 9
    cache.write_staged("7-1")
    assert (tmp_path / "7-1.blk").read_bytes() == b"block one"
    assert cache.staged_bytes == 0 and cache.get("7-1", load) == b"block one"
    # a restart finds it on disk
    assert BlockCache(tmp_path, capacity=1 << 20).get("7-1", load) == b"block one"


def test_staging_stops_at_its_limit(tmp_path):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    assert cache.stage("1-0", memoryview(b"x" * 60), limit=100)
    assert not cache.stage("1-1", memoryview(b"y" * 60), limit=100)
    assert cache.get("1-1", load) is None
    cache.write_staged("1-0")
    assert cache.stage("1-1", memoryview(b"y" * 60), limit=100)


def test_a_dropped_segment_s_staged_blocks_are_never_written(tmp_path):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    cache.stage("3-0", memoryview(b"old"), limit=1 << 20)
    cache.stage("3-v2", memoryview(b"page"), limit=1 << 20)
    cache.stage("31-0", memoryview(b"other segment"), limit=1 << 20)
    cache.drop_segment(3)
    assert cache.get("3-0", load) is None and cache.get("3-v2", load) is None
    cache.write_staged("3-0")
    assert not (tmp_path / "3-0.blk").exists()
    assert cache.get("31-0", load) == b"other segment"
    assert cache.staged_bytes == len(b"other segment")


@pytest.mark.parametrize("written", [False, True])
def test_a_corrupt_block_is_dropped_and_refetched(tmp_path, written):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    cache.stage("5-0", memoryview(b"bad bytes"), limit=1 << 20)
    if written:
        cache.write_staged("5-0")
    assert cache.get("5-0", load) is None
    assert cache.staged_bytes == 0 and not (tmp_path / "5-0.blk").exists()


def test_a_staged_block_is_decoded_once(tmp_path):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    calls = []

    def counting(raw: memoryview) -> bytes:
        calls.append(1)
        return bytes(raw)

    cache.stage("2-0", memoryview(b"abc"), limit=1 << 20)
    assert cache.get("2-0", counting) == b"abc" and cache.get("2-0", counting) == b"abc"
    assert len(calls) == 1


def test_a_retired_segment_is_not_staged_again(tmp_path):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    cache.drop_segment(9)
    assert not cache.stage("9-4", memoryview(b"late fetch"), limit=1 << 20)  # a record read's GET, after retire
    assert cache.get("9-4", load) is None and not list(tmp_path.glob("9-*"))
    assert cache.stage("90-4", memoryview(b"another segment"), limit=1 << 20)


def test_write_through_fills_spare_room_only_and_queries_blocks_outlive_it(tmp_path):
    """A block written through (``spare_only``: a segment the store just wrote) never evicts
    anything, and it is the first to go when a fetched block needs room."""
    cache = BlockCache(tmp_path, capacity=100)
    cache.put("1-0", b"a" * 40)  # read by a query
    assert cache.put("2-0", b"b" * 40, spare_only=True)
    assert not cache.put("2-1", b"c" * 40, spare_only=True)  # no room: nothing evicted for it
    assert cache.get("1-0", load) == b"a" * 40 and not (tmp_path / "2-1.blk").exists()
    cache.put("3-0", b"d" * 40)  # a fetched block needs room: the written-through one goes first
    assert cache.get("2-0", load) is None and cache.get("1-0", load) == b"a" * 40
    assert cache.get("3-0", load) == b"d" * 40 and cache.bytes == 80


def test_a_dropped_segment_is_not_written_through(tmp_path):
    cache = BlockCache(tmp_path, capacity=1 << 20)
    assert cache.put("5-0", b"x" * 10, spare_only=True)
    cache.drop_segment(5)  # merged away, or its write aborted
    assert not cache.put("5-1", b"y" * 10, spare_only=True)
    assert cache.get("5-0", load) is None and cache.get("5-1", load) is None
    assert not list(tmp_path.glob("5-*")) and cache.bytes == 0


def test_a_reopen_keeps_written_through_blocks_least_recently_used(tmp_path):
    cache = BlockCache(tmp_path, capacity=100)
    cache.put("1-0", b"a" * 40)  # read by a query
    assert cache.put("2-0", b"b" * 40, spare_only=True)
    again = BlockCache(tmp_path, capacity=100)  # files are listed oldest first
    again.put("3-0", b"c" * 40)
    assert again.get("2-0", load) is None and again.get("1-0", load) == b"a" * 40


def test_mapped_blocks_are_bounded_so_descriptors_never_run_out(tmp_path):
    """Every mapped cache file holds a file descriptor: past ``max_mapped`` the least recently
    used decoded block is let go (and mapped again when asked for), so reading a large cache
    never exhausts the process's descriptors."""
    import os

    cache = BlockCache(tmp_path, capacity=1 << 20)
    cache.max_mapped = 4
    for i in range(50):
        cache.put(f"1-{i}", b"%02d" % i * 10)
    fds = len(os.listdir("/proc/self/fd"))
    for _round in range(2):
        for i in range(50):  # the decoded block is a view of the mapping: it keeps it open
            assert bytes(cache.get(f"1-{i}", lambda raw: raw)) == b"%02d" % i * 10
    assert len(cache._objs) <= 4
    assert len(os.listdir("/proc/self/fd")) <= fds + 4


def test_get_mapped_serves_what_get_would_and_keeps_the_lru_order(tmp_path):
    """The query path's one-lock lookup: staged and already-mapped blocks come back as get would
    return them, anything else is None (get then maps or fetches it), and a block it serves is
    touched in the LRU exactly like a get: the next eviction takes the block nobody read."""
    cache = BlockCache(tmp_path, capacity=30)
    cache.put("1-0", b"a" * 10)
    cache.put("1-1", b"b" * 10)
    cache.stage("2-0", memoryview(b"staged"), limit=1 << 20)
    assert cache.get_mapped(["1-0", "1-1", "2-0", "9-9"]) == [None, None, None, None]  # nothing mapped yet
    assert cache.get("1-0", load) == b"a" * 10 and cache.get("1-1", load) == b"b" * 10  # (maps them)
    assert cache.get("2-0", load) == b"staged"  # (decodes it)
    assert cache.get_mapped(["1-0", "2-0", "9-9"]) == [b"a" * 10, b"staged", None]
    cache.put("1-2", b"c" * 10)
    cache.put("1-3", b"d" * 10)  # past capacity: the least recently used goes, and that is 1-1
    assert cache.get_mapped(["1-1", "1-0"]) == [None, b"a" * 10]
    assert not (tmp_path / "1-1.blk").exists() and (tmp_path / "1-0.blk").exists()
