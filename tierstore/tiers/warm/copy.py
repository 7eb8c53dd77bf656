"""The warm tier's part in a relocation (tierstore.engine.relocate): copy into the growing segment."""

from __future__ import annotations

from typing import Any

from .growing import GROWING


class WarmCopy:
    """Copy rows into the warm growing segment; a vector whose dead warm row still holds exactly
    it (same vector bytes and metadata: it was warm before) is revived in place instead of being
    inserted into an HNSW graph again. Staged rows the flip never names are not rebuilt at the
    next open (the growing segment is rebuilt from the catalog)."""

    def __init__(self, warm: Any) -> None:
        self.warm = warm
        self.labels: list[int] = []
        self.revived: list[tuple[int, int] | None] = []

    def copy(self, b: Any, versions: list[int]) -> list[tuple[int, int]]:
        warm = self.warm
        self.revived = warm.revive(b.iids, b.vecs, b.meta_raw)
        fresh = [i for i, loc in enumerate(self.revived) if loc is None]
        self.labels = warm.reserve(len(fresh))
        if fresh:
            warm.add(self.labels, [b.iids[i] for i in fresh], b.vecs[fresh], [b.metas[i] for i in fresh])
        new = iter(self.labels)
        return [loc if loc is not None else (GROWING, next(new)) for loc in self.revived]

    def pending(self) -> list[int]:
        return []

    def commit(self, txn: Any) -> None:
        pass

    def abort(self) -> None:
        self.warm.discard(self.labels)
        self.warm.unrevive(self.revived)

    def after(self) -> None:
        if self.warm.needs_seal():
            self.warm.seal()


__all__ = ["WarmCopy"]
