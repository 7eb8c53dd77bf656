"""The cold tier's write path: segment writes, the manifest, recovery and garbage.

Objects under ``s3://<bucket>/<prefix>/``::

    segments/<sid>-<random>.tcs     one immutable segment each (format: format.py)
    manifest/<seq>.json             the live segments; seq 1, 2, 3, ... each written once with a
                                    conditional put (If-None-Match: *), so two writers can never
                                    overwrite each other's manifest: the loser re-reads and retries

Writing a segment: journal (LMDB) -> upload (multipart when large) -> new manifest -> the segment
becomes searchable (:meth:`ColdWriter.activate`) -> one catalog transaction flips the entries,
registers the segment and closes the journal (:meth:`ColdWriter.commit`). A crash before that flip
is rolled back at the next connect (:meth:`ColdWriter.recover`): the manifest is made to list
exactly the catalog's segments again, and the uploaded object is an orphan that
:meth:`ColdWriter.collect_garbage` deletes.
"""

from __future__ import annotations

import json
import logging
import mmap
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...catalog import TIER_COLD
from ...errors import ConfigError, IntegrityError, TierStoreError, TierUnavailableError
from . import format as fmt
from .base import ColdBase, Seg, write_atomic
from .blockcache import PAGE_GROUP, BlockCache

log = logging.getLogger("tierstore")

_MULTIPART = 32 * 1024**2  # segments larger than this upload in 16 MiB parts, 4 at a time
_KEEP_MANIFESTS = 10


@dataclass
class Written:
    """A segment uploaded and listed in the manifest, not yet flipped in the catalog."""

    seg: Seg
    rows: np.ndarray  # rows[i] = the object row of input row i


class ColdWriter(ColdBase):
    """The write side of :class:`~.tier.ColdTier`: segments, manifests, recovery, retirement."""

    manifest_seq: int  # the last manifest this process read or wrote (set up by ColdTier)
    manifest: dict[int, dict[str, Any]]  # its segments

    # --- manifest ----------------------------------------------------------------------------------

    def _mkey(self, seq: int) -> str:
        return f"{self.prefix}/manifest/{seq:012d}.json"

    def latest_manifest(self) -> tuple[int, dict[int, dict[str, Any]]]:
        keys = sorted(k for k, _ in self.list_keys("manifest") if k.endswith(".json"))
        if not keys:
            return 0, {}
        raw = self.s3(lambda c: c.get_object(Bucket=self.bucket, Key=keys[-1])["Body"].read())
        try:
            body = json.loads(raw)
            seq, segs = int(body["seq"]), {int(s): info for s, info in body["segments"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"cold tier: manifest {keys[-1]} is unreadable ({exc}); the catalog can "
                                 "republish it: delete that object and reopen") from None
        if body.get("store") != self.catalog.uuid:
            raise ConfigError(f"cold.url: {self.url} holds the cold tier of another store (uuid "
                              f"{body.get('store')}, this one is {self.catalog.uuid}); give each store its own prefix")
        return seq, segs

    def _publish(self, add: dict[int, dict[str, Any]], remove: set[int]) -> None:
        """Write manifest seq+1 = latest + add - remove; a conditional put, retried on a race."""
        from botocore.exceptions import ClientError

        seq, segs = self.manifest_seq, dict(self.manifest)
        for _ in range(8):
            new = {s: i for s, i in {**segs, **add}.items() if s not in remove}
            body = json.dumps({"format": fmt.FORMAT, "store": self.catalog.uuid, "seq": seq + 1,
                               "written": time.time(), "segments": {str(s): i for s, i in sorted(new.items())}})
            try:
                self.s3(lambda c, body=body, seq=seq: c.put_object(
                    Bucket=self.bucket, Key=self._mkey(seq + 1), Body=body.encode(), IfNoneMatch="*"))
            except TierUnavailableError as exc:
                cause = exc.__cause__
                if isinstance(cause, ClientError) and str(cause.response.get("Error", {}).get("Code")) in (
                        "PreconditionFailed", "412", "ConditionalRequestConflict"):
                    seq, segs = self.latest_manifest()  # someone else published: build on theirs
                    continue
                raise
            self.tally("puts", 1)
            self.manifest_seq, self.manifest = seq + 1, new
            return
        raise TierUnavailableError(f"cold tier: could not publish a manifest under {self.url} (8 races lost)",
                                   tier="cold")

    # --- recovery ----------------------------------------------------------------------------------

    def recover(self) -> None:
        """Roll back operations a crash interrupted (the catalog never flipped, so the vectors are
        still where it says) and make the manifest list exactly the catalog's segments."""
        self.manifest_seq, self.manifest = self.latest_manifest()
        journal = self.catalog.journal()
        for sid, raw in journal.items():
            op = json.loads(raw)
            log.warning("cold tier: rolling back an interrupted %s of segment %d (%s)", op.get("op"), sid, op.get("key"))
            self.cache.drop_segment(sid)  # blocks written through before the crash
            self.catalog.delete_journal(sid)
        self.recovered = len(journal)
        registry = self.catalog.cold_segments()
        extra = set(self.manifest) - set(registry)
        missing = {s: i for s, i in registry.items() if s not in self.manifest}
        if extra or missing:
            self._publish(missing, extra)

    # --- writing -----------------------------------------------------------------------------------

    def write(self, iids: np.ndarray, vectors: np.ndarray, metas: Sequence[dict], uids: Sequence[str | int],
              op: str = "write") -> Written:
        """Partition, upload and publish one segment; the caller then flips the catalog
        (:meth:`commit` inside its transaction) -- or calls :meth:`abort`."""
        self.connect()
        with self.catalog.write() as txn:
            sid = self.catalog.next_segment_id(txn)
        key = f"{self.prefix}/segments/{sid:010d}-{secrets.token_hex(4)}.tcs"
        tmp = self.root / "tmp" / f"{sid}.tcs"
        try:
            with open(tmp, "wb") as f:
                built = fmt.build(f, np.asarray(iids, np.uint64), vectors, metas, uids, metric=self.metric,
                                      dtype=self.cfg.dtype, fields=sorted(self.schema), segment_id=sid,
                                      store=self.catalog.uuid, kinds=self.schema)
            self.catalog.put_journal(sid, json.dumps({"op": op, "key": key, "rows": len(iids), "t": time.time()}).encode())
            self._upload(tmp, key, built.size)
            info = {"key": key, "rows": len(iids), "bytes": built.size, "parts": built.parts,
                    "footer": [built.footer_offset, built.footer_length, built.footer_checksum], "created": time.time()}
            with open(tmp, "rb") as f:
                f.seek(built.footer_offset)
                raw = f.read(built.footer_length)
            write_atomic(self.root / "footers" / f"{sid}.ftr", raw)
            seg = Seg(sid, info, fmt.parse_footer(raw, built.footer_checksum))
            self._publish({sid: info}, set())
            try:
                self._writer.submit(self._write_through, seg, tmp)  # it owns (and removes) tmp now
                tmp = None
            except RuntimeError:  # the cache writer is shut down (closing): no write-through
                pass
        except BaseException:
            self.catalog.delete_journal(sid)
            raise
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        rows = np.empty(len(iids), np.int64)
        rows[built.order] = np.arange(len(iids))
        self.tally("segments_written", 1)
        self.tally("bytes_written", built.size)
        return Written(seg, rows)

    def _write_through(self, seg: Seg, path: Path) -> None:
        """Put a segment just written into the block cache -- its partitions, then its pages of
        exact vectors in groups of ``PAGE_GROUP`` (one file each) -- while the cache has spare
        room (never evicting what queries read), then remove the local copy. Runs on the cache writer (below queries' priority), after the
        upload: the first queries of a segment the store wrote (a demotion, a merge, an ingest)
        read local disk instead of paying a GET per partition and per rerank page (measured:
        those were most of the S3 requests left on the compare stream). A segment dropped
        meanwhile (merged away, aborted) is not written (:meth:`BlockCache.put`)."""
        self.lower_writer_priority()
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                f_ = seg.footer
                for p in range(f_.parts):
                    if not self.cache.put(BlockCache.name(seg.sid, p),
                                          mm[int(f_.offsets[p]):int(f_.offsets[p + 1])], spare_only=True):
                        return
                for k in range(0, f_.pages, PAGE_GROUP):  # pages in groups: one file each
                    a, b = f_.page_range(k)[0], f_.page_range(min(k + PAGE_GROUP, f_.pages) - 1)[1]
                    if not self.cache.put(BlockCache.group_name(seg.sid, k // PAGE_GROUP), mm[a:b],
                                          spare_only=True):
                        return
        except OSError as exc:
            log.warning("cold cache: could not write segment %d through: %s", seg.sid, exc)
        finally:
            path.unlink(missing_ok=True)

    def _upload(self, path: Path, key: str, size: int) -> None:
        if size <= _MULTIPART:
            data = path.read_bytes()
            self.s3(lambda c: c.put_object(Bucket=self.bucket, Key=key, Body=data))
        else:
            from boto3.s3.transfer import TransferConfig

            tc = TransferConfig(multipart_threshold=_MULTIPART, multipart_chunksize=16 * 1024**2, max_concurrency=4)
            self.s3(lambda c: c.upload_file(str(path), self.bucket, key, Config=tc))
        self.tally("puts", 1)

    def activate(self, w: Written) -> None:
        """Make a written segment searchable (before the catalog flip: until then its rows fail
        the catalog check, after it they are found)."""
        self.relist({w.seg.sid: w.seg})

    def commit(self, txn: Any, w: Written) -> None:
        """Inside the caller's flip transaction: register the segment, close its journal entry."""
        self.catalog.put_cold_segment(txn, w.seg.sid, w.seg.info)
        self.catalog.delete_journal(w.seg.sid, txn)

    def abort(self, w: Written) -> None:
        """The flip failed: unlist the segment again (its object becomes an orphan for compact)."""
        self.relist(remove=[w.seg.sid])
        self.cache.drop_segment(w.seg.sid)  # and its blocks written through
        try:
            self._publish({}, {w.seg.sid})
        finally:
            self.catalog.delete_journal(w.seg.sid)

    # --- retiring and garbage ---------------------------------------------------------------------

    def publish_removed(self, sids: set[int]) -> None:
        """A new manifest without ``sids`` (their rows moved to another segment first)."""
        self._publish({}, set(sids))

    def live_rows(self) -> Counter:
        """Live cold rows per segment (one pass over the catalog)."""
        live: Counter = Counter()
        for batch in self.catalog.entry_batches(tiers=[TIER_COLD]):
            live.update(e.seg for e in batch)
        return live

    def unlist(self, sids: Sequence[int]) -> list[Seg]:
        """Stop searching ``sids`` (their rows were flipped elsewhere). Queries that already took
        the partition table may still read them: call :meth:`retire` after the reader grace."""
        return self.relist(remove=sids)

    def retire(self, gone: Sequence[Seg]) -> int:
        """Delete unlisted segments' objects and local files, once no query can still read them.
        Returns bytes freed."""
        freed = 0
        if gone:
            self.settle()  # no queued cache write may re-create a block of a retired segment
        for seg in gone:
            self.cache.drop_segment(seg.sid)
            (self.root / "footers" / f"{seg.sid}.ftr").unlink(missing_ok=True)
            try:
                self.s3(lambda c, seg=seg: c.delete_object(Bucket=self.bucket, Key=seg.info["key"]))
                freed += seg.info["bytes"]
            except TierStoreError as exc:
                log.warning("cold tier: could not delete %s now (compact retries): %s", seg.info["key"], exc)
        return freed

    def collect_garbage(self) -> dict[str, int]:
        """Delete segment objects no manifest lists (crash leftovers) and all but the newest
        manifests. Call with no segment write in flight (the store's write lock)."""
        listed = {i["key"] for i in self.manifest.values()}
        orphans = [(k, s) for k, s in self.list_keys("segments") if k not in listed]
        for k, _ in orphans:
            self.s3(lambda c, k=k: c.delete_object(Bucket=self.bucket, Key=k))
        manifests = sorted(k for k, _ in self.list_keys("manifest"))[:-_KEEP_MANIFESTS]
        for k in manifests:
            self.s3(lambda c, k=k: c.delete_object(Bucket=self.bucket, Key=k))
        return {"orphans_deleted": len(orphans), "orphan_bytes": sum(s for _, s in orphans),
                "manifests_deleted": len(manifests)}


__all__ = ["ColdWriter", "Written"]
