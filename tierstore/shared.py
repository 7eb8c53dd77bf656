"""Several processes, one store: what the writer and its read-only processes share besides the
catalog.

- :func:`claim` / :func:`release`: a store path is open at most once per process. LMDB forbids
  opening one environment twice in a process (closing one handle drops the other's locks), so a
  second open in the same process is refused with a clear error: share the first TierStore
  (it is thread-safe).
- :class:`AccessLog` / :class:`AccessDrain`: accesses recorded by read-only processes reach the
  writer's policy. A reader appends frames ``(time f64, count u32, slots i64 x count)`` to its own
  file ``<path>/access/r-<pid>-<token>.log`` (one ``write`` per frame, at most once a second or
  every 4096 accesses, and on close); the writer drains every file at each policy cycle and on
  ``stats()``, consuming complete frames only, and deletes a file once its reader is gone or has
  rotated it (``.done``, past 4 MiB).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreLockedError
from .services import pid_alive

log = logging.getLogger("tierstore")

_FRAME = struct.Struct("<dI")
_FLUSH_SECONDS = 1.0
_FLUSH_ACCESSES = 4096
_ROTATE_BYTES = 4 * 1024**2

_open_here: set[str] = set()
_open_lock = threading.Lock()


def claim(path: Path) -> str:
    """Register ``path`` as open in this process; StoreLockedError if it already is."""
    key = os.path.realpath(path)
    with _open_lock:
        if key in _open_here:
            raise StoreLockedError(
                f"store at {str(path)!r} is already open in this process; share that TierStore between "
                "threads (it is thread-safe) instead of opening the store twice")
        _open_here.add(key)
    return key


def release(key: str | None) -> None:
    if key is not None:
        with _open_lock:
            _open_here.discard(key)


class AccessLog:
    """A read-only process's side: buffer accesses, append them to its own file."""

    half_life = None  # the writer's AccessStats decays them
    auto = False  # (nor does this process tune a half-life)

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._buf: list[Any] = []
        self._n = 0
        self._last = time.monotonic()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self.total_accesses = 0

    def record(self, slots: Any, now: float | None = None) -> None:
        if not len(slots):
            return
        with self._lock:
            self._buf.append(slots)
            self._n += len(slots)
            self.total_accesses += len(slots)
            due = self._n >= _FLUSH_ACCESSES or time.monotonic() - self._last >= _FLUSH_SECONDS
        if due:
            self.flush()

    def apply(self) -> None:  # AccessStats interface (stats() calls it)
        pass

    def flush(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            if not self._buf:
                return
            slots = np.concatenate([np.asarray(s, np.int64).ravel() for s in self._buf])
            self._buf, self._n = [], 0
            try:
                if self._fd is None or self._size > _ROTATE_BYTES:
                    self._rotate()
                frame = _FRAME.pack(time.time(), len(slots)) + slots.astype("<i8").tobytes()
                os.write(self._fd, frame)  # one write per frame: the drainer reads whole frames
                self._size += len(frame)
            except OSError as exc:  # accesses are statistics: losing some is not an error
                log.warning("could not record accesses for the writer's policy: %s", exc)

    def _finish(self) -> None:
        os.close(self._fd)
        # the store directory went away (or the writer removed the file): nothing to hand over
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._path, self._path.with_suffix(".done"))

    def _rotate(self) -> None:
        if self._fd is not None:
            self._finish()
        self._path = self.root / f"r-{os.getpid()}-{secrets.token_hex(4)}.log"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fd is not None:
                self._finish()
                self._fd = None


class AccessDrain:
    """The writer's side: feed the readers' access files into its AccessStats."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        self.drained = 0

    def drain(self, record: Any, slot_limit: int) -> int:
        """Apply every complete frame written since the last drain; returns accesses applied."""
        if not self.root.is_dir():
            return 0
        n = 0
        with self._lock:
            for path in sorted(self.root.iterdir()):
                if path.suffix not in (".log", ".done"):
                    continue
                try:
                    with open(path, "rb") as f:  # offsets by stem: a rotation renames .log -> .done
                        f.seek(self._offsets.get(path.stem, 0))
                        data = f.read()
                except FileNotFoundError:  # rotated meanwhile: picked up as .done next time
                    continue
                at = 0
                while at + _FRAME.size <= len(data):
                    t, count = _FRAME.unpack_from(data, at)
                    end = at + _FRAME.size + 8 * count
                    if end > len(data):
                        break
                    slots = np.frombuffer(data, "<i8", count, at + _FRAME.size)
                    slots = slots[(slots >= 0) & (slots < slot_limit)].astype(np.int64)
                    record(slots, now=t)
                    n += len(slots)
                    at = end
                if path.suffix == ".done" or not _owner_alive(path.name):  # complete, or never will be
                    path.unlink(missing_ok=True)
                    self._offsets.pop(path.stem, None)
                else:
                    self._offsets[path.stem] = self._offsets.get(path.stem, 0) + at
            self.drained += n
        return n


def _owner_alive(name: str) -> bool:
    try:
        return pid_alive(int(name.split("-")[1]))
    except (IndexError, ValueError):
        return False


__all__ = ["AccessDrain", "AccessLog", "claim", "release"]
