"""Reads: the merged query (with its bookkeeping), records by catalog entry, and the read-only
process's view of a store another process writes."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import xxhash

from .. import filters, inputs, tiers
from ..catalog import TIER_COLD, Entry, split_text
from ..errors import IntegrityError, TierStoreError
from ..results import Hits, Record
from . import query
from .core import Engine

log = logging.getLogger("tierstore")

_LATENCY_WINDOW = 4096  # recent query latencies kept for stats() percentiles
_SHARED_TRIES = 8  # a read-only query repeated while moves keep landing under it (then partial)


class SharedView:
    """Read-only: the catalog state the tiers were last refreshed at. The writer removes an old
    copy (a Redis key, a compacted segment) once *its own* queries are done, not ours, so a query
    here is checked from outside (see :meth:`Reader.search`)."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.state: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Bring the tiers' view up to the catalog if it changed since the last refresh (cheap
        when it did not: one LMDB read). Returns the move generation the view is current for."""
        eng = self.eng
        state = eng.catalog.view_state()
        if state == self.state:
            return state[1]
        with self._lock:
            if state == self.state:
                return state[1]
            moved = self.state is None or state[1] != self.state[1]
            eng.warm.refresh(sealed=moved)
            if eng.cold is not None:
                try:
                    eng.cold.refresh()
                except TierStoreError as exc:  # S3 down: cold queries report it (partial=True)
                    log.warning("read-only store: cold tier refresh failed: %s", exc)
                    return state[1]  # not recorded: the next query tries again
            self.state = state
        return state[1]

    def invalidate(self) -> None:
        self.state = None


class Reader:
    """The query path of one open store (writer or read-only process)."""

    def __init__(self, eng: Engine, executor: Executor) -> None:
        self.eng = eng
        self.executor = executor
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)  # (append is atomic)
        self.view = SharedView(eng) if eng.read_only else None
        self._all = list(eng.tiers.values())
        if self.view is not None:
            self.view.refresh()

    def search(self, qs: np.ndarray, k: Any, flt: Any, tier_names: Any, ef: Any, nprobe: Any,
               strict: bool, *, include_vectors: bool = False) -> list[Hits]:
        eng = self.eng
        if type(k) is not int or not 0 < k <= inputs.MAX_K:
            k = inputs.check_k(k)
        if ef is not None:
            ef = inputs.check_positive(ef, "ef")
        if nprobe is not None:
            nprobe = inputs.check_positive(nprobe, "nprobe")
        node = filters.TRUE if flt is None else filters.compile_filter(flt, eng.schema)
        searched = (self._all if tier_names is None
                    else [eng.tiers[n] for n in inputs.check_tiers(tier_names, list(eng.tiers))])
        if not len(qs):  # query_batch of no rows: the arguments are checked, nothing is searched
            with eng.operation():
                return []
        t0 = time.perf_counter()
        with eng.operation():
            key = None
            if eng.repeat is not None and len(qs) == 1:
                key = xxhash.xxh3_128_digest(b"%r|%r|%r|%r|%r|" % (k, ef, nprobe, flt and sorted(flt.items()), [
                    t.name for t in searched]) + qs.tobytes())
            if self.view is not None:
                out, slots = self._search_shared(qs, k, node, ef, nprobe, strict, searched)
            else:
                epoch = eng.gate.enter()
                try:
                    out, slots = query.run(eng.catalog, searched, qs, k, node, ef=ef, nprobe=nprobe,
                                           executor=self.executor, strict=strict,
                                           repeat=eng.repeat if key else None, repeat_key=key)
                finally:
                    eng.gate.exit(epoch)
        dt = (time.perf_counter() - t0) / len(out)
        if len(out) == 1:
            self.latencies.append(dt)
        else:
            self.latencies.extend([dt] * len(out))
        eng.counters.add(queries=len(out), partial=sum(h.partial for h in out))
        eng.metrics.observe_queries(out, dt)
        eng.policy.hits.add(out)
        if eng.config.policy.access == "top1":
            flat = [s[0] for s in slots if s]
        else:
            flat = slots[0] if len(slots) == 1 else [x for s in slots for x in s]
        eng.access.record(flat)
        if include_vectors:
            self.attach_vectors(out)
        return out

    def attach_vectors(self, out: list[Hits]) -> None:
        """Fill each hit's ``vector`` with its stored vector, read after the search like
        :meth:`records` reads (so: the current version). A hit deleted in between is dropped from
        its list -- an answer of a moment after the delete -- rather than returned without one."""
        cat = self.eng.catalog
        flat = [h for hits in out for h in hits]
        if not flat:
            return
        with self.eng.operation():
            with cat.read() as txn:
                entries = [cat.entry(txn, cat.iid(h.id)) for h in flat]
            found = iter(self.records([e if e is not None and e.uid == h.id else None
                                       for e, h in zip(entries, flat, strict=True)]))
        for hits in out:
            kept = [h.with_vector(r.vector) for h in hits if (r := next(found)) is not None]
            hits[:] = kept

    def _search_shared(self, qs: np.ndarray, k: int, node: Any, ef: Any, nprobe: Any, strict: bool,
                       searched: list[Any]) -> tuple[list[Hits], list[list[int]]]:
        """A read-only process's query: the tiers' view is refreshed to the catalog's move
        generation, the catalog snapshot must still be at that generation (query.StaleView
        otherwise) and so must the catalog after the search -- a move that committed meanwhile
        may have removed a copy the snapshot pointed at, so the query is repeated on a fresh
        view. Writes that only add vectors do not count as moves: they never remove anything."""
        eng, out = self.eng, None
        for _attempt in range(_SHARED_TRIES):
            gen = self.view.refresh()
            try:
                out, slots = query.run(eng.catalog, searched, qs, k, node, ef=ef, nprobe=nprobe,
                                       executor=self.executor, strict=strict, move_gen=gen)
            except query.StaleView:
                continue
            except TierStoreError:
                if eng.catalog.move_generation() != gen:
                    continue  # e.g. a cold object retired under us: not an error of the store
                raise
            if eng.catalog.move_generation() == gen:
                return out, slots
        if out is None:  # every attempt was overtaken: one last, unchecked answer
            out, slots = query.run(eng.catalog, searched, qs, k, node, ef=ef, nprobe=nprobe,
                                   executor=self.executor, strict=strict, move_gen=None)
        log.warning("read-only query: moves kept committing under it (%d tries); answer flagged partial",
                    _SHARED_TRIES)
        for h in out:
            h.partial = True
        return out, slots

    def refresh(self) -> None:
        if self.view is not None:
            self.view.refresh()

    def records(self, entries: Sequence[Entry | None], locked: bool = False) -> list[Record | None]:
        """Records of catalog entries: hot and warm vectors from LMDB, cold ones from S3 (one
        ranged GET per partition involved, through the block cache). An entry that changed since
        it was read is re-read, so each record is the current version."""
        eng = self.eng
        out: list[Record | None] = [None] * len(entries)
        cold: list[tuple[int, Entry]] = []
        with eng.catalog.read() as txn:
            for i, e in enumerate(entries):
                if e is None:
                    continue
                now = eng.catalog.entry(txn, e.iid)
                if now is None:
                    continue
                if now.tier == TIER_COLD:
                    cold.append((i, now))
                    continue
                vec = eng.catalog.vector(txn, e.iid)
                if vec is not None:
                    meta, text = split_text(now.metadata)
                    out[i] = Record(now.uid, vec, meta, tiers.NAMES[now.tier], text)
        if cold:
            try:
                vecs = eng.cold.fetch([e for _, e in cold])
            except IntegrityError:
                if locked:
                    raise
                if self.view is not None:  # retired under us: follow the catalog and read again
                    self.view.invalidate()
                    self.view.refresh()
                    time.sleep(0.05)
                    return self.records(entries, locked=True)
                # a compaction may have retired the segment after our read: read again under the
                # write lock, so that cannot repeat (a real corruption raises again)
                with eng.write_lock:
                    return self.records(entries, locked=True)
            for i, e in cold:
                meta, text = split_text(e.metadata)
                out[i] = Record(e.uid, vecs[e.iid], meta, "cold", text)
        return out

    def slots_of(self, ids: Sequence[str | int]) -> np.ndarray:
        cat = self.eng.catalog
        out = []
        with cat.read() as txn:
            for uid in ids:
                e = cat.entry(txn, cat.iid(uid))
                if e is not None and e.uid == uid:
                    out.append(e.slot)
        return np.asarray(out, dtype=np.int64)

    def latency_ms(self) -> dict[str, float | None]:
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000.0
        return {p: float(np.percentile(lat, q)) if len(lat) else None for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}


__all__ = ["Reader", "SharedView"]
