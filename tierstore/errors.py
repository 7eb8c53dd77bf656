"""One error hierarchy for everything tierstore raises.

Every error derives from :class:`TierStoreError`. Errors caused by a bad value the caller passed
also derive from :class:`ValueError`, so ``except ValueError`` keeps working in host code.

>>> from tierstore.errors import DimensionError, TierStoreError
>>> issubclass(DimensionError, TierStoreError) and issubclass(DimensionError, ValueError)
True
"""

from __future__ import annotations


class TierStoreError(Exception):
    """Root of every error tierstore raises."""


class ConfigError(TierStoreError, ValueError):
    """A config key or value is wrong; the message names the key path, the value and what is allowed."""


class SchemaError(TierStoreError, ValueError):
    """Metadata or a filter does not fit the store's ``[schema]`` (unknown field, wrong type, bad operator)."""


class DimensionError(TierStoreError, ValueError):
    """A vector has the wrong shape, or holds NaN/inf (or is all zeros under the cosine metric)."""


class InvalidInputError(TierStoreError, ValueError):
    """Any other bad argument: duplicate ids in a batch, mixed id types, ``k <= 0``, unknown tier."""


class CapacityError(TierStoreError):
    """A write would push a tier beyond its configured ``capacity``; nothing was written."""


class TierUnavailableError(TierStoreError):
    """A tier's server (Redis, S3) cannot be reached or is not ready.

    ``tier`` names the tier. Writes that raise this error either wrote nothing or, when
    ``durable`` is true, are durable in the catalog and will be indexed when the server returns
    (retrying the same write is always safe: writes are idempotent).
    """

    def __init__(self, message: str, *, tier: str | None = None, durable: bool = False) -> None:
        super().__init__(message)
        self.tier = tier
        self.durable = durable


class IntegrityError(TierStoreError):
    """Stored data disagrees with itself: checksum mismatch, id hash collision, catalog vs tier."""


class StoreLockedError(TierStoreError):
    """Another process holds this store open for writing (open it with ``read_only=True`` to
    query it alongside that writer)."""


class ReadOnlyError(TierStoreError):
    """A write (upsert, delete, move, pin, compact, run_policy, ...) on a store opened with
    ``read_only=True``; nothing was written. Send writes to the process that holds the store
    open for writing."""


class ClosedError(TierStoreError):
    """The store was closed."""


__all__ = [
    "CapacityError",
    "ClosedError",
    "ConfigError",
    "DimensionError",
    "IntegrityError",
    "InvalidInputError",
    "ReadOnlyError",
    "SchemaError",
    "StoreLockedError",
    "TierStoreError",
    "TierUnavailableError",
]
