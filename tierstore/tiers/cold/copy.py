"""The cold tier's part in a relocation (tierstore.engine.relocate): copy into one new segment."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("tierstore")


class ColdCopy:
    """Copy rows into one new S3 segment and its manifest (journaled by the cold tier, which
    rolls back an unlisted one at the next connect). The vectors leave LMDB in the flip."""

    def __init__(self, cold: Any, op: str) -> None:
        self.cold = cold
        self.op = op  # the journal's name for the write: "ingest", "move" or "compact"
        self.written: Any = None

    def copy(self, b: Any, versions: list[int]) -> list[tuple[int, int]]:
        self.written = self.cold.write(np.asarray(b.iids, np.uint64), b.vecs, b.metas, b.uids, op=self.op)
        self.cold.activate(self.written)
        return [(self.written.seg.sid, row) for row in self.written.rows.tolist()]

    def pending(self) -> list[int]:
        return []

    def commit(self, txn: Any) -> None:
        self.cold.commit(txn, self.written)

    def abort(self) -> None:
        if self.written is None:
            return
        try:
            self.cold.abort(self.written)
        except Exception as exc:  # keep the original error; the next open repairs the manifest
            log.warning("cold tier: abort of segment %d failed: %s", self.written.seg.sid, exc)

    def after(self) -> None:
        return None


__all__ = ["ColdCopy"]
