"""The catalog's byte layout, owned here: entry values, keys, typed user ids, locations.

An entry value is ``<BBHIIIQ`` (tier u8, flags u8, uid length u16, slot u32, seg u32, pos u32,
version u64: 24 bytes), then the encoded user id (``s:`` + UTF-8 or ``i:`` + int64 BE), then the
metadata JSON (empty when there is none). Keys are the internal id as 8 bytes big-endian (LMDB
then iterates in internal-id order). Tiers report where they found a row as one int,
:func:`location` (segment id | row << 32), and :meth:`Catalog.confirm` checks it against the entry.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

import numpy as np
import xxhash

from .. import tiers
from ..errors import InvalidInputError

FORMAT_VERSION = 1

TIER_HOT, TIER_WARM, TIER_COLD = (tiers.CODES[n] for n in ("hot", "warm", "cold"))
TIER_NAMES = tiers.NAMES
TIER_CODES = tiers.CODES

FLAG_PINNED = 1  # pinned to its tier: the policy never moves it

# A record's document text (``upsert(texts=...)``) is kept in its metadata JSON under this key,
# which no user key can be (``inputs`` rejects keys starting with NUL). Kept there, the text
# travels with every copy of the metadata for free -- moves, cold segments' record blocks,
# exports -- and only the two places that hand metadata to callers split it out (:func:`split_text`).
TEXT_KEY = "\x00text"

# tier u8, flags u8, uid length u16, slot u32, seg u32, pos u32, version u64 (24 bytes),
# then the encoded user id, then the metadata JSON (empty when there is none)
ENTRY = struct.Struct("<BBHIIIQ")
HIT_HEADER = struct.Struct("<2xHI")  # (uid length, slot): what a query hit needs
INT_ID = struct.Struct(">q")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STR_ID_BYTES = 1024


class Entry(NamedTuple):
    """Where one vector lives. ``seg``/``pos`` locate it inside a warm or cold segment; ``meta``
    is its metadata as JSON bytes (``b""`` for none)."""

    iid: int
    tier: int
    flags: int
    slot: int
    seg: int
    pos: int
    version: int
    uid: str | int
    meta: bytes = b""

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(self.meta) if self.meta else {}


def split_text(meta: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the user's metadata, the record's text or None) of a decoded metadata dict. ``meta`` is
    modified in place (callers pass a dict they just decoded).

    >>> split_text({"a": 1, TEXT_KEY: "hello"}), split_text({"a": 1})
    (({'a': 1}, 'hello'), ({'a': 1}, None))
    """
    return meta, (meta.pop(TEXT_KEY) if TEXT_KEY in meta else None)


def location(seg: int, pos: int) -> int:
    """A row's place in a segment tier (warm or cold segment ``seg``, row ``pos``) as one int:
    ``seg | pos << 32``, which is how an entry stores the pair (two little-endian u32 read as one
    u64). Segment tiers report each candidate's location so :meth:`Catalog.confirm` can check,
    with one int comparison per candidate, that the row still holds the id's current version.

    >>> location(3, 7), split_location(location(3, 7))
    (30064771075, (3, 7))
    """
    return seg | (pos << 32)


def split_location(loc: int) -> tuple[int, int]:
    """(seg, pos) of a :func:`location`."""
    return loc & 0xFFFFFFFF, loc >> 32


def key(iid: int) -> bytes:
    """LMDB key of an internal id: 8 bytes big-endian, so cursor order is numeric order."""
    return iid.to_bytes(8, "big")


def encode_uid(uid: str | int) -> bytes:
    if isinstance(uid, str):
        return b"s:" + uid.encode("utf-8")
    return b"i:" + INT_ID.pack(uid)


def decode_uid(raw: bytes | memoryview) -> str | int:
    raw = bytes(raw)
    if raw[:2] == b"s:":
        return raw[2:].decode("utf-8")
    return INT_ID.unpack(raw[2:])[0]


def iid_of(uid: str | int) -> int:
    return xxhash.xxh64_intdigest(encode_uid(uid))


def normalize_ids(ids: Any) -> list[str | int]:
    """Validate a batch of user ids: all ``str`` (non-empty, <= 1 KiB) or all ints (int64)."""
    if isinstance(ids, str | int | np.integer):
        ids = [ids]
    if isinstance(ids, bytes | bytearray | memoryview):
        raise InvalidInputError("ids: got bytes; pass a list of str or int ids")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InvalidInputError(f"ids must be a 1-d sequence, got an array of shape {ids.shape}")
        ids = ids.tolist()
    try:
        out = list(ids)
    except TypeError:
        raise InvalidInputError(f"ids must be a sequence of str or int, got {type(ids).__name__}") from None
    kinds = set()
    for i, uid in enumerate(out):
        if isinstance(uid, bool) or not isinstance(uid, str | int | np.integer):
            raise InvalidInputError(f"ids[{i}]: {uid!r} is a {type(uid).__name__}; ids must be str or int")
        if isinstance(uid, np.integer):
            uid = out[i] = int(uid)
        if isinstance(uid, str):
            kinds.add(str)
            try:
                size = len(uid.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidInputError(f"ids[{i}]: {uid!r} is not valid Unicode text") from None
            if not uid or size > MAX_STR_ID_BYTES:
                raise InvalidInputError(f"ids[{i}]: string ids must be 1..{MAX_STR_ID_BYTES} bytes of UTF-8")
        else:
            kinds.add(int)
            if not INT64_MIN <= uid <= INT64_MAX:
                raise InvalidInputError(f"ids[{i}]: {uid} does not fit in a signed 64-bit integer")
    if len(kinds) > 1:
        raise InvalidInputError(
            "ids in one batch must all be str or all be int (mixed types usually mean a bug: "
            "'5' and 5 are different ids)"
        )
    return out
