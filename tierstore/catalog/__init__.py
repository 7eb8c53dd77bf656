"""The catalog: an LMDB environment that is the single source of truth of a store (see core.py
for its tables, encoding.py for its byte layout)."""

from .core import Catalog
from .encoding import (
    FLAG_PINNED,
    FORMAT_VERSION,
    INT64_MAX,
    INT64_MIN,
    MAX_STR_ID_BYTES,
    TIER_CODES,
    TIER_COLD,
    TIER_HOT,
    TIER_NAMES,
    TIER_WARM,
    Entry,
    decode_uid,
    encode_uid,
    iid_of,
    key,
    location,
    normalize_ids,
    split_location,
)

__all__ = [
    "FLAG_PINNED",
    "FORMAT_VERSION",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_STR_ID_BYTES",
    "TIER_CODES",
    "TIER_COLD",
    "TIER_HOT",
    "TIER_NAMES",
    "TIER_WARM",
    "Catalog",
    "Entry",
    "decode_uid",
    "encode_uid",
    "iid_of",
    "key",
    "location",
    "normalize_ids",
    "split_location",
]
