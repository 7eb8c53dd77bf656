"""The tier protocol: what the engine asks of every tier.

A tier answers queries (:meth:`Tier.search_many`, one :class:`TierAnswer` per query) and takes
part in relocations through a :class:`CopyStage` (:meth:`Tier.stage`): the engine's one
copy -> flip -> retire sequence (``tierstore.engine.relocate``) calls the stage's steps and
nothing else of the tier. The registry (``tierstore.tiers.ORDER``) says where the tier sits.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np


class TierAnswer(NamedTuple):
    """One tier's answer to one query: what every tier's ``search_many`` returns, per query.

    A NamedTuple: as cheap to build as the plain tuples it replaces (the hot path builds one per
    query per tier), and a plain tuple in this order is still accepted (:meth:`of`)."""

    iids: list[int]  # internal ids, best first
    dists: list[float]  # their distances, ascending (see tierstore.distance)
    incomplete: bool = False  # the tier may have missed some (a timeout, a master down)
    locations: list[int] | None = None  # segment tiers: catalog.location() of each row, for the catalog check
    details: dict[str, Any] | None = None  # shown in Hits.tiers[name].details (cold: probes, GETs, ...)

    @classmethod
    def of(cls, answer: Any) -> TierAnswer:
        """``answer`` as a TierAnswer (a tier written against the older protocol returns a tuple
        ``(iids, dists, incomplete[, locations[, details]])``)."""
        return answer if type(answer) is cls else cls(*answer)


class CopyStage(Protocol):
    """One relocation's copy into a tier (see tierstore.engine.relocate for the sequence)."""

    def copy(self, batch: Any, versions: list[int]) -> list[tuple[int, int]]:
        """Hold the rows before the catalog names them; returns each row's (segment, position)."""

    def pending(self) -> list[int]:
        """Internal ids the flip must leave with a pending mark (Redis work to do later)."""

    def commit(self, txn: Any) -> None:
        """Inside the flip's catalog transaction (e.g. the cold segment's record)."""

    def abort(self) -> None:
        """The flip failed: undo the copy (or leave what the next open repairs)."""

    def after(self) -> Any:
        """The flip is durable: finish; may return an error the caller raises (durable writes)."""


class Tier(Protocol):
    """A tier the engine drives (hot, warm, cold; see ARCHITECTURE.md, "Adding a tier")."""

    name: str

    def search_many(self, qs: np.ndarray, k: int, node: Any, ef: int | None = None) -> list[TierAnswer]: ...

    def stage(self, origin: str, catalog: Any) -> CopyStage: ...

    def verify(self, *args: Any, **kwargs: Any) -> Any: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


__all__ = ["CopyStage", "Tier", "TierAnswer"]
