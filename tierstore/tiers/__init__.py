"""The tiers as data: one ordered registry every part of the store reads.

Order is speed: a vector's tier code is its index here, the policy's boundaries run between
consecutive tiers (hot | warm, warm | cold), ingest spills down the order, a query searches the
tiers in order and the last one with the bound of what the earlier ones found. Adding a tier
(e.g. a local-disk cache of cold, or "frozen" object storage) is an entry here plus its module
implementing the tier protocol (``tierstore.engine.relocate`` for the copy steps, ``search_many``
for queries).

>>> [t.name for t in ORDER], BY_NAME["warm"].code, BY_NAME["cold"].in_catalog
(['hot', 'warm', 'cold'], 1, False)
"""

from __future__ import annotations

from typing import NamedTuple


class TierSpec(NamedTuple):
    name: str
    code: int  # the catalog's tier byte (its position in ORDER)
    bounded: bool  # has a capacity (a vector budget); unbounded tiers take every overflow
    in_catalog: bool  # its vectors are kept durably in the catalog (LMDB) as well
    searched_last: bool  # queries search it last, with the bound of what the faster tiers found


ORDER: tuple[TierSpec, ...] = (
    TierSpec("hot", 0, bounded=True, in_catalog=True, searched_last=False),
    TierSpec("warm", 1, bounded=True, in_catalog=True, searched_last=False),
    TierSpec("cold", 2, bounded=False, in_catalog=False, searched_last=True),
)
BY_NAME: dict[str, TierSpec] = {t.name: t for t in ORDER}
NAMES: tuple[str, ...] = tuple(t.name for t in ORDER)
CODES: dict[str, int] = {t.name: t.code for t in ORDER}


def quoted_names() -> str:
    return ", ".join(repr(n) for n in NAMES)


def boundaries() -> list[tuple[TierSpec, TierSpec]]:
    """Consecutive pairs (upper, lower): where the policy places a threshold."""
    return list(zip(ORDER, ORDER[1:], strict=False))


__all__ = ["BY_NAME", "CODES", "NAMES", "ORDER", "TierSpec", "boundaries", "quoted_names"]
