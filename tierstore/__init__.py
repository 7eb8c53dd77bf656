"""tierstore: embedded tiered storage for vector embeddings, one merged query over every tier.

>>> import tierstore, tempfile                                             # doctest: +SKIP
>>> store = tierstore.open(path=tempfile.mkdtemp(), dim=3)                 # doctest: +SKIP
>>> store.upsert([1, 2], [[1, 0, 0], [0, 1, 0]])                           # doctest: +SKIP
2
>>> store.query([1, 0.1, 0], k=1).ids()                                    # doctest: +SKIP
[1]
>>> store.close()                                                          # doctest: +SKIP
"""

from . import errors
from .config import Config, load_config
from .errors import (
    CapacityError,
    ClosedError,
    ConfigError,
    DimensionError,
    IntegrityError,
    InvalidInputError,
    ReadOnlyError,
    SchemaError,
    StoreLockedError,
    TierStoreError,
    TierUnavailableError,
)
from .results import Hit, Hits, Move, MoveReport, PolicyReport, Record, TierReport
from .store import TierStore, open


def _version() -> str:
    """The installed distribution's version (pyproject's, through the package metadata)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("tierstore")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "CapacityError",
    "ClosedError",
    "Config",
    "ConfigError",
    "DimensionError",
    "Hit",
    "Hits",
    "IntegrityError",
    "InvalidInputError",
    "Move",
    "MoveReport",
    "PolicyReport",
    "ReadOnlyError",
    "Record",
    "SchemaError",
    "StoreLockedError",
    "TierReport",
    "TierStore",
    "TierStoreError",
    "TierUnavailableError",
    "errors",
    "load_config",
    "open",
]
