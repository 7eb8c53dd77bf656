"""What the hot tier's modules share: Redis errors and replies, and the id book of moves.

These are the package's internal API between its modules (:mod:`.base`, :mod:`.standby`,
:mod:`.search`, :mod:`.vectorset`, :mod:`.cluster`); they import nothing from the package.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import redis

from ...errors import TierUnavailableError
from .copy import HotCopy

# Redis cannot answer now (down, restarting, loading its data): retry, restart or stand in
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)
CHUNK = 512  # commands per pipeline round trip


class InStandby(TierUnavailableError):
    """Redis cannot serve now and the tier answers from the catalog (see :mod:`.standby`)."""


class Stale(Exception):
    """Redis no longer matches what we verified (flushed during a write): re-verify and retry."""


def is_missing_index(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "no such index" in msg or "unknown index name" in msg or "index not found" in msg


def is_unknown_command(exc: Exception) -> bool:
    return "unknown command" in str(exc).lower()


def as_dict(reply: Any) -> dict:
    """FT.INFO / FT.SEARCH replies are maps in RESP3; flatten RESP2 pairs just in case."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=False))


def as_str(v: Any) -> str:
    """A reply value as text (bytes are UTF-8)."""
    return v.decode() if isinstance(v, bytes) else str(v)


class MoveIds:
    """The ids a hot tier keeps beside its index, under their own lock (a mover must not wait
    for a long Redis sync, e.g. the policy's background unlinks, just to protect the ids of its
    next batch):

    - ``protected``: ids a move is copying in (before its catalog flip) or moving out (until the
      reader grace has passed): reconcile neither removes nor rewrites them, their mover syncs
      them;
    - ``synced``: ids written whose pending marks the caller should now clear (:meth:`take`).

    ``share_protected_with``: another book whose protected ids (and lock) this one uses (a
    cluster's shards must all respect the cluster tier's moves); its synced ids stay its own.
    """

    def __init__(self, share_protected_with: MoveIds | None = None) -> None:
        other = share_protected_with
        self.lock = threading.Lock() if other is None else other.lock
        self.protected: set[int] = set() if other is None else other.protected
        self.synced: list[int] = []

    def protect(self, iids: Sequence[int]) -> None:
        with self.lock:
            self.protected.update(iids)

    def unprotect(self, iids: Sequence[int]) -> None:
        with self.lock:
            self.protected.difference_update(iids)

    def protected_now(self) -> set[int]:
        """A copy of the protected ids, taken under the lock."""
        with self.lock:
            return set(self.protected)

    def add_synced(self, iids: Sequence[int]) -> None:
        with self.lock:
            self.synced.extend(iids)

    def take(self) -> list[int]:
        """The synced ids, handed over once (the list starts again empty)."""
        with self.lock:
            out, self.synced = self.synced, []
        return out


class MoveBookkeeping:
    """The move bookkeeping every hot tier offers, over its :class:`MoveIds` (``self.ids``)."""

    ids: MoveIds

    def protect(self, iids: Sequence[int]) -> None:
        """Keys a move is copying in (before its catalog flip) or moving out (until the reader
        grace has passed): reconcile must not remove them."""
        self.ids.protect(iids)

    def unprotect(self, iids: Sequence[int]) -> None:
        self.ids.unprotect(iids)

    def take_synced(self) -> list[int]:
        """Ids written to the index whose pending marks the caller should now clear."""
        return self.ids.take()

    def stage(self, origin: str, catalog: Any) -> HotCopy:
        """A relocation's copy into this tier (tierstore.engine.relocate): an upsert's write is
        durable even when Redis fails; a move's is not."""
        return HotCopy(self, catalog, durable_first=origin == "upsert")


__all__ = ["CHUNK", "UNAVAILABLE", "InStandby", "MoveBookkeeping", "MoveIds", "Stale", "as_dict", "as_str",
           "is_missing_index", "is_unknown_command"]
