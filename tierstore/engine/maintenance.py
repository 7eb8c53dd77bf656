"""Background maintenance the store does by itself: merging cold's small segments, and warm's.

Warm: the growing segment lives in RAM, so it is sealed at ``warm.growing_size`` rows (well
below ``warm.segment_size``); this thread merges the small sealed segments that leaves into
segments of up to ``warm.segment_size`` rows (:meth:`WarmTier.merge`: the graph is built with no
lock held, only the catalog flip takes the write lock). The rest of this docstring is about cold.

Each ingest batch spilled to cold, each ``upsert(tier="cold")`` and each demotion writes its own
segment. Recall does not depend on how many there are (a query's probe budget is in rows over
all segments), but every segment costs a query its own GETs (partitions of different segments
never share one), a footer and a partition table entry. So once ``cold.auto_compact_segments``
small ones (< ``cold.segment_size / 4`` rows) have piled up, they are merged -- by this thread,
whatever the policy does: a store written only by an offline script, or with the policy off
(``policy.interval = 0``), is merged like any other. (The policy cycle also merges at its end,
through the same :meth:`Maintenance.merge_if_due`.)

A merge holds the write lock (as ``compact()`` does) and is journaled in the catalog, so a crash
inside it is reported at the next open (``stats()["policy"]["interrupted_at_open"]``). It needs no
recovery of its own: on either side of its catalog flip the catalog names exactly one copy of every
vector (the old segments before it, the new one after), the next connect makes the manifest list
the catalog's segments again, and the segments left over are garbage that the next merge or
``compact()`` deletes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import ClosedError
from . import moves

log = logging.getLogger("tierstore")

_POLL = 2.0  # seconds between checks (a check is one pass over the live segments' sizes)
_MAX_BACKOFF = 60.0


class Maintenance:
    """The store's maintenance thread (writer only) and its counters."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine  # tierstore.engine.core.Engine
        self.merges = 0
        self.last: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one merge at a time (thread, policy cycle)
        self._warm_lock = threading.Lock()  # one warm merge at a time (its build takes no store lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def limit(self) -> int:
        return int(self.engine.config.cold.auto_compact_segments)

    def _warm_merges(self) -> bool:
        warm = self.engine.warm
        return warm is not None and not warm.read_only and warm.seal_rows() < warm.cfg.segment_size

    def start(self) -> None:
        if self._thread is None and ((self.limit and self.engine.cold is not None) or self._warm_merges()):
            self._thread = threading.Thread(target=self._loop, name="tierstore-maintenance", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def due(self) -> bool:
        """Whether enough small cold segments have piled up to merge them."""
        cold = self.engine.cold
        # (at least two: one small segment has nothing to merge with, and would be "due" forever)
        return bool(self.limit) and cold is not None and cold.connected and cold.small_segments() >= max(self.limit, 2)

    def merge_if_due(self) -> bool:
        """Merge cold's small segments when :meth:`due` (under the write lock, journaled).
        Returns whether it merged."""
        with self._lock:
            if not self.due():
                return False
            st = self.engine
            t0 = time.perf_counter()
            with st.write_lock:
                out = moves.compact_cold_journaled(st)
            self.merges += 1
            self.last = {"at": time.time(), "seconds": time.perf_counter() - t0, **out}
            self.last_error = None
            log.info("maintenance: merged small cold segments: %s", out)
            return True

    def merge_warm_if_due(self) -> bool:
        """Merge warm's small sealed segments into one (:meth:`WarmTier.merge`: the graph is
        built with no lock held, the flip takes the write lock). Returns whether it merged."""
        if not self._warm_merges():
            return False
        with self._warm_lock:
            warm = self.engine.warm
            victims = warm.merge_candidates()
            if not victims:
                return False
            moved = warm.merge(victims, self.engine.write_lock, stop=self._stop.is_set)
            if moved is None:
                return False
            log.info("maintenance: merged %d small warm segments (%d rows)", len(victims), moved)
            return True

    def _loop(self) -> None:
        wait = _POLL
        while not self._stop.wait(wait):
            try:
                with self.engine.operation():  # counted: close() waits for a merge to finish
                    merged = self.merge_if_due()
                    merged_warm = self.merge_warm_if_due()
                    if merged or merged_warm:
                        self.engine.release_memory()
                # one new segment per merge, the write lock free in between: more may be due at once
                more = (merged and self.due()) or (merged_warm and bool(self.engine.warm.merge_candidates()))
                wait = 0.05 if more else _POLL
            except ClosedError:
                return
            except Exception as exc:  # noqa: BLE001 -- the thread must survive (S3 down: back off)
                if self._stop.is_set():
                    return
                wait = min(max(2 * wait, _POLL), _MAX_BACKOFF)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("maintenance failed (next try in %.0fs): %s", wait, self.last_error)

    def stats(self) -> dict[str, Any]:
        cold = self.engine.cold
        return {"running": self._thread is not None and self._thread.is_alive(), "cold_merges": self.merges,
                "small_cold_segments": cold.small_segments() if cold is not None and cold.connected else 0,
                "merge_at": self.limit, "last_merge": self.last, "last_error": self.last_error,
                "warm_merges": self.engine.warm.stats["merges"] if self.engine.warm is not None else 0}


__all__ = ["Maintenance"]
