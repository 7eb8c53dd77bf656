"""The hot tier's part in a relocation (tierstore.engine.relocate): copy into Redis."""

from __future__ import annotations

from typing import Any

from ...errors import TierUnavailableError


class HotCopy:
    """Copy rows into the hot index at their new versions.

    ``durable_first`` (an upsert): a Redis failure does not stop the write -- the rows are
    committed with pending marks and indexed when Redis is back (:meth:`after` returns the error
    for the caller to raise, ``durable=True``). Otherwise (a move) pending marks are written
    before the copy, so a crash between copy and flip leaves keys the next reconcile removes, and
    a Redis failure moves nothing."""

    def __init__(self, hot: Any, catalog: Any, durable_first: bool) -> None:
        self.hot, self.catalog = hot, catalog
        self.durable_first = durable_first
        self.error: TierUnavailableError | None = None
        self.attempted = False
        self.iids: list[int] = []

    def copy(self, b: Any, versions: list[int]) -> list[tuple[int, int]]:
        self.iids = b.iids
        if not self.durable_first:
            with self.catalog.write() as txn:
                self.catalog.add_pending(txn, b.iids)
        self.attempted = True  # (anything it raised may have reached Redis already)
        try:
            self.hot.write(b.iids, b.vecs, b.metas, versions)
        except TierUnavailableError as exc:
            if not self.durable_first:
                raise  # nothing moved (the pending marks make the next sync put Redis right)
            self.error = exc  # still commit: durable now, indexed when Redis is back
        return [(0, 0)] * len(b.iids)

    def pending(self) -> list[int]:
        """Rows the flip must leave pending: not in Redis (it failed, or the catalog stands in
        for it while it loads)."""
        return self.iids if self.error is not None or self.hot.standby_reason is not None else []

    def commit(self, txn: Any) -> None:
        pass

    def abort(self) -> None:
        if self.attempted and self.error is None:
            # the copy (or part of it) reached Redis but no flip names it: put back what the
            # catalog holds (a write that failed as TierUnavailableError left nothing to undo)
            try:
                self.hot.sync(self.iids)
            except Exception:
                self.hot.note_unsynced()  # Redis may hold a copy no flip names: reconcile at next open

    def after(self) -> TierUnavailableError | None:
        if self.error is None:
            return None
        err = TierUnavailableError(
            f"{self.error}. The write IS durable in the catalog and will be indexed when Redis is "
            "back (retrying it is safe)", tier="hot", durable=True)
        err.__cause__ = self.error
        return err


__all__ = ["HotCopy"]
