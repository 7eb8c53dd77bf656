"""The catalog's side tables: durable vectors, policy slots, pending Redis work, warm and cold
segment records, the cold journal and demotion queue, named blobs. A mixin of :class:`Catalog`
(the tables are its LMDB sub-databases; this only groups their accessors)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lmdb
import numpy as np

from .encoding import key


class SideTables:
    """Accessors of the catalog's sub-databases other than ``entries`` (see Catalog)."""

    # --- vectors (durable float32 copies of hot and warm vectors) ------------------------------

    def put_vector(self, txn: lmdb.Transaction, iid: int, vector: bytes) -> None:
        txn.put(key(iid), vector, db=self.records_db)

    def delete_vector(self, txn: lmdb.Transaction, iid: int) -> None:
        txn.delete(key(iid), db=self.records_db)

    def vector(self, txn: lmdb.Transaction, iid: int) -> np.ndarray | None:
        raw = txn.get(key(iid), db=self.records_db)
        return None if raw is None else np.frombuffer(raw, dtype=np.float32, count=self.dim).copy()

    def vector_raw(self, txn: lmdb.Transaction, iid: int) -> bytes | None:
        return txn.get(key(iid), db=self.records_db)

    # --- slots (dense index for the policy arrays) ---------------------------------------------

    def alloc_slots(self, txn: lmdb.Transaction, n: int) -> list[int]:
        out: list[int] = []
        cur = txn.cursor(db=self.free_db)
        while len(out) < n and cur.first():
            out.append(int.from_bytes(cur.key(), "big"))
            cur.delete()
        if len(out) < n:
            nxt = int(txn.get(b"next_slot", b"0", db=self.meta_db))
            need = n - len(out)
            out.extend(range(nxt, nxt + need))
            txn.put(b"next_slot", str(nxt + need).encode(), db=self.meta_db)
        return out

    def free_slot(self, txn: lmdb.Transaction, slot: int) -> None:
        txn.put(slot.to_bytes(4, "big"), b"", db=self.free_db)

    def slot_limit(self) -> int:
        """One past the highest slot ever allocated (size of the dense policy arrays)."""
        with self.env.begin() as txn:
            return int(txn.get(b"next_slot", b"0", db=self.meta_db))

    # --- pending hot-index work (write-ahead for Redis) ----------------------------------------

    def add_pending(self, txn: lmdb.Transaction, iids: Iterable[int]) -> None:
        for iid in iids:
            txn.put(key(iid), b"", db=self.pending_db)

    def clear_pending(self, iids: Sequence[int], txn: lmdb.Transaction | None = None) -> None:
        """Remove pending marks, in ``txn`` if given (piggybacking on a write that commits
        anyway saves an fsync), else in a transaction of its own."""
        if txn is not None:
            for iid in iids:
                txn.delete(key(iid), db=self.pending_db)
            return
        if not iids:
            return
        with self.env.begin(write=True, db=self.pending_db) as own:
            for iid in iids:
                own.delete(key(iid))

    def pending(self, limit: int | None = None) -> list[int]:
        out = []
        with self.env.begin(db=self.pending_db) as txn:
            for k in txn.cursor().iternext(values=False):
                out.append(int.from_bytes(k, "big"))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def has_pending(self) -> bool:
        with self.env.begin(db=self.pending_db) as txn:
            return txn.stat(self.pending_db)["entries"] > 0

    # --- warm segments ---------------------------------------------------------------------------

    def put_segment(self, txn: lmdb.Transaction, sid: int, info: Mapping[str, Any]) -> None:
        txn.put(sid.to_bytes(4, "big"), json.dumps(dict(info)).encode(), db=self.segments_db)

    def delete_segment(self, txn: lmdb.Transaction, sid: int) -> None:
        txn.delete(sid.to_bytes(4, "big"), db=self.segments_db)
        # -> move_gen at commit: read-only processes re-list the sealed segments then (a merge of
        # segments whose rows were all dead moves no entry, and would go unseen otherwise)
        txn.put(b"move_dirty", b"1", db=self.meta_db)

    def segments(self) -> dict[int, dict[str, Any]]:
        with self.env.begin(db=self.segments_db) as txn:
            return {int.from_bytes(k, "big"): json.loads(v) for k, v in txn.cursor()}

    def next_segment_id(self, txn: lmdb.Transaction) -> int:
        """Segment ids are never reused (a crashed write's directory can't be mistaken)."""
        sid = int(txn.get(b"next_segment", b"1", db=self.meta_db))
        txn.put(b"next_segment", str(sid + 1).encode(), db=self.meta_db)
        return sid

    def metadata_of(self, iids: Iterable[int]) -> list[dict[str, Any]]:
        """Metadata of each internal id ({} for one that no longer exists), in one read."""
        with self.env.begin() as txn:
            out = []
            for iid in iids:
                e = self.entry(txn, int(iid))
                out.append(e.metadata if e is not None else {})
            return out

    # --- cold segments, the cold journal and the demotion queue ---------------------------------

    def put_cold_segment(self, txn: lmdb.Transaction, sid: int, info: Mapping[str, Any]) -> None:
        txn.put(sid.to_bytes(4, "big"), json.dumps(dict(info)).encode(), db=self.cold_db)

    def delete_cold_segment(self, txn: lmdb.Transaction, sid: int) -> None:
        txn.delete(sid.to_bytes(4, "big"), db=self.cold_db)

    def cold_segments(self) -> dict[int, dict[str, Any]]:
        with self.env.begin(db=self.cold_db) as txn:
            return {int.from_bytes(k, "big"): json.loads(v) for k, v in txn.cursor()}

    def put_journal(self, sid: int, value: bytes, txn: lmdb.Transaction | None = None) -> None:
        if txn is not None:
            txn.put(sid.to_bytes(4, "big"), value, db=self.journal_db)
            return
        with self.env.begin(write=True, db=self.journal_db) as own:
            own.put(sid.to_bytes(4, "big"), value)

    def delete_journal(self, sid: int, txn: lmdb.Transaction | None = None) -> None:
        if txn is not None:
            txn.delete(sid.to_bytes(4, "big"), db=self.journal_db)
            return
        with self.env.begin(write=True, db=self.journal_db) as own:
            own.delete(sid.to_bytes(4, "big"))

    def journal(self) -> dict[int, bytes]:
        with self.env.begin(db=self.journal_db) as txn:
            return {int.from_bytes(k, "big"): bytes(v) for k, v in txn.cursor()}

    def queue_cold(self, iids: Iterable[int]) -> None:
        with self.env.begin(write=True, db=self.coldq_db) as txn:
            for iid in iids:
                txn.put(key(iid), b"")

    def unqueue_cold(self, txn: lmdb.Transaction, iids: Iterable[int]) -> None:
        for iid in iids:
            txn.delete(key(iid), db=self.coldq_db)

    def cold_queue(self, limit: int | None = None) -> list[int]:
        out = []
        with self.env.begin(db=self.coldq_db) as txn:
            for k in txn.cursor().iternext(values=False):
                out.append(int.from_bytes(k, "big"))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def cold_queue_len(self) -> int:
        with self.env.begin(db=self.coldq_db) as txn:
            return txn.stat(self.coldq_db)["entries"]

    # --- small named blobs (access statistics checkpoints, ...) ----------------------------------

    def get_meta(self, name: bytes) -> bytes | None:
        with self.env.begin(db=self.meta_db) as txn:
            raw = txn.get(b"blob:" + name)
            return None if raw is None else bytes(raw)

    def set_meta(self, name: bytes, value: bytes) -> None:
        with self.env.begin(db=self.meta_db, write=True) as txn:
            txn.put(b"blob:" + name, value)

    _ACCESS, _ACCESS_SNAP, _ACCESS_LOG = b"blob:access", b"blob:access.snap", b"blob:access.log."

    def save_access(self, header: bytes, snapshot: bytes | None, record: bytes | None) -> None:
        """One access-statistics checkpoint (``AccessStats.checkpoint``), in one transaction: a
        ``snapshot`` replaces the last one and drops the log; a log ``record`` is appended."""
        with self.env.begin(db=self.meta_db, write=True) as txn:
            logged = self._access_log_keys(txn)
            if snapshot is not None:
                for k in logged:
                    txn.delete(k)
                txn.put(self._ACCESS_SNAP, snapshot)
            if record is not None:
                seq = int(logged[-1][len(self._ACCESS_LOG):]) + 1 if logged else 0
                txn.put(self._ACCESS_LOG + b"%012d" % seq, record)
            txn.put(self._ACCESS, header)

    def load_access(self) -> tuple[bytes | None, bytes | None, list[bytes]]:
        """(header, snapshot, log records in order) of the last checkpoint, read in one
        transaction; a checkpoint from before the log is all in its header."""
        with self.env.begin(db=self.meta_db) as txn:
            header, snap = txn.get(self._ACCESS), txn.get(self._ACCESS_SNAP)
            return (None if header is None else bytes(header), None if snap is None else bytes(snap),
                    [bytes(txn.get(k)) for k in self._access_log_keys(txn)])

    def _access_log_keys(self, txn: Any) -> list[bytes]:
        cur = txn.cursor(db=self.meta_db)
        out = []
        if cur.set_range(self._ACCESS_LOG):
            for k in cur.iternext(values=False):
                if not bytes(k).startswith(self._ACCESS_LOG):
                    break
                out.append(bytes(k))
        return out

    def delete_meta(self, name: bytes) -> None:
        with self.env.begin(db=self.meta_db, write=True) as txn:
            txn.delete(b"blob:" + name)

    def set_flags(self, iids: Iterable[int], set_bits: int, clear_bits: int) -> int:
        """Set/clear flag bits (e.g. FLAG_PINNED) of existing entries; returns #entries changed."""
        n = 0
        with self.write() as txn:
            for iid in iids:
                e = self.entry(txn, iid)
                if e is None:
                    continue
                flags = (e.flags | set_bits) & ~clear_bits
                if flags != e.flags:
                    self.put_entry(txn, e._replace(flags=flags))
                    n += 1
        return n

    # --- housekeeping -------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return int(info["last_pgno"] + 1) * int(stat["psize"])

    def sync(self) -> None:
        if not self.read_only:
            self.env.sync(True)

    def close(self) -> None:
        self.env.close()
