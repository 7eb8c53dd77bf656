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
``journal``   open cold-tier operations (segment writes, compactions): see tiers/cold/writer.py.
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
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lmdb
import numpy as np

from ..errors import ConfigError, IntegrityError
from .encoding import (
    ENTRY,
    FORMAT_VERSION,
    HIT_HEADER,
    TIER_HOT,
    TIER_NAMES,
    TIER_WARM,
    Entry,
    decode_uid,
    encode_uid,
    iid_of,
    key,
)
from .tables import SideTables


class Catalog(SideTables):
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
        # Whether every write so far came from a version that keeps the growing table and the
        # move generation (each of its commits records its generation as ``writer_gen``; an older
        # writer bumps ``gen`` only): read before this process writes anything.
        with self.env.begin(db=self.meta_db) as txn:
            self.own_writes_only = txn.get(b"writer_gen", b"0") == txn.get(b"gen", b"0")
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
            txn.put(b"writer_gen", str(gen).encode(), db=self.meta_db)
            if txn.pop(b"lower_dirty", db=self.meta_db) is not None:
                txn.put(b"lower_gen", str(gen).encode(), db=self.meta_db)
            if txn.pop(b"move_dirty", db=self.meta_db) is not None:
                txn.put(b"move_gen", str(gen).encode(), db=self.meta_db)
            if txn.pop(b"growing_dirty", db=self.meta_db) is not None:
                txn.put(b"growing_gen", str(gen).encode(), db=self.meta_db)

    def lower_change(self, txn: lmdb.Transaction) -> tuple[int, int]:
        """Inside a write transaction: (the lower generation before it, the generation it will
        commit as). A writer that places vectors in warm or cold hands both to the query's
        repeat cache with the vectors it added (engine.query.RepeatCache.note)."""
        return self.lower_generation(txn), int(bytes(txn.get(b"gen", b"0", db=self.meta_db))) + 1

    def lower_generation(self, txn: lmdb.Transaction) -> int:
        """The generation of the last write that placed or changed an entry in warm or cold.
        While it stands, those tiers can only have lost vectors (the query's repeat skip relies
        on that; see engine.query.RepeatCache)."""
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
        ulen, slot = HIT_HEADER.unpack_from(raw)
        end = ENTRY.size + ulen
        if raw[ENTRY.size] == 0x73:  # b"s:" (else b"i:")
            uid: str | int = str(raw[ENTRY.size + 2 : end], "utf-8")
        else:
            uid = int.from_bytes(raw[ENTRY.size + 2 : end], "big", signed=True)
        return uid, slot, json.loads(bytes(raw[end:])) if len(raw) > end else {}

    @staticmethod
    def _decode_entry(iid: int, raw: bytes | memoryview) -> Entry:
        tier, flags, ulen, slot, seg, pos, version = ENTRY.unpack_from(raw)
        end = ENTRY.size + ulen
        return Entry(iid, tier, flags, slot, seg, pos, version, decode_uid(raw[ENTRY.size : end]), bytes(raw[end:]))

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
        raw = ENTRY.pack(e.tier, e.flags, len(uid), e.slot, e.seg, e.pos, e.version) + uid + e.meta
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
            txn.put(b"growing_table", b"1", db=self.meta_db)

    def growing_table_ready(self) -> bool:
        """Whether the ``growing`` table has been rebuilt from the entries once by this version
        (it is then kept equal to them in every write transaction, and a writer's open reads the
        growing segment's rows from it instead of walking every entry)."""
        with self.env.begin(db=self.meta_db) as txn:
            return txn.get(b"growing_table") == b"1" and self.own_writes_only

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
                    yield int.from_bytes(k, "big"), vec, raw[ENTRY.size + uid_len :]

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
        unpack = ENTRY.unpack_from
        with self.env.begin(db=self.entries_db) as txn:
            for k, raw in txn.cursor():
                iids.append(int.from_bytes(k, "big"))
                heads.append(raw[: ENTRY.size])
                if with_meta:
                    metas.append(raw[ENTRY.size + unpack(raw)[2] :])
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
