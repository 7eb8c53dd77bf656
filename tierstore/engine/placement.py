"""The placement index: every live entry's tier, flags, version and internal id as dense arrays
by policy slot, kept current by the engine's own catalog changes.

A policy cycle used to read the whole catalog into columns (``Catalog.placement``: one Python
int and one bytes object per vector; 1-1.7 s and ~200 MB transient at 1M vectors, every cycle).
Only three places change what planning reads -- a relocation (tier, version), a delete, a pin
(flags) -- and all three run in the engine under its write lock, so they update these arrays as
they commit; a cycle takes a copy of them instead (a few ms at 1M). Cost: 19 bytes per slot
(tier, flags, version, internal id, and the verdict of the ``policy.pin_*`` filters, kept per
slot so a cycle decodes no metadata).

The arrays are built from the catalog on the first use (one pass, as before) and checked at
every cycle against the catalog's per-tier counters; a mismatch (a change made behind the
engine's back) rebuilds them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FREE = -1  # tier of a slot no entry holds


class PlacementIndex:
    """Dense per-slot columns of the live entries (see the module docstring)."""

    def __init__(self, pin_of: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.pin_of = pin_of  # metadata -> the tier its policy.pin_* filters pin it to (-1: none)
        self._lock = threading.Lock()  # a leaf: writers update under the engine's write lock too
        self.built = False
        self.stale = False  # a catalog change committed (or may have) that the arrays do not show yet
        self.rebuilds = 0
        self._alloc(0)

    def _alloc(self, n: int) -> None:
        self.tier = np.full(n, FREE, np.int8)
        self.flags = np.zeros(n, np.uint8)
        self.version = np.zeros(n, np.uint64)
        self.iid = np.zeros(n, np.uint64)
        self.pin = np.full(n, -1, np.int8)

    def _grow(self, need: int) -> None:  # (under self._lock)
        n = self.tier.shape[0]
        if need <= n:
            return
        size = max(need, n + n // 2, 1024)
        old = (self.tier, self.flags, self.version, self.iid, self.pin)
        self._alloc(size)
        for new, was in zip((self.tier, self.flags, self.version, self.iid, self.pin), old, strict=True):
            new[:n] = was

    def build(self, catalog: Any) -> None:
        """Read every entry (the caller holds the engine's write lock: no change can slip in)."""
        snap = catalog.placement(with_meta=self.pin_of is not None)
        slots = snap["slot"]
        with self._lock:
            self._alloc(max(int(slots.max()) + 1 if len(slots) else 0, catalog.slot_limit()))
            self.tier[slots] = snap["tier"]
            self.flags[slots] = snap["flags"]
            self.version[slots] = snap["version"]
            self.iid[slots] = snap["iid"]
            if self.pin_of is not None:
                self.pin[slots] = [self.pin_of(json.loads(m) if m else {}) for m in snap["meta"]]
            self.built = True
            self.stale = False

    def expect(self) -> None:
        """A change is about to commit: until put/drop/set_flags records it, the arrays are
        stale (an error in between leaves them so, and the next cycle rebuilds them)."""
        self.stale = True

    def put(self, slots: Sequence[int], iids: Sequence[int], tier: int, flags: Sequence[int],
            versions: Sequence[int], metas: Sequence[dict[str, Any]]) -> None:
        """After a relocation's flip: these slots hold these entries, now in ``tier``."""
        if not self.built:
            return  # the first build reads the catalog, which has them
        s = np.asarray(slots, np.int64)
        with self._lock:
            self._grow(int(s.max()) + 1 if len(s) else 0)
            self.tier[s] = tier
            self.flags[s] = flags
            self.version[s] = versions
            self.iid[s] = np.asarray(iids, np.uint64)
            if self.pin_of is not None:
                self.pin[s] = [self.pin_of(m) for m in metas]
            self.stale = False

    def drop(self, slots: Sequence[int]) -> None:
        """After a delete: the slots are free."""
        if self.built and len(slots):
            with self._lock:
                self.tier[np.asarray(slots, np.int64)] = FREE
        self.stale = False

    def set_flags(self, slots: Sequence[int], flags: Sequence[int]) -> None:
        if self.built and len(slots):
            with self._lock:
                self.flags[np.asarray(slots, np.int64)] = flags
        self.stale = False

    def lookup(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of ``slots`` as they are now (tier ``FREE`` for a slot no entry holds,
        or one beyond the arrays): what promote on access checks a candidate against."""
        slots = np.asarray(slots, np.int64)
        with self._lock:
            inside = (slots >= 0) & (slots < self.tier.shape[0])
            s = slots[inside]
            out = {"tier": np.full(len(slots), FREE, np.int8), "flags": np.zeros(len(slots), np.uint8),
                   "iid": np.zeros(len(slots), np.uint64), "pin": np.full(len(slots), -1, np.int8)}
            for k in out:
                out[k][inside] = getattr(self, k)[s]
        return out

    def agrees(self, counts: dict[str, int], names: Sequence[str]) -> bool:
        """Whether the per-tier counts match the catalog's counters (``counts``)."""
        with self._lock:
            have = np.bincount(self.tier[self.tier >= 0], minlength=len(names))
        return all(int(have[c]) == counts.get(n, 0) for c, n in enumerate(names))

    def snapshot(self) -> dict[str, Any]:
        """The live entries as columns (``Catalog.placement``'s shape, in slot order), plus
        ``pin`` when pin filters are configured."""
        with self._lock:
            slots = np.flatnonzero(self.tier >= 0)
            out = {"slot": slots.astype(np.int64), "tier": self.tier[slots], "flags": self.flags[slots],
                   "version": self.version[slots], "iid": self.iid[slots]}
            if self.pin_of is not None:
                out["pin"] = self.pin[slots]
        return out

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.tier, self.flags, self.version, self.iid, self.pin))


__all__ = ["FREE", "PlacementIndex"]
