"""The catalog: an LMDB environment that is the single source of truth of a store.

It holds, in named sub-databases:

``meta``      store identity and shape: uuid, dim, metric, schema, format version, counters.
``entries``   internal id -> where the vector lives (tier, slot, segment, row, version), its user id
              and its metadata JSON: everything a query needs to turn a hit into a result, in one read.
``records``   internal id -> the float32 vector of a hot or warm vector (its durable copy).
``pending``   internal ids whose hot-tier (Redis) copy must be brought in line with the catalog:
              a write-ahead list, so a crash or a Redis outage between the LMDB commit and the
              Redis write is repaired later instead of silently forgotten.
``free``      released policy slots, reused by new vectors so the dense policy arrays stay compact.
``journal``   open cold-tier operations (segment writes, compactions): see cold.py.
``cold``      live cold segments (S3 object key, footer location), mirroring the S3 manifest.
``coldq``     internal ids queued for demotion to the cold tier (flushed as one segment).
``growing``   (label u32 BE + internal id u64 BE) of every row the catalog places in the warm
              tier's growing segment: what a read-only process (another host process) builds its
              view of the growing segment from, incrementally (see :meth:`Catalog.growing_rows`).

Internal ids are 64-bit xxhash of the typed user id (``s:`` + UTF-8 for strings, ``i:`` + 8
bytes for ints), so ``"5"`` and ``5`` are different ids. Every new id is checked against the
stored user id, so a hash collision is detected (IntegrityError), never silently merged.

>>> import tempfile
>>> cat = Catalog(tempfile.mkdtemp(), dim=2, metric="l2", schema={})
>>> iid = cat.iid("doc-1")
>>> with cat.write() as txn:
...     cat.put_entry(txn, Entry(iid, TIER_HOT, 0, 0, 0, 0, 1, "doc-1"))
>>> with cat.read() as txn:
...     cat.entry(txn, iid).uid
'doc-1'
>>> cat.close()
"""

from __future__ import annotations

import json
import os
import struct
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import lmdb
import numpy as np
import xxhash

from .errors import ConfigError, IntegrityError, InvalidInputError

FORMAT_VERSION = 1

TIER_HOT, TIER_WARM, TIER_COLD = 0, 1, 2
TIER_NAMES = ("hot", "warm", "cold")
TIER_CODES = {name: code for code, name in enumerate(TIER_NAMES)}

FLAG_PINNED = 1  # pinned to its tier: the policy never moves it

# tier u8, flags u8, uid length u16, slot u32, seg u32, pos u32, version u64 (24 bytes),
# then the encoded user id, then the metadata JSON (empty when there is none)
_ENTRY = struct.Struct("<BBHIIIQ")
_HIT_HEADER = struct.Struct("<2xHI")  # (uid length, slot): what a query hit needs
_INT_ID = struct.Struct(">q")
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
    return b"i:" + _INT_ID.pack(uid)


def decode_uid(raw: bytes | memoryview) -> str | int:
    raw = bytes(raw)
    if raw[:2] == b"s:":
        return raw[2:].decode("utf-8")
    return _INT_ID.unpack(raw[2:])[0]


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


class Catalog:
    """LMDB-backed catalog. Thread-safe: LMDB serialises write transactions; reads never block."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dim: int,
        metric: str,
        schema: Mapping[str, str],
        read_only: bool = False,
        map_size: int = 1 << 40,
    ) -> None:
        if read_only and not os.path.exists(os.path.join(path, "data.mdb")):
            raise ConfigError(f"store.path: {str(path)!r} holds no tierstore catalog")
        if not read_only:
            os.makedirs(path, exist_ok=True)
        self.path = str(path)
        self.read_only = read_only
        # map_size is address space, not disk: LMDB files grow as data is written.
        self.env = lmdb.open(
            self.path,
            map_size=map_size,
            max_dbs=16,
            readonly=read_only,
            max_readers=512,
            readahead=False,  # random access over a large file: readahead only wastes page cache
            metasync=True,
            sync=True,
        )
        names = ("meta", "entries", "records", "pending", "free", "journal", "segments", "cold", "coldq", "growing")
        self._dbs = {}
        for n in names:
            try:
                self._dbs[n] = self.env.open_db(n.encode(), create=not read_only)
            except lmdb.NotFoundError:  # read-only, and no writer of this version opened it yet
                self._dbs[n] = None
        if read_only and any(db is None for db in self._dbs.values()):
            missing = [n for n, db in self._dbs.items() if db is None]
            raise ConfigError(f"store.path: {self.path!r}: the catalog has no {missing} tables yet; open the "
                              "store once for writing (with this tierstore version) before opening it read-only")
        self.growing_db = self._dbs["growing"]
        self.meta_db, self.entries_db, self.records_db = (self._dbs[n] for n in names[:3])
        self.pending_db, self.free_db, self.journal_db, self.segments_db = (self._dbs[n] for n in names[3:7])
        self.cold_db, self.coldq_db = self._dbs["cold"], self._dbs["coldq"]
        self.dim = dim
        self._init_meta(dim, metric, dict(schema))
        self.vec_bytes = dim * 4

    # --- identity -----------------------------------------------------------------------------

    def _init_meta(self, dim: int, metric: str, schema: dict[str, str]) -> None:
        with self.env.begin(db=self.meta_db, write=not self.read_only) as txn:
            stored = txn.get(b"identity")
            if stored is None:
                if self.read_only:
                    raise ConfigError(f"store.path: {self.path!r} holds no tierstore catalog")
                self.identity = {
                    "format": FORMAT_VERSION,
                    "uuid": uuidlib.uuid4().hex,
                    "dim": dim,
                    "metric": metric,
                    "schema": schema,
                }
                txn.put(b"identity", json.dumps(self.identity).encode())
                return
            self.identity = json.loads(stored)
        ident = self.identity
        if ident["format"] > FORMAT_VERSION:
            raise ConfigError(
                f"store.path: {self.path!r} was written by a newer tierstore (format {ident['format']}, "
                f"this version reads up to {FORMAT_VERSION})"
            )
        for name, value in (("dim", dim), ("metric", metric)):
            if ident[name] != value:
                raise ConfigError(
                    f"store.{name}: {value!r} does not match the existing store at {self.path!r}, "
                    f"which was created with {name} = {ident[name]!r}; a store cannot change its "
                    "vector space (export and re-ingest into a new store)"
                )
        if ident["schema"] != schema:
            self._check_schema_change(ident["schema"], schema)

    def _check_schema_change(self, old: dict[str, str], new: dict[str, str]) -> None:
        changed = [f for f in old if f in new and old[f] != new[f]]
        if changed:
            f = changed[0]
            raise ConfigError(
                f"schema.{f}: {new[f]!r} does not match the existing store, where {f} is {old[f]!r}"
            )
        if self.read_only:
            return
        # Adding or dropping filterable fields is allowed: the caller rebuilds its indexes.
        self.identity["schema"] = new
        with self.env.begin(db=self.meta_db, write=True) as txn:
            txn.put(b"identity", json.dumps(self.identity).encode())
        self.schema_changed = True

    schema_changed = False

    @property
    def uuid(self) -> str:
        return self.identity["uuid"]

    def iid(self, uid: str | int) -> int:
        return iid_of(uid)

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def read(self, buffers: bool = False) -> Iterator[lmdb.Transaction]:
        """A read snapshot. ``buffers=True`` returns values as memoryviews into the map (no copy),
        valid only inside the transaction: the query path uses it to avoid copying records."""
        with self.env.begin(buffers=buffers) as txn:
            yield txn

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction; commits (fsync) on normal exit, aborts on exception."""
        with self.env.begin(write=True) as txn:
            yield txn
            gen = int(txn.get(b"gen", b"0", db=self.meta_db)) + 1
            txn.put(b"gen", str(gen).encode(), db=self.meta_db)
            if txn.pop(b"lower_dirty", db=self.meta_db) is not None:
                txn.put(b"lower_gen", str(gen).encode(), db=self.meta_db)
            if txn.pop(b"move_dirty", db=self.meta_db) is not None:
                txn.put(b"move_gen", str(gen).encode(), db=self.meta_db)
            if txn.pop(b"growing_dirty", db=self.meta_db) is not None:
                txn.put(b"growing_gen", str(gen).encode(), db=self.meta_db)

    def lower_change(self, txn: lmdb.Transaction) -> tuple[int, int]:
        """Inside a write transaction: (the lower generation before it, the generation it will
        commit as). A writer that places vectors in warm or cold hands both to the query's
        repeat cache with the vectors it added (query.RepeatCache.note)."""
        return self.lower_generation(txn), int(bytes(txn.get(b"gen", b"0", db=self.meta_db))) + 1

    def lower_generation(self, txn: lmdb.Transaction) -> int:
        """The generation of the last write that placed or changed an entry in warm or cold.
        While it stands, those tiers can only have lost vectors (the query's repeat skip relies
        on that; see query.RepeatCache)."""
        raw = txn.get(b"lower_gen", db=self.meta_db)
        return 0 if raw is None else int(bytes(raw))

    def generation(self) -> int:
        """Bumped by every committed write: lets readers notice the catalog changed."""
        with self.env.begin() as txn:
            return int(txn.get(b"gen", b"0", db=self.meta_db))

    def move_generation(self, txn: lmdb.Transaction | None = None) -> int:
        """The generation of the last write that moved, replaced or deleted an existing entry
        (a new location or a tombstone: an old copy somewhere may now be removed). Writes that
        only add new vectors or change flags leave it alone. Read-only processes compare it
        before and after a query (see engine.reads.Reader)."""
        if txn is None:
            with self.env.begin() as t:
                return self.move_generation(t)
        raw = txn.get(b"move_gen", db=self.meta_db)
        return 0 if raw is None else int(bytes(raw))

    def view_state(self) -> tuple[int, int, int]:
        """(generation, move generation, growing generation) in one read: what a read-only
        process compares to decide whether its view of the tiers needs a refresh. The growing
        generation changes when a row leaves the growing segment or one is added behind a
        later one (anything but an append)."""
        with self.env.begin(db=self.meta_db) as txn:
            def get(k: bytes) -> int:
                raw = txn.get(k)
                return 0 if raw is None else int(bytes(raw))

            return get(b"gen"), get(b"move_gen"), get(b"growing_gen")

    # --- entries ------------------------------------------------------------------------------

    @staticmethod
    def decode_hit(raw: bytes | memoryview) -> tuple[str | int, int, dict[str, Any]]:
        """(user id, policy slot, metadata) from a raw entry value: the query path's decode
        (works on LMDB's zero-copy memoryviews without copying the whole value)."""
        ulen, slot = _HIT_HEADER.unpack_from(raw)
        end = _ENTRY.size + ulen
        if raw[_ENTRY.size] == 0x73:  # b"s:" (else b"i:")
            uid: str | int = str(raw[_ENTRY.size + 2 : end], "utf-8")
        else:
            uid = int.from_bytes(raw[_ENTRY.size + 2 : end], "big", signed=True)
        return uid, slot, json.loads(bytes(raw[end:])) if len(raw) > end else {}

    @staticmethod
    def _decode_entry(iid: int, raw: bytes | memoryview) -> Entry:
        tier, flags, ulen, slot, seg, pos, version = _ENTRY.unpack_from(raw)
        end = _ENTRY.size + ulen
        return Entry(iid, tier, flags, slot, seg, pos, version, decode_uid(raw[_ENTRY.size : end]), bytes(raw[end:]))

    def entry(self, txn: lmdb.Transaction, iid: int) -> Entry | None:
        raw = txn.get(key(iid), db=self.entries_db)
        return None if raw is None else self._decode_entry(iid, raw)

    def confirm(self, txn: lmdb.Transaction, tier: int, iids: Sequence[int], dists: Sequence[float],
                locations: Sequence[int] | None = None) -> list[tuple[float, int, int, Any]]:
        """The candidates of one tier's answer that the catalog, in ``txn``, places in ``tier``
        (and, given ``locations``, at that very row: a segment row of an older version of the id
        is not it) -> ``[(distance, iid, tier, raw entry), ...]`` in answer order; the raw entry
        is what :meth:`decode_hit` turns into a result. A tier's index may lag the catalog (a
        write between its commit and the index update, a move in flight, a delete not yet
        unlinked); this check is what makes a moving vector count once and a deleted one never.

        The query path's inner loop (every candidate of every tier): one LMDB get and a
        comparison or two per candidate, no decoding. With ``txn`` opened ``buffers=True`` the
        raw entries are memoryviews valid only inside it."""
        get, db = txn.get, self.entries_db
        kept = []
        if locations is None:
            for iid, d in zip(iids, dists, strict=True):
                raw = get(iid.to_bytes(8, "big"), db=db)
                if raw is not None and raw[0] == tier:
                    kept.append((d, iid, tier, raw))
        else:
            for iid, d, loc in zip(iids, dists, locations, strict=True):
                raw = get(iid.to_bytes(8, "big"), db=db)
                # bytes 8:16 of an entry are (seg, pos): its location() as one little-endian u64
                if raw is not None and raw[0] == tier and int.from_bytes(raw[8:16], "little") == loc:
                    kept.append((d, iid, tier, raw))
        return kept

    def entry_tier(self, txn: lmdb.Transaction, iid: int) -> int:
        """Tier code of ``iid``, or -1 when it does not exist (query-path fast check)."""
        raw = txn.get(key(iid), db=self.entries_db)
        return -1 if raw is None else raw[0]

    def put_entry(self, txn: lmdb.Transaction, e: Entry) -> None:
        old = txn.get(key(e.iid), db=self.entries_db)
        if old is not None and old[0] != e.tier:
            self._bump(txn, old[0], -1)
        if old is None or old[0] != e.tier:
            self._bump(txn, e.tier, +1)
        if e.tier != TIER_HOT:
            txn.put(b"lower_dirty", b"1", db=self.meta_db)  # -> lower_gen at commit
        uid = encode_uid(e.uid)
        raw = _ENTRY.pack(e.tier, e.flags, len(uid), e.slot, e.seg, e.pos, e.version) + uid + e.meta
        if old is not None and (old[0] != e.tier or bytes(old[8:16]) != raw[8:16]):
            txn.put(b"move_dirty", b"1", db=self.meta_db)  # -> move_gen at commit
        self._track_growing(txn, e.iid, old, raw)
        txn.put(key(e.iid), raw, db=self.entries_db)

    def delete_entry(self, txn: lmdb.Transaction, iid: int) -> Entry | None:
        old = txn.get(key(iid), db=self.entries_db)
        e = None if old is None else self._decode_entry(iid, old)
        if e is not None:
            self._track_growing(txn, iid, old, None)
            txn.delete(key(iid), db=self.entries_db)
            self._bump(txn, e.tier, -1)
            self.free_slot(txn, e.slot)
            txn.put(b"move_dirty", b"1", db=self.meta_db)
        return e

    @staticmethod
    def _growing_label(raw: bytes | memoryview | None) -> int | None:
        """The growing-segment label of a raw entry (warm, seg 0), else None."""
        if raw is None or raw[0] != TIER_WARM or bytes(raw[8:12]) != b"\0\0\0\0":
            return None
        return int.from_bytes(raw[12:16], "little")

    def _track_growing(self, txn: lmdb.Transaction, iid: int, old: bytes | None, new: bytes | None) -> None:
        """Keep the ``growing`` table equal to the entries placed in the growing segment."""
        was, now = self._growing_label(old), self._growing_label(new)
        if was == now:
            return
        db = self.growing_db
        if was is not None:
            txn.delete(was.to_bytes(4, "big") + key(iid), db=db)
            txn.put(b"growing_dirty", b"1", db=self.meta_db)
        if now is not None:
            k = now.to_bytes(4, "big") + key(iid)
            cur = txn.cursor(db=db)
            if cur.set_range(k):  # a later row exists: not an append
                txn.put(b"growing_dirty", b"1", db=self.meta_db)
            txn.put(k, b"", db=db)

    def reset_growing(self) -> None:
        """Rebuild the ``growing`` table from the entries (the writer, at open): it then lists
        exactly what the warm tier's rebuilt growing segment holds."""
        rows: list[bytes] = []
        with self.env.begin(db=self.entries_db) as txn:
            for k, raw in txn.cursor():
                label = self._growing_label(raw)
                if label is not None:
                    rows.append(label.to_bytes(4, "big") + k)
        with self.write() as txn:
            txn.drop(self.growing_db, delete=False)
            for k in rows:
                txn.put(k, b"", db=self.growing_db)
            txn.put(b"growing_dirty", b"1", db=self.meta_db)

    GROWING_ROW = np.dtype([("label", ">u4"), ("iid", ">u8")])

    def growing_rows(self, txn: lmdb.Transaction, after: int | None = None) -> np.ndarray:
        """(label, iid) of the growing segment's rows in label order, those after label ``after``
        only if given (a structured array of :attr:`GROWING_ROW`)."""
        cur = txn.cursor(db=self.growing_db)
        if after is None:
            ok = cur.first()
        else:
            ok = cur.set_range((after + 1).to_bytes(4, "big")) if after + 1 < 2**32 else False
        if not ok:
            return np.zeros(0, self.GROWING_ROW)
        raw = b"".join(bytes(k) for k in cur.iternext(values=False))
        return np.frombuffer(raw, self.GROWING_ROW)

    def iter_entries(
        self, tiers: Iterable[int] | None = None, start_after: int | None = None, limit: int | None = None
    ) -> list[Entry]:
        """Entries in internal-id order, resuming after ``start_after`` (one short read txn)."""
        want = None if tiers is None else set(tiers)
        out: list[Entry] = []
        if limit is not None and limit <= 0:
            return out
        with self.env.begin(db=self.entries_db) as txn:
            cur = txn.cursor()
            if start_after is None:
                ok = cur.first()
            else:
                ok = start_after + 1 < 2**64 and cur.set_range(key(start_after + 1))
            while ok:
                k, raw = cur.item()
                if want is None or raw[0] in want:
                    out.append(self._decode_entry(int.from_bytes(k, "big"), raw))
                    if limit is not None and len(out) >= limit:
                        break
                ok = cur.next()
        return out

    def tier_records(self, tier: int) -> Iterator[tuple[int, bytes, bytes]]:
        """(internal id, float32 vector bytes, metadata JSON bytes) of every entry of ``tier``
        that has a durable vector, in one read transaction and without decoding entries (the
        hot tier's catalog stand-in loads 100k of them at open)."""
        with self.env.begin() as txn:
            records = txn.cursor(db=self.records_db)
            for k, raw in txn.cursor(db=self.entries_db):
                if raw[0] != tier:
                    continue
                vec = records.get(k) if records.set_key(k) else None
                if vec is not None:
                    uid_len = int.from_bytes(raw[2:4], "little")
                    yield int.from_bytes(k, "big"), vec, raw[_ENTRY.size + uid_len :]

    def entry_batches(self, tiers: Iterable[int] | None = None, size: int = 50_000) -> Iterator[list[Entry]]:
        """Every entry (of ``tiers``) in internal-id order, a short read transaction per batch."""
        last = None
        while batch := self.iter_entries(tiers=tiers, start_after=last, limit=size):
            yield batch
            last = batch[-1].iid

    def placement(self, with_meta: bool = False) -> dict[str, Any]:
        """Every entry as columns, for the policy: ``iid`` (uint64), ``tier`` (int8), ``flags``
        (uint8), ``slot`` (int64), ``version`` (uint64) and, if asked, ``meta`` (list of JSON
        bytes). One read transaction: a consistent snapshot."""
        iids: list[int] = []
        heads: list[bytes] = []
        metas: list[bytes] = []
        unpack = _ENTRY.unpack_from
        with self.env.begin(db=self.entries_db) as txn:
            for k, raw in txn.cursor():
                iids.append(int.from_bytes(k, "big"))
                heads.append(raw[: _ENTRY.size])
                if with_meta:
                    metas.append(raw[_ENTRY.size + unpack(raw)[2] :])
        rec = np.frombuffer(b"".join(heads), dtype=np.dtype(
            [("tier", "u1"), ("flags", "u1"), ("ulen", "<u2"), ("slot", "<u4"), ("seg", "<u4"),
             ("pos", "<u4"), ("version", "<u8")]))
        out: dict[str, Any] = {
            "iid": np.asarray(iids, dtype=np.uint64), "tier": rec["tier"].astype(np.int8),
            "flags": rec["flags"].copy(), "slot": rec["slot"].astype(np.int64), "version": rec["version"].copy(),
        }
        if with_meta:
            out["meta"] = metas
        return out

    def user_ids(self, iids: Sequence[int]) -> list[str | int | None]:
        """User ids of internal ids (None where gone)."""
        with self.read() as txn:
            out = []
            for iid in iids:
                e = self.entry(txn, iid)
                out.append(None if e is None else e.uid)
            return out

    def check_collision(self, e: Entry | None, uid: str | int) -> None:
        if e is not None and e.uid != uid:
            raise IntegrityError(
                f"internal id collision: {uid!r} and the stored {e.uid!r} hash to the same 64-bit id "
                f"{e.iid:#018x}; rename one of them"
            )

    # --- counters -----------------------------------------------------------------------------

    def _bump(self, txn: lmdb.Transaction, tier: int, delta: int) -> None:
        k = b"count:%d" % tier
        txn.put(k, str(int(txn.get(k, b"0", db=self.meta_db)) + delta).encode(), db=self.meta_db)

    def count(self, tier: int, txn: lmdb.Transaction | None = None) -> int:
        if txn is None:
            with self.env.begin() as t:
                return int(t.get(b"count:%d" % tier, b"0", db=self.meta_db))
        return int(bytes(txn.get(b"count:%d" % tier, b"0", db=self.meta_db)))

    def counts(self) -> dict[str, int]:
        with self.env.begin() as txn:
            return {name: self.count(code, txn) for code, name in enumerate(TIER_NAMES)}

    # --- vectors (durable float32 copies of hot and warm vectors) ------------------------------

    def put_vector(self, txn: lmdb.Transaction, iid: int, vector: bytes) -> None:
        txn.put(key(iid), vector, db=self.records_db)

    def delete_vector(self, txn: lmdb.Transaction, iid: int) -> None:
        txn.delete(key(iid), db=self.records_db)

    def vector(self, txn: lmdb.Transaction, iid: int) -> np.ndarray | None:
        raw = txn.get(key(iid), db=self.records_db)
        return None if raw is None else np.frombuffer(raw, dtype=np.float32, count=self.dim).copy()

    def vector_raw(self, txn: lmdb.Transaction, iid: int) -> bytes | None:
        return txn.get(key(iid), db=self.records_db)

    # --- slots (dense index for the policy arrays) ---------------------------------------------

    def alloc_slots(self, txn: lmdb.Transaction, n: int) -> list[int]:
        out: list[int] = []
        cur = txn.cursor(db=self.free_db)
        while len(out) < n and cur.first():
            out.append(int.from_bytes(cur.key(), "big"))
            cur.delete()
        if len(out) < n:
            nxt = int(txn.get(b"next_slot", b"0", db=self.meta_db))
            need = n - len(out)
            out.extend(range(nxt, nxt + need))
            txn.put(b"next_slot", str(nxt + need).encode(), db=self.meta_db)
        return out

    def free_slot(self, txn: lmdb.Transaction, slot: int) -> None:
        txn.put(slot.to_bytes(4, "big"), b"", db=self.free_db)

    def slot_limit(self) -> int:
        """One past the highest slot ever allocated (size of the dense policy arrays)."""
        with self.env.begin() as txn:
            return int(txn.get(b"next_slot", b"0", db=self.meta_db))

    # --- pending hot-index work (write-ahead for Redis) ----------------------------------------

    def add_pending(self, txn: lmdb.Transaction, iids: Iterable[int]) -> None:
        for iid in iids:
            txn.put(key(iid), b"", db=self.pending_db)

    def clear_pending(self, iids: Sequence[int], txn: lmdb.Transaction | None = None) -> None:
        """Remove pending marks, in ``txn`` if given (piggybacking on a write that commits
        anyway saves an fsync), else in a transaction of its own."""
        if txn is not None:
            for iid in iids:
                txn.delete(key(iid), db=self.pending_db)
            return
        if not iids:
            return
        with self.env.begin(write=True, db=self.pending_db) as own:
            for iid in iids:
                own.delete(key(iid))

    def pending(self, limit: int | None = None) -> list[int]:
        out = []
        with self.env.begin(db=self.pending_db) as txn:
            for k in txn.cursor().iternext(values=False):
                out.append(int.from_bytes(k, "big"))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def has_pending(self) -> bool:
        with self.env.begin(db=self.pending_db) as txn:
            return txn.stat(self.pending_db)["entries"] > 0

    # --- warm segments ---------------------------------------------------------------------------

    def put_segment(self, txn: lmdb.Transaction, sid: int, info: Mapping[str, Any]) -> None:
        txn.put(sid.to_bytes(4, "big"), json.dumps(dict(info)).encode(), db=self.segments_db)

    def delete_segment(self, txn: lmdb.Transaction, sid: int) -> None:
        txn.delete(sid.to_bytes(4, "big"), db=self.segments_db)

    def segments(self) -> dict[int, dict[str, Any]]:
        with self.env.begin(db=self.segments_db) as txn:
            return {int.from_bytes(k, "big"): json.loads(v) for k, v in txn.cursor()}

    def next_segment_id(self, txn: lmdb.Transaction) -> int:
        """Segment ids are never reused (a crashed write's directory can't be mistaken)."""
        sid = int(txn.get(b"next_segment", b"1", db=self.meta_db))
        txn.put(b"next_segment", str(sid + 1).encode(), db=self.meta_db)
        return sid

    def metadata_of(self, iids: Iterable[int]) -> list[dict[str, Any]]:
        """Metadata of each internal id ({} for one that no longer exists), in one read."""
        with self.env.begin() as txn:
            out = []
            for iid in iids:
                e = self.entry(txn, int(iid))
                out.append(e.metadata if e is not None else {})
            return out

    # --- cold segments, the cold journal and the demotion queue ---------------------------------

    def put_cold_segment(self, txn: lmdb.Transaction, sid: int, info: Mapping[str, Any]) -> None:
        txn.put(sid.to_bytes(4, "big"), json.dumps(dict(info)).encode(), db=self.cold_db)

    def delete_cold_segment(self, txn: lmdb.Transaction, sid: int) -> None:
        txn.delete(sid.to_bytes(4, "big"), db=self.cold_db)

    def cold_segments(self) -> dict[int, dict[str, Any]]:
        with self.env.begin(db=self.cold_db) as txn:
            return {int.from_bytes(k, "big"): json.loads(v) for k, v in txn.cursor()}

    def put_journal(self, sid: int, value: bytes, txn: lmdb.Transaction | None = None) -> None:
        if txn is not None:
            txn.put(sid.to_bytes(4, "big"), value, db=self.journal_db)
            return
        with self.env.begin(write=True, db=self.journal_db) as own:
            own.put(sid.to_bytes(4, "big"), value)

    def delete_journal(self, sid: int, txn: lmdb.Transaction | None = None) -> None:
        if txn is not None:
            txn.delete(sid.to_bytes(4, "big"), db=self.journal_db)
            return
        with self.env.begin(write=True, db=self.journal_db) as own:
            own.delete(sid.to_bytes(4, "big"))

    def journal(self) -> dict[int, bytes]:
        with self.env.begin(db=self.journal_db) as txn:
            return {int.from_bytes(k, "big"): bytes(v) for k, v in txn.cursor()}

    def queue_cold(self, iids: Iterable[int]) -> None:
        with self.env.begin(write=True, db=self.coldq_db) as txn:
            for iid in iids:
                txn.put(key(iid), b"")

    def unqueue_cold(self, txn: lmdb.Transaction, iids: Iterable[int]) -> None:
        for iid in iids:
            txn.delete(key(iid), db=self.coldq_db)

    def cold_queue(self, limit: int | None = None) -> list[int]:
        out = []
        with self.env.begin(db=self.coldq_db) as txn:
            for k in txn.cursor().iternext(values=False):
                out.append(int.from_bytes(k, "big"))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def cold_queue_len(self) -> int:
        with self.env.begin(db=self.coldq_db) as txn:
            return txn.stat(self.coldq_db)["entries"]

    # --- small named blobs (access statistics checkpoints, ...) ----------------------------------

    def get_meta(self, name: bytes) -> bytes | None:
        with self.env.begin(db=self.meta_db) as txn:
            raw = txn.get(b"blob:" + name)
            return None if raw is None else bytes(raw)

    def set_meta(self, name: bytes, value: bytes) -> None:
        with self.env.begin(db=self.meta_db, write=True) as txn:
            txn.put(b"blob:" + name, value)

    def delete_meta(self, name: bytes) -> None:
        with self.env.begin(db=self.meta_db, write=True) as txn:
            txn.delete(b"blob:" + name)

    def set_flags(self, iids: Iterable[int], set_bits: int, clear_bits: int) -> int:
        """Set/clear flag bits (e.g. FLAG_PINNED) of existing entries; returns #entries changed."""
        n = 0
        with self.write() as txn:
            for iid in iids:
                e = self.entry(txn, iid)
                if e is None:
                    continue
                flags = (e.flags | set_bits) & ~clear_bits
                if flags != e.flags:
                    self.put_entry(txn, e._replace(flags=flags))
                    n += 1
        return n

    # --- housekeeping -------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return int(info["last_pgno"] + 1) * int(stat["psize"])

    def sync(self) -> None:
        if not self.read_only:
            self.env.sync(True)

    def close(self) -> None:
        self.env.close()


__all__ = [
    "FLAG_PINNED",
    "TIER_CODES",
    "TIER_COLD",
    "TIER_HOT",
    "TIER_NAMES",
    "TIER_WARM",
    "Catalog",
    "Entry",
    "iid_of",
    "location",
    "normalize_ids",
    "split_location",
]
