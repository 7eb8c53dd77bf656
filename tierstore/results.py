"""Value types returned by the public API: Record, Hit, Hits, TierReport.

>>> hits = Hits([Hit("a", 0.1, "hot", {}), Hit("b", 0.2, "warm", {})], partial=False, tiers={})
>>> [h.id for h in hits], hits.ids(), hits.partial
(['a', 'b'], ['a', 'b'], False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True)
class Record:
    """One stored vector: user id, float32 vector, metadata, the tier it lives in now, and its
    document text (``upsert(texts=...)``; None when it has none)."""

    id: str | int
    vector: np.ndarray
    metadata: dict[str, Any]
    tier: str
    text: str | None = None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Record)
            and (self.id, self.metadata, self.tier, self.text) == (other.id, other.metadata, other.tier, other.text)
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]


class _HitFields(NamedTuple):
    id: str | int
    distance: float
    tier: str
    metadata: dict[str, Any]


class Hit(_HitFields):
    """One query result: ``(id, distance, tier, metadata)``. ``distance``: lower is closer
    (cosine 1-cos, ip 1-dot, l2 squared). Two more attributes, outside the tuple so that
    ``id, distance, tier, metadata = hit`` keeps working: ``text``, the record's document text
    (None when it has none), and ``vector``, its stored vector with
    ``query(..., include_vectors=True)`` (else None). Equality compares the tuple.
    (A NamedTuple: immutable fields, and cheap to build on the query path.)"""

    text: str | None = None
    vector: np.ndarray | None = None

    def __new__(cls, id: str | int, distance: float, tier: str, metadata: dict[str, Any],
                text: str | None = None, vector: np.ndarray | None = None) -> Hit:
        self = super().__new__(cls, id, distance, tier, metadata)
        if text is not None:
            self.text = text
        if vector is not None:
            self.vector = vector
        return self

    def with_vector(self, vector: np.ndarray | None) -> Hit:
        return Hit(self.id, self.distance, self.tier, self.metadata, self.text, vector)

    def __repr__(self) -> str:
        extra = "" if self.text is None else f", text={self.text!r}"
        if self.vector is not None:
            extra += f", vector=<{self.vector.shape[0]} floats>"
        return f"Hit(id={self.id!r}, distance={self.distance!r}, tier={self.tier!r}, metadata={self.metadata!r}{extra})"


@dataclass
class TierReport:
    """What one tier did for one query."""

    tier: str
    ok: bool = True
    searched: bool = True
    candidates: int = 0  # ids the tier's index returned
    returned: int = 0  # of those, how many made the merged top-k
    dropped: int = 0  # candidates the catalog no longer places in this tier (moved/deleted)
    latency_ms: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Hits(list):
    """A ``list[Hit]`` sorted by distance, plus ``partial`` (a tier failed or answered
    incompletely, so results may be missing) and ``tiers`` (a TierReport per tier)."""

    def __init__(self, hits=(), *, partial: bool = False, tiers: dict[str, TierReport] | None = None):
        super().__init__(hits)
        self.partial = partial
        self.tiers: dict[str, TierReport] = tiers or {}

    def ids(self) -> list[str | int]:
        return [h.id for h in self]

    def distances(self) -> np.ndarray:
        return np.array([h.distance for h in self], dtype=np.float32)

    def __repr__(self) -> str:
        return f"Hits({list.__repr__(self)}, partial={self.partial}, tiers={list(self.tiers)})"


@dataclass
class MoveReport:
    """Result of ``store.move``: how many vectors moved, were already there, or were missing
    (``queued``: deferred demotions to cold, written at the next segment flush)."""

    tier: str
    moved: int = 0
    already: int = 0
    missing: int = 0
    seconds: float = 0.0
    queued: int = 0


@dataclass
class Move:
    """One planned move: the vector, where it goes, and why (its access count against the
    threshold of the tier it enters or leaves)."""

    id: str | int
    src: str
    dst: str
    count: float  # decayed access count at planning time
    reason: str


@dataclass
class PolicyReport:
    """Result of ``store.run_policy``: the plan (``moves``, per direction), what was carried
    out (``moved``; empty for a dry run) and the numbers behind the plan.

    ``thresholds``: the lowest decayed access count that holds a place in each budgeted tier
    (an incumbent needs only ``(threshold - policy.min_gain) / (1 + hysteresis)``, or any access
    count if it was never accessed). ``deferred``: moves the plan
    wanted but ``policy.max_moves_per_cycle`` postponed to the next cycle."""

    dry_run: bool
    started: float  # unix time
    seconds: float = 0.0
    vectors: int = 0
    budgets: dict[str, int] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)  # planned (dry run) or reached
    planned: dict[str, int] = field(default_factory=dict)  # moves per direction
    moved: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # planned moves dropped because the vector changed meanwhile
    deferred: int = 0
    pinned: int = 0
    in_grace: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    # half_life = "auto": the half-life used (in accesses) and the shadow hit ratios that chose it
    half_life: dict[str, Any] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)  # the first ``examples`` per direction
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_planned(self) -> int:
        return sum(self.planned.values())

    @property
    def total_moved(self) -> int:
        return sum(self.moved.values())


__all__ = ["Hit", "Hits", "Move", "MoveReport", "PolicyReport", "Record", "TierReport"]
