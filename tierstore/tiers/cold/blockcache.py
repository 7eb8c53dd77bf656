"""BlockCache: fetched cold partitions as files on local disk, LRU-bounded (used by reads.py).

A fetched block is *staged* in RAM first and written to disk by a background writer (writing
inline cost a cache-cold query more than its GETs). Staged blocks are served like cached ones: under
load the writer falls behind by seconds, and a repeated query must not fetch again what the last
one fetched (it did: the compare benchmark's stream paid 4,200 GETs per 1,000 queries)."""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import IntegrityError

log = logging.getLogger("tierstore")

PAGE_GROUP = 64  # pages of exact vectors per group file (64 x 8 rows)
_MAX_MAPPED = 16384  # mapped cache files per process, at most (each is one VMA and one descriptor)


def mapped_limit() -> int:
    """How many cache files one process keeps memory-mapped. A Python mmap holds a duplicate of
    its file descriptor for its lifetime, so every mapped block costs one descriptor: raise the
    soft open-file limit to the hard one (at most 65,536; the Go runtime does the same), and map
    at most a quarter of it (16,384 at most: each mapping is also one of the kernel's ~65,530
    memory areas per process). Found at 1M vectors: with every page of every segment cached, the
    policy's and the queries' reads mapped more than 20,000 files and the next ``open`` failed."""
    try:
        import resource
    except ImportError:
        return 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):  # (macOS caps it below "unlimited"): keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(64, min(_MAX_MAPPED, (65536 if soft == resource.RLIM_INFINITY else soft) // 4))


class BlockCache:
    """Fetched partitions as files on local disk, least-recently-used evicted past ``capacity``
    bytes; survives restarts (files are re-listed at open, oldest first).

    A cached block is memory-mapped and decoded (and its checksum verified) once per process; the
    decoded object is kept with the entry, so a cache hit costs no read, copy or hash -- the bytes
    stay in the page cache, not in the process's private memory."""

    def __init__(self, root: Path, capacity: int, shared: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.shared = shared
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._objs: OrderedDict[str, Any] = OrderedDict()  # decoded (mapped) blocks, at most max_mapped
        self.max_mapped = mapped_limit()
        self.bytes = 0
        self._adopted: OrderedDict[str, Any] = OrderedDict()  # shared: blocks other processes wrote
        self._staged: dict[str, memoryview] = {}  # fetched, not yet on disk (see stage)
        self._staged_objs: dict[str, Any] = {}  # ... and decoded once
        self._dropped: set[str] = set()  # segments dropped by this process: never staged or written again
        self.staged_bytes = 0
        if shared:
            # a read-only process: the directory is the writer's. Files other processes wrote are
            # used when found (get), never evicted by us: we evict only what we wrote ourselves.
            return
        for p in root.glob("*.tmp"):
            p.unlink(missing_ok=True)
        files = []
        for p in root.iterdir():
            if p.suffix == ".blk":
                try:
                    st = p.stat()
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
                files.append((st.st_mtime, p.name, st.st_size))
        for _m, name, size in sorted(files):
            self._lru[name[:-4]] = size
            self.bytes += size

    @staticmethod
    def name(sid: int, part: int) -> str:
        return f"{sid}-{part}"

    @staticmethod
    def page_name(sid: int, page: int) -> str:
        """A page of exact vectors (cold format 2) of segment ``sid``."""
        return f"{sid}-v{page}"

    @staticmethod
    def group_name(sid: int, group: int) -> str:
        """``PAGE_GROUP`` consecutive pages of exact vectors of segment ``sid`` in one file (what a
        segment's write-through writes: one file and one mapping per group, not per page)."""
        return f"{sid}-g{group}"

    def get_mapped(self, names: list[str]) -> list[Any]:
        """The decoded blocks of ``names`` that are staged or cached *and already mapped* (the
        steady state of a warm cache), None for the rest -- which :meth:`get` then serves one by
        one. One lock round for all of them: a query probes 50-150 partitions, and a :meth:`get`
        per partition (three lock rounds each) was 0.2 ms of a 3 ms cache-warm query."""
        out: list[Any] = [None] * len(names)
        with self._lock:
            staged, objs, lru = self._staged_objs, self._objs, self._lru
            for i, name in enumerate(names):
                obj = staged.get(name)
                if obj is None:
                    obj = objs.get(name)
                    if obj is None or name not in lru:
                        continue
                    lru.move_to_end(name)
                    objs.move_to_end(name)
                out[i] = obj
        return out

    def get(self, name: str, load: Callable[[memoryview], Any]) -> Any:
        """The decoded block ``load(mapped bytes)`` of ``name``, or None when not cached. ``load``
        raises IntegrityError for a corrupt file, which is then dropped (the caller refetches)."""
        with self._lock:
            staged = self._staged.get(name)
            obj = self._staged_objs.get(name)
        if obj is not None:
            return obj
        if staged is not None:
            try:
                obj = load(staged)
            except (ValueError, IntegrityError):  # a gap filler is staged unverified
                self._unstage(name, staged)
                return None
            with self._lock:
                if self._staged.get(name) is staged:
                    self._staged_objs[name] = obj
            return obj
        with self._lock:
            if name not in self._lru:
                obj = None
                adopt = True
            else:
                adopt = False
                self._lru.move_to_end(name)
                obj = self._objs.get(name)
                if obj is not None:
                    self._objs.move_to_end(name)
        if adopt:  # written by another process sharing the directory?
            with self._lock:
                obj = self._adopted.get(name)
                if obj is not None:
                    self._adopted.move_to_end(name)
                    return obj
            path = self.root / f"{name}.blk"
            if not path.exists():
                return None
            try:
                with open(path, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                obj = load(memoryview(mm))
            except (OSError, ValueError, IntegrityError):
                return None  # being replaced or torn: the caller fetches it
            with self._lock:
                if not self.shared:  # the writer adopts it into its LRU (it manages the directory)
                    if name not in self._lru:
                        self._lru[name] = len(mm)
                        self.bytes += len(mm)
                        self._map(name, obj)
                else:  # mapped (page cache, not private memory): bounded by count only
                    self._adopted[name] = obj
                    while len(self._adopted) > self.max_mapped:
                        self._adopted.popitem(last=False)
            return obj
        if obj is not None:
            return obj
        try:
            with open(self.root / f"{name}.blk", "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            obj = load(memoryview(mm))
        except (OSError, ValueError, IntegrityError) as exc:  # ValueError: an empty file
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                return None  # out of descriptors or mappings: the file is fine, keep it
            if isinstance(exc, IntegrityError):
                log.warning("cold cache: %s is corrupt on local disk; refetching", name)
            self.drop(name)
            return None
        with self._lock:
            if name in self._lru:
                self._map(name, obj)
        return obj

    def _map(self, name: str, obj: Any) -> None:
        """(lock held) Keep ``obj`` decoded; past ``max_mapped`` the least recently used one is
        let go (its mapping closes when no query holds it; a later get maps it again)."""
        self._objs[name] = obj
        self._objs.move_to_end(name)
        while len(self._objs) > self.max_mapped:
            self._objs.popitem(last=False)

    def stage(self, name: str, data: memoryview, limit: int) -> bool:
        """Keep fetched ``data`` readable under ``name`` until :meth:`write_staged` puts it on disk.
        False (nothing kept) when it is staged already or more than ``limit`` bytes would wait:
        a burst of cache-cold queries cannot pile up RAM."""
        if len(data) > self.capacity:
            return False
        with self._lock:
            if (name in self._staged or self.staged_bytes + len(data) > limit
                    or name.split("-")[0] in self._dropped):
                return False
            self._staged[name] = data
            self.staged_bytes += len(data)
        return True

    def write_staged(self, name: str) -> None:
        """Write a staged block to disk (the background writer's step); nothing when it was dropped
        meanwhile (a retired segment's block is never re-created)."""
        with self._lock:
            data = self._staged.get(name)
        if data is None:
            return
        try:
            self.put(name, data)
            with self._lock:
                dropped = self._staged.get(name) is not data  # drop() ran meanwhile: undo the put
            if dropped:
                self.drop(name)
        finally:
            self._unstage(name, data)

    def _unstage(self, name: str, data: memoryview) -> None:
        with self._lock:
            if self._staged.get(name) is data:
                del self._staged[name]
                self._staged_objs.pop(name, None)
                self.staged_bytes -= len(data)

    def put(self, name: str, data: bytes, spare_only: bool = False) -> bool:
        """Write ``data`` as the block ``name`` (most recently used). ``spare_only``: only into room
        the cache has free, as its *least* recently used entry, never evicting anything and never
        for a dropped segment -- the blocks of a segment the store just wrote (write-through) are
        worth keeping while there is room, not more than what queries read. Returns whether it
        was written."""
        if len(data) > self.capacity:
            return False
        if spare_only:
            with self._lock:
                if self.bytes + len(data) > self.capacity or name.split("-")[0] in self._dropped:
                    return False
        tmp = self.root / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)  # no fsync: a torn cache file fails its checksum and is refetched
        if spare_only:  # the oldest file: a reopen lists it least recently used too (files by mtime)
            os.utime(tmp, (0, 0))
        os.replace(tmp, self.root / f"{name}.blk")
        with self._lock:
            if spare_only and name.split("-")[0] in self._dropped:  # dropped meanwhile: undo
                self.bytes -= self._lru.pop(name, 0)
                self._objs.pop(name, None)
                (self.root / f"{name}.blk").unlink(missing_ok=True)
                return False
            self.bytes += len(data) - self._lru.pop(name, 0)
            self._objs.pop(name, None)
            self._lru[name] = len(data)
            if spare_only:
                self._lru.move_to_end(name, last=False)
            while self.bytes > self.capacity and self._lru:
                old, size = self._lru.popitem(last=False)
                self._objs.pop(old, None)  # a query still holding it keeps its mapping valid
                self.bytes -= size
                (self.root / f"{old}.blk").unlink(missing_ok=True)
        return True

    def drop(self, name: str) -> None:
        with self._lock:
            staged = self._staged.pop(name, None)
            self._staged_objs.pop(name, None)
            if staged is not None:
                self.staged_bytes -= len(staged)
            self.bytes -= self._lru.pop(name, 0)
            self._objs.pop(name, None)
        (self.root / f"{name}.blk").unlink(missing_ok=True)

    def drop_segment(self, sid: int) -> None:
        """Drop a retired segment's blocks; a late fetch of one (a record read that took the
        segment list before it was retired) is not staged or written again."""
        with self._lock:
            self._dropped.add(str(sid))
            names = [n for n in (*self._lru, *self._staged) if n.split("-")[0] == str(sid)]
        for n in names:
            self.drop(n)

    def clear(self) -> None:
        with self._lock:
            names = [*self._lru, *self._staged]
        for n in names:
            self.drop(n)

    def __len__(self) -> int:
        return len(self._lru)


__all__ = ["BlockCache"]
