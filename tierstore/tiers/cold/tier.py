"""ColdTier: immutable partitioned segments in S3, a versioned manifest, a local block cache.

Objects under ``s3://<bucket>/<prefix>/``::

    segments/<sid>-<random>.tcs     one immutable segment each (format: format.py)
    manifest/<seq>.json             the live segments; seq 1, 2, 3, ... each written once with a
                                    conditional put (If-None-Match: *), so two writers can never
                                    overwrite each other's manifest: the loser re-reads and retries

The catalog (LMDB) is the truth about which segment and row holds each cold id, and mirrors the
live-segment list (``cold`` db). Writing a segment: journal (LMDB) -> upload (multipart when
large) -> new manifest -> the segment becomes searchable -> one catalog transaction flips the
entries, registers the segment and closes the journal. A crash before that flip is rolled back at
the next connect: the manifest is made to list exactly the catalog's segments again, and the
uploaded object is an orphan that ``compact`` deletes. So a vector leaves warm/LMDB only once its
segment and the manifest are durable in S3, and it is never in two places at once for a query
(results are confirmed against the catalog; see engine/query.py). The write path is writer.py.

Queries rank the partitions of every live segment by their centroid (the footers are cached
locally), take the best-ranked over all segments until they hold the probe budget of rows
(:meth:`ColdTier.probe_budget`: ~``nprobe * sqrt(cold rows)``), skip those whose lower bound cannot
beat the k-th best answer the other tiers already have, fetch the rest with parallel ranged GETs
through an LRU block cache on local disk, verify each block's checksum, and score them all in one
compiled scan (``coldkernels.cold_scan``): search.py (the reads: reads.py).

A *read-only* ColdTier (another process querying the store its writer owns) never writes S3 or
the catalog: it connects without recovery (to the writer's embedded S3 server through the
endpoint file ``<path>/cold/s3.json`` the writer leaves), follows the catalog's segment list
(:meth:`ColdTier.refresh`) and shares the block cache directory. The embedded server may come
back on another port (restarted by a writer, or by a reader's keeper, when its last port was
taken): a request that fails re-reads the endpoint file, and if it names another server, the
tier reconnects to it and tries once more.

>>> store.move(ids, "cold")                                   # doctest: +SKIP
MoveReport(tier='cold', moved=1000, already=0, missing=0, seconds=0.9)
>>> store.query(q, k=10, nprobe=16).tiers["cold"].details     # doctest: +SKIP
{'partitions': 316, 'probed': 16, 'skipped': 0, 'gets': 9, 'bytes': 7700480, 'cache_hits': 0, 'rows': 5112, ...}
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ...catalog import TIER_COLD, Catalog
from ...config import ColdConfig
from ...errors import ConfigError, IntegrityError, TierStoreError, TierUnavailableError
from . import format as fmt
from .base import Seg, write_atomic
from .blockcache import PAGE_GROUP
from .copy import ColdCopy
from .search import ColdSearch
from .writer import ColdWriter

log = logging.getLogger("tierstore")

_EMBEDDED_BUCKET = "tierstore"


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes)."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise ConfigError(f"cold.url: {url!r} is not allowed: must look like 's3://bucket/prefix'")
    return u.netloc, u.path.strip("/")


class ColdTier(ColdSearch, ColdWriter):
    """The cold tier behind the common interface (``search_many``) plus write/fetch/compact/verify.

    Its parts: :class:`~.search.ColdSearch` (queries) over :class:`~.reads.ColdReads` (fetch),
    :class:`~.writer.ColdWriter` (segment writes, manifest, recovery, retirement); here: opening,
    connecting, following a writer, verify and info."""

    name = "cold"

    def __init__(self, root: str | Path, catalog: Catalog, config: ColdConfig, schema: dict[str, str],
                 metric: str, wait_readers: Callable[[], None], read_only: bool = False) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.embedded = config.url is None
        if self.embedded:
            bucket, prefix = _EMBEDDED_BUCKET, catalog.uuid
        else:
            bucket, prefix = parse_url(config.url)
        super().__init__(root, catalog, config, schema, metric, bucket, prefix, read_only)
        self._wait_readers = wait_readers
        self._server: Any = None
        self._endpoint: dict[str, Any] | None = None  # read-only, embedded: the s3.json connected to
        self._connect_lock = threading.RLock()  # (re-entered: a request of connect() may follow a moved server)
        self.manifest_seq = 0
        self.manifest: dict[int, dict[str, Any]] = {}
        (self.root / "footers").mkdir(exist_ok=True)
        if not read_only:
            (self.root / "tmp").mkdir(exist_ok=True)
            for leftover in (self.root / "tmp").iterdir():  # a segment being built when we crashed
                leftover.unlink(missing_ok=True)
        self.recovered = 0

    # --- connection ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    def needs_connect_at_open(self) -> bool:
        """Connect (and check the bucket) at open when S3 is external or holds this store's data;
        an embedded S3 server with nothing in it starts only when first needed."""
        return not self.embedded or bool(self.catalog.cold_segments()) or bool(self.catalog.journal())

    def connect(self) -> None:
        """Start the embedded server if it is ours, check the bucket, recover, load footers."""
        if self._client is not None:
            return
        with self._connect_lock:
            if self._client is not None:
                return
            kw: dict[str, Any] = {}
            endpoint = self.cfg.endpoint_url
            if self.embedded and self.read_only:
                # the writer's server: never start a second one on the same data directory
                ep = self._read_endpoint()
                if ep is None:
                    raise TierUnavailableError(
                        "cold tier: the embedded S3 server is not running (the process that has the "
                        "store open for writing starts it)", tier="cold")
                client = self._client_for(ep)
                self._endpoint = ep
            else:
                if self.embedded:
                    from ...services import S3Server

                    # it writes s3.json (under its start lock, once ready) and removes it when it
                    # stops, only while the file still names it
                    self._server = S3Server(self.root / "s3", buckets=(_EMBEDDED_BUCKET,),
                                            endpoint_file=self.root / "s3.json").start()
                    endpoint = self._server.endpoint_url
                    kw = {"aws_access_key_id": self._server.access_key,
                          "aws_secret_access_key": self._server.secret_key}
                client = self._make_client(endpoint, kw)
            try:
                self._check_bucket(client)
                self._client = client  # recover and _footer issue requests through it
                if not self.read_only:
                    self.recover()
                segs = {sid: Seg(sid, info, self._footer(sid, info))
                        for sid, info in sorted(self.catalog.cold_segments().items())}
                self.relist(segs)
            except BaseException:
                self._client = None
                if self._server is not None:  # a retry starts it again; never two on one directory
                    self._server.stop()
                    self._server = None
                raise

    def _make_client(self, endpoint: str | None, kw: dict[str, Any]) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        boto_cfg = BotoConfig(
            region_name=self.cfg.region or "us-east-1",
            connect_timeout=self.cfg.timeout, read_timeout=self.cfg.timeout,
            retries={"max_attempts": self.cfg.max_attempts, "mode": "standard"},
            max_pool_connections=32,
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        return boto3.session.Session().client("s3", endpoint_url=endpoint, config=boto_cfg, **kw)

    def _read_endpoint(self) -> dict[str, Any] | None:
        """The embedded server's endpoint file (``s3.json``), or None when there is none."""
        try:
            ep = json.loads((self.root / "s3.json").read_text())
        except (OSError, ValueError):
            return None
        return ep if isinstance(ep, dict) and isinstance(ep.get("endpoint_url"), str) else None

    def _client_for(self, ep: dict[str, Any]) -> Any:
        # (writers before this version named them access_key_id / secret_access_key)
        return self._make_client(ep["endpoint_url"], {
            "aws_access_key_id": ep.get("access_key", ep.get("access_key_id")),
            "aws_secret_access_key": ep.get("secret_key", ep.get("secret_access_key"))})

    def _follow_endpoint(self) -> bool:
        """Read-only on the embedded server, after a failed request: if ``s3.json`` now names
        another server than the one connected to (it was restarted on another port), connect to
        that one. Returns whether it did (the caller then tries once more)."""
        if not (self.embedded and self.read_only) or self._client is None:
            return False
        with self._connect_lock:
            ep = self._read_endpoint()
            if ep is None or self._endpoint is None:
                return False
            keys = ("endpoint_url", "access_key", "secret_key", "access_key_id", "secret_access_key")
            if all(ep.get(k) == self._endpoint.get(k) for k in keys):
                return False  # the same server (down, or restarting on its port): nothing to follow
            client = self._client_for(ep)
            self._urls.clear()  # presigned URLs name the old server
            self._client, self._endpoint = client, ep
            log.info("cold tier: the embedded S3 server moved to %s; reconnected", ep["endpoint_url"])
            return True

    def _following(self, call: Callable[[], Any]) -> Any:
        """``call()``; when it fails and a read-only tier's embedded server has moved (or another
        thread already followed it), once more on the new connection."""
        client = self._client
        try:
            return call()
        except TierUnavailableError:
            if not (self._client is not client or self._follow_endpoint()):
                raise
        return call()

    def s3(self, fn: Callable[[Any], Any]) -> Any:
        """One S3 call (:meth:`ColdBase.s3`), following a moved embedded server."""
        return self._following(lambda: super(ColdTier, self).s3(fn))

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """One ranged GET (:meth:`ColdBase.get_range`), following a moved embedded server."""
        return self._following(lambda: super(ColdTier, self).get_range(key, start, end))

    def _check_bucket(self, client: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(f"cold.url: bucket {self.bucket!r} does not exist at "
                                  f"{self.cfg.endpoint_url or 'AWS S3'}; create it first") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"cold.url: access to bucket {self.bucket!r} denied ({code}); check the "
                                  "credentials (boto3's chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                  "~/.aws, instance role)") from None
            raise self.unavailable(exc) from exc
        except TierStoreError:
            raise
        except Exception as exc:
            raise self.unavailable(exc) from exc

    def stage(self, origin: str, catalog: Any) -> ColdCopy:
        """A relocation's copy into this tier (tierstore.engine.relocate): one new segment,
        journaled under ``origin``'s name (ingest, move, compact)."""
        return ColdCopy(self, op={"upsert": "ingest", "compact": "compact"}.get(origin, "move"))

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._client = None
        if self._server is not None:
            self._server.stop()  # (removes s3.json if it still names this server)
            self._server = None

    def refresh(self) -> None:
        """Read-only: follow the catalog's live-segment list (new segments' footers are read,
        through the shared footer files; segments no longer listed are dropped). Until a failed
        refresh succeeds, searches raise (a partial answer, not one missing the new segments)."""
        try:
            self._refresh()
            self.refresh_error = None
        except TierStoreError as exc:
            self.refresh_error = exc
            raise

    def _refresh(self) -> None:
        listed = self.catalog.cold_segments()
        if not self.connected:
            if listed:
                self.connect()  # loads every listed footer
            return
        with self._lock:
            have = set(self.segs)
        new = {sid: Seg(sid, info, self._footer(sid, info)) for sid, info in sorted(listed.items()) if sid not in have}
        gone = have - set(listed)
        if new or gone:
            self.relist(new, gone)

    def _footer(self, sid: int, info: dict[str, Any]) -> fmt.Footer:
        off, length, sumv = info["footer"]
        path = self.root / "footers" / f"{sid}.ftr"
        what = f"cold segment {info['key']}"
        if path.exists():
            raw = path.read_bytes()
            if fmt.checksum(raw) == sumv:
                return fmt.parse_footer(raw, sumv, what)
        raw = self.get_range(info["key"], off, off + length)
        f = fmt.parse_footer(raw, sumv, what)
        write_atomic(path, raw)  # other processes read these files too
        return f

    # --- maintenance -------------------------------------------------------------------------------

    def segments(self) -> list[Any]:
        """The listed segments (a snapshot)."""
        with self._lock:
            return list(self.segs.values())

    def counter_snapshot(self) -> dict[str, int]:
        """The tier's counters (GETs, PUTs, bytes, cache hits, early looks and stops), read under their lock."""
        with self._lock:
            return dict(self.counters)

    def small_segments(self) -> int:
        """Live segments under a quarter of ``segment_size`` rows (what compaction would merge)."""
        with self._lock:
            return sum(s.info["rows"] < self.cfg.segment_size // 4 for s in self.segs.values())

    def verify(self, deep: bool = True, repair: bool = False) -> dict[str, Any]:
        """Check manifest == catalog segments, every object's footer and block checksums (``deep``:
        downloads every object and checks every byte of it: header, blocks, records, footer,
        trailer; and every local footer and block cache file), and that each cold catalog entry
        names a row holding its id. A damaged cache file is dropped (or rewritten from S3): it is
        a problem, or with ``repair`` listed under ``repaired``; a read-only process only reports
        it (readers delete nothing: the writer's verify, or its read path, replaces it). S3 holds the only copy of a cold
        segment: a damaged object is reported (``damaged``: segment -> partitions), not repaired."""
        self.connect()
        problems: list[str] = []
        seq, manifest = self.latest_manifest()
        registry = self.catalog.cold_segments()
        for s in sorted(set(registry) - set(manifest)):
            problems.append(f"segment {s} is in the catalog but not in manifest {seq}")
        for s in sorted(set(manifest) - set(registry)):
            problems.append(f"segment {s} is in manifest {seq} but not in the catalog")
        objects = dict(self.list_keys("segments"))
        ids_of: dict[int, np.ndarray] = {}
        damaged: dict[int, list[str]] = {}
        checked_bytes = 0
        for sid, info in sorted(registry.items()):
            key = info["key"]
            what = f"cold segment {sid} ({key})"
            if key not in objects:
                problems.append(f"{what}: the object is missing")
                damaged[sid] = ["missing"]
                continue
            if objects[key] != info["bytes"]:
                problems.append(f"{what}: the object has {objects[key]} bytes, expected {info['bytes']}")
                damaged[sid] = ["size"]
                continue
            try:
                if not deep:
                    self._footer(sid, info)
                    ids_of[sid] = np.zeros(0, np.uint64)
                    continue
                raw = self.s3(lambda c, key=key: c.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except IntegrityError as exc:
                problems.append(f"{what}: {exc}")
                damaged[sid] = ["footer"]
                continue
            checked_bytes += len(raw)
            errs, f = fmt.check_object(raw, info["footer"], what)
            if errs:
                problems += errs
                damaged[sid] = [e.removeprefix(f"{what}: ") for e in errs]
            if f is not None and not errs:
                ids_of[sid] = np.concatenate([np.frombuffer(raw, np.uint64, int(f.counts[p]), int(f.offsets[p]))
                                              for p in range(f.parts)]) if f.parts else np.zeros(0, np.uint64)
        cache_fixed: list[str] = []
        if deep:
            cache_fixed = self._verify_local(registry)
            if not repair:
                problems += cache_fixed
        live = 0
        for batch in self.catalog.entry_batches(tiers=[TIER_COLD]):
            for e in batch:
                live += 1
                ids = ids_of.get(e.seg)
                if e.seg not in registry:
                    problems.append(f"{e.uid!r}: the catalog places it in cold segment {e.seg}, which is not live")
                elif ids is not None and len(ids) and (e.pos >= len(ids) or int(ids[e.pos]) != e.iid):
                    problems.append(f"{e.uid!r}: row {e.pos} of cold segment {e.seg} does not hold it")
        listed = {i["key"] for i in manifest.values()}
        orphans = [k for k in objects if k not in listed]
        out = {"ok": not problems, "problems": problems[:100], "segments": len(registry), "live": live,
               "manifest_seq": seq, "orphan_objects": len(orphans), "checked_bytes": checked_bytes,
               "damaged": {str(s): d for s, d in damaged.items()}}
        if repair and cache_fixed:
            out["repaired"] = cache_fixed
        return out

    def _verify_local(self, registry: dict[int, dict[str, Any]]) -> list[str]:
        """Every local footer file and cached block of a live segment against its checksum; a
        damaged one is dropped (a footer rewritten from S3), except in a read-only process, which
        leaves it for the writer. Returns what was fixed (or found)."""
        fixed = []
        for sid, info in sorted(registry.items()):
            path = self.root / "footers" / f"{sid}.ftr"
            try:
                ok = fmt.checksum(path.read_bytes()) == info["footer"][2]
            except FileNotFoundError:
                continue
            if not ok and self.read_only:  # readers never delete: the writer's verify or reads repair it
                fixed.append(f"cold segment {sid}: the local footer cache {path.name} is damaged (left in place: "
                             "a read-only process deletes nothing; verify in the writer rewrites it)")
            elif not ok:
                path.unlink(missing_ok=True)
                try:
                    self._footer(sid, info)  # fetched again (checked) and written back
                    what = "rewritten from S3"
                except TierStoreError:
                    what = "dropped"
                fixed.append(f"cold segment {sid}: the local footer cache {path.name} was damaged ({what})")
        with self._lock:
            segs = dict(self.segs)
        self.settle()  # queued cache writes first
        for blk in sorted(self.cache.root.glob("*.blk")):
            try:
                sid_s, part_s = blk.stem.split("-")
                sid, kind = int(sid_s), part_s[0] if part_s[0] in "vg" else ""
                part = int(part_s[1:] if kind else part_s)
                seg = segs.get(sid)
                limit = {"v": seg.footer.pages, "g": -(-seg.footer.pages // PAGE_GROUP),
                         "": seg.footer.parts}[kind] if seg is not None else 0
                if part >= limit:
                    continue
                if kind == "g":
                    self._load_group(memoryview(blk.read_bytes()), seg, part)
                else:
                    (fmt.verify_page if kind else fmt.verify_block)(blk.read_bytes(), seg.footer, part, "")
            except (ValueError, OSError, IndexError):
                continue  # not a cache file of ours, or evicted meanwhile
            except IntegrityError:
                what = {"v": f"page {part} of exact vectors", "g": f"group {part} of pages of exact vectors",
                        "": f"block of partition {part}"}[kind]
                if self.read_only:  # readers never delete (the writer's verify or its next read drops it)
                    fixed.append(f"cold segment {sid}: cached {what} ({blk.name}) is damaged on local disk "
                                 "(left in place: a read-only process deletes nothing; verify in the writer drops it)")
                    continue
                self.cache.drop(blk.stem)  # never served again: the next query fetches it from S3
                fixed.append(f"cold segment {sid}: cached {what} ({blk.name}) was damaged "
                             "on local disk (dropped; fetched again from S3 when needed)")
        return fixed

    def info(self) -> dict[str, Any]:
        with self._lock:
            segs = list(self.segs.values())
        return {
            "url": self.url,
            "embedded": self.embedded,
            "connected": self.connected,
            "segments": len(segs),
            "rows": sum(s.info["rows"] for s in segs),
            "partitions": sum(s.footer.parts for s in segs),
            "s3_bytes": sum(s.info["bytes"] for s in segs),
            "manifest_seq": self.manifest_seq,
            "queued_for_cold": self.catalog.cold_queue_len(),
            "cache": {"bytes": self.cache.bytes, "blocks": len(self.cache), "capacity": self.cache.capacity},
            "recovered_operations": self.recovered,
            **{k: int(v) for k, v in list(self.counters.items())},
        }


__all__ = ["ColdTier", "parse_url"]
