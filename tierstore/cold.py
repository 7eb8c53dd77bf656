"""ColdTier: immutable partitioned segments in S3, a versioned manifest, a local block cache.

Objects under ``s3://<bucket>/<prefix>/``::

    segments/<sid>-<random>.tcs     one immutable segment each (format: coldseg.py)
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
(results are confirmed against the catalog; see query.py).

Queries rank the partitions of every live segment by their centroid (the footers are cached
locally), take the best-ranked over all segments until they hold the probe budget of rows
(:meth:`ColdTier.probe_budget`: ~``nprobe * sqrt(cold rows)``), skip those whose lower bound cannot
beat the k-th best answer the other tiers already have, fetch the rest with parallel ranged GETs
through an LRU block cache on local disk, verify each block's checksum, and score them all in one
compiled scan (``kernels.cold_scan``).

A *read-only* ColdTier (another process querying the store its writer owns) never writes S3 or
the catalog: it connects without recovery (to the writer's embedded S3 server through the
endpoint file ``<path>/cold/s3.json`` the writer leaves), follows the catalog's segment list
(:meth:`ColdTier.refresh`) and shares the block cache directory.

>>> store.move(ids, "cold")                                   # doctest: +SKIP
MoveReport(tier='cold', moved=1000, already=0, missing=0, seconds=0.9)
>>> store.query(q, k=10, nprobe=16).tiers["cold"].details     # doctest: +SKIP
{'partitions': 316, 'probed': 16, 'skipped': 0, 'gets': 9, 'bytes': 7700480, 'cache_hits': 0, 'rows': 5112, ...}
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from . import coldseg, distance, filters, kernels
from .blockcache import BlockCache
from .catalog import TIER_COLD, Catalog, Entry, location
from .config import ColdConfig
from .errors import ConfigError, IntegrityError, TierStoreError, TierUnavailableError
from .query import TierAnswer

log = logging.getLogger("tierstore")

_MULTIPART = 32 * 1024**2  # segments larger than this upload in 16 MiB parts, 4 at a time
_KEEP_MANIFESTS = 10
_COALESCE_GAP = 1  # unwanted partitions one GET may read through to save a request
_MAX_RUN = 4 * 1024**2
_RERANK = 32  # format 2: candidates per query reranked on exact vectors (at least 2k)
_PAGE_GAP = 2  # unwanted pages of exact vectors one rerank GET may read through
_MAX_PENDING_CACHE = 256 * 1024**2
_EMBEDDED_BUCKET = "tierstore"


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes)."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise ConfigError(f"cold.url: {url!r} is not allowed: must look like 's3://bucket/prefix'")
    return u.netloc, u.path.strip("/")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a small file so that another process never reads it half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- the tier -----------------------------------------------------------------------------------------


@dataclass
class _Seg:
    sid: int
    info: dict[str, Any]
    footer: coldseg.Footer


@dataclass
class _Table:
    """Every live partition, concatenated across segments, for one matrix product per query."""

    segs: list[_Seg]
    centroids: np.ndarray  # (P, dim) float32
    csq: np.ndarray  # squared norms of the centroids
    radii: np.ndarray  # float64
    seg_of: np.ndarray  # index into segs
    part_of: np.ndarray  # partition number inside its segment
    rows: np.ndarray  # rows of each partition (int64)
    total_rows: int
    possible: dict[Any, np.ndarray] = field(default_factory=dict)  # filter -> partitions it may match

    def may_match(self, node: filters.Node) -> np.ndarray:
        """Partitions that can hold a row matching ``node`` (by the footers' metadata summaries)."""
        hit = self.possible.get(node)
        if hit is None:
            hit = np.array([coldseg.may_match(node, self.segs[s].footer.summaries or {}, int(p))
                            for s, p in zip(self.seg_of.tolist(), self.part_of.tolist(), strict=True)], bool)
            if len(self.possible) < 256:
                self.possible[node] = hit
        return hit


@dataclass
class Written:
    """A segment uploaded and listed in the manifest, not yet flipped in the catalog."""

    seg: _Seg
    rows: np.ndarray  # rows[i] = the object row of input row i


class ColdTier:
    """The cold tier behind the common interface (``search_many``) plus write/fetch/compact/verify."""

    name = "cold"

    def __init__(self, root: str | Path, catalog: Catalog, config: ColdConfig, schema: dict[str, str],
                 metric: str, wait_readers: Callable[[], None], read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog, self.cfg, self.schema, self.metric = catalog, config, dict(schema), metric
        self.dim = catalog.dim
        self._wait_readers = wait_readers
        self.embedded = config.url is None
        if self.embedded:
            self.bucket, self.prefix = _EMBEDDED_BUCKET, catalog.uuid
        else:
            self.bucket, self.prefix = parse_url(config.url)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self._server: Any = None
        self._client: Any = None
        self._lock = threading.RLock()
        self._connect_lock = threading.Lock()
        self.segs: dict[int, _Seg] = {}
        self._table: _Table | None = None
        self.manifest_seq = 0
        self.manifest: dict[int, dict[str, Any]] = {}
        self.cache = BlockCache(self.root / "cache", config.cache_size, shared=read_only)
        (self.root / "footers").mkdir(exist_ok=True)
        if not read_only:
            (self.root / "tmp").mkdir(exist_ok=True)
            for leftover in (self.root / "tmp").iterdir():  # a segment being built when we crashed
                leftover.unlink(missing_ok=True)
        self._io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tierstore-s3")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierstore-cache")
        self._pending_cache = 0
        self._writer_niced = False
        import urllib3

        self._http = urllib3.PoolManager(maxsize=16, retries=False,
                                         timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout))
        self._urls: dict[str, tuple[str, float]] = {}  # object key -> (presigned GET URL, expiry)
        self.counters = Counter()
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
            import boto3
            from botocore.config import Config as BotoConfig

            kw: dict[str, Any] = {}
            endpoint = self.cfg.endpoint_url
            if self.embedded and self.read_only:
                # the writer's server: never start a second one on the same data directory
                try:
                    ep = json.loads((self.root / "s3.json").read_text())
                except (OSError, ValueError):
                    raise TierUnavailableError(
                        "cold tier: the embedded S3 server is not running (the process that has the "
                        "store open for writing starts it)", tier="cold") from None
                endpoint = ep["endpoint_url"]
                kw = {"aws_access_key_id": ep["access_key"], "aws_secret_access_key": ep["secret_key"]}
            elif self.embedded:
                from .services import S3Server

                self._server = S3Server(self.root / "s3", buckets=(_EMBEDDED_BUCKET,)).start()
                endpoint = self._server.endpoint_url
                kw = {"aws_access_key_id": self._server.access_key, "aws_secret_access_key": self._server.secret_key}
                _write_atomic(self.root / "s3.json", json.dumps(
                    {"endpoint_url": endpoint, "pid": self._server.pid, **{
                        k.replace("aws_", ""): v for k, v in kw.items()}}).encode())
            boto_cfg = BotoConfig(
                region_name=self.cfg.region or "us-east-1",
                connect_timeout=self.cfg.timeout, read_timeout=self.cfg.timeout,
                retries={"max_attempts": self.cfg.max_attempts, "mode": "standard"},
                max_pool_connections=32,
                s3={"addressing_style": "path" if endpoint else "auto"},
            )
            client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=boto_cfg, **kw)
            try:
                self._check_bucket(client)
                self._client = client  # _recover and _footer issue requests through it
                if not self.read_only:
                    self._recover()
                segs = {sid: _Seg(sid, info, self._footer(sid, info))
                        for sid, info in sorted(self.catalog.cold_segments().items())}
                with self._lock:
                    self.segs.update(segs)
                    self._table = None
            except BaseException:
                self._client = None
                if self._server is not None:  # a retry starts it again; never two on one directory
                    self._server.stop()
                    self._server = None
                raise

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
            raise self._unavailable(exc) from exc
        except TierStoreError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _count(self, name: str, n: int) -> None:
        with self._lock:  # incremented from the I/O threads
            self.counters[name] += n

    def _unavailable(self, exc: Exception) -> TierUnavailableError:
        return TierUnavailableError(f"cold tier (S3 {self.url}) unavailable: {type(exc).__name__}: {exc}",
                                    tier="cold")

    def _s3(self, fn: Callable[[Any], Any]) -> Any:
        """Run one S3 call, mapping botocore's errors onto tierstore's."""
        from botocore.exceptions import ClientError

        if self._client is None:
            self.connect()
        try:
            return fn(self._client)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                raise IntegrityError(f"cold tier: an object under {self.url} is missing ({exc})") from exc
            raise self._unavailable(exc) from exc
        except TierStoreError:
            raise
        except Exception as exc:  # connection refused, timeouts, ...
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._client = None
        if self._server is not None:
            (self.root / "s3.json").unlink(missing_ok=True)
            self._server.stop()
            self._server = None

    def refresh(self) -> None:
        """Read-only: follow the catalog's live-segment list (new segments' footers are read,
        through the shared footer files; segments no longer listed are dropped). Until a failed
        refresh succeeds, searches raise (a partial answer, not one missing the new segments)."""
        try:
            self._refresh()
            self._refresh_error: TierStoreError | None = None
        except TierStoreError as exc:
            self._refresh_error = exc
            raise

    _refresh_error = None

    def _refresh(self) -> None:
        listed = self.catalog.cold_segments()
        if not self.connected:
            if listed:
                self.connect()  # loads every listed footer
            return
        with self._lock:
            have = set(self.segs)
        new = {sid: _Seg(sid, info, self._footer(sid, info)) for sid, info in sorted(listed.items()) if sid not in have}
        gone = have - set(listed)
        if new or gone:
            with self._lock:
                for sid in gone:
                    self.segs.pop(sid, None)
                self.segs.update(new)
                self._table = None

    # --- manifest ----------------------------------------------------------------------------------

    def _mkey(self, seq: int) -> str:
        return f"{self.prefix}/manifest/{seq:012d}.json"

    def _list(self, sub: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        token = None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": f"{self.prefix}/{sub}/"}
            if token:
                kw["ContinuationToken"] = token
            page = self._s3(lambda c, kw=kw: c.list_objects_v2(**kw))
            out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def _latest_manifest(self) -> tuple[int, dict[int, dict[str, Any]]]:
        keys = sorted(k for k, _ in self._list("manifest") if k.endswith(".json"))
        if not keys:
            return 0, {}
        raw = self._s3(lambda c: c.get_object(Bucket=self.bucket, Key=keys[-1])["Body"].read())
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
            body = json.dumps({"format": coldseg.FORMAT, "store": self.catalog.uuid, "seq": seq + 1,
                               "written": time.time(), "segments": {str(s): i for s, i in sorted(new.items())}})
            try:
                self._s3(lambda c, body=body, seq=seq: c.put_object(
                    Bucket=self.bucket, Key=self._mkey(seq + 1), Body=body.encode(), IfNoneMatch="*"))
            except TierUnavailableError as exc:
                cause = exc.__cause__
                if isinstance(cause, ClientError) and str(cause.response.get("Error", {}).get("Code")) in (
                        "PreconditionFailed", "412", "ConditionalRequestConflict"):
                    seq, segs = self._latest_manifest()  # someone else published: build on theirs
                    continue
                raise
            self._count("puts", 1)
            self.manifest_seq, self.manifest = seq + 1, new
            return
        raise TierUnavailableError(f"cold tier: could not publish a manifest under {self.url} (8 races lost)",
                                   tier="cold")

    # --- recovery ----------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Roll back operations a crash interrupted (the catalog never flipped, so the vectors are
        still where it says) and make the manifest list exactly the catalog's segments."""
        self.manifest_seq, self.manifest = self._latest_manifest()
        journal = self.catalog.journal()
        for sid, raw in journal.items():
            op = json.loads(raw)
            log.warning("cold tier: rolling back an interrupted %s of segment %d (%s)", op.get("op"), sid, op.get("key"))
            self.catalog.delete_journal(sid)
        self.recovered = len(journal)
        registry = self.catalog.cold_segments()
        extra = set(self.manifest) - set(registry)
        missing = {s: i for s, i in registry.items() if s not in self.manifest}
        if extra or missing:
            self._publish(missing, extra)

    # --- footers -----------------------------------------------------------------------------------

    def _footer(self, sid: int, info: dict[str, Any]) -> coldseg.Footer:
        off, length, sumv = info["footer"]
        path = self.root / "footers" / f"{sid}.ftr"
        what = f"cold segment {info['key']}"
        if path.exists():
            raw = path.read_bytes()
            if coldseg.checksum(raw) == sumv:
                return coldseg.parse_footer(raw, sumv, what)
        raw = self._get_range(info["key"], off, off + length)
        f = coldseg.parse_footer(raw, sumv, what)
        _write_atomic(path, raw)  # other processes read these files too
        return f

    def _get_range(self, key: str, start: int, end: int) -> bytes:
        """One ranged GET. Query-path reads skip boto3: a plain HTTP GET of a presigned URL (cached
        per object) costs ~10x less CPU than ``get_object``, which on a small machine is what
        limits parallel GETs (measured: 32 boto3 GETs of 230 KiB took ~100 ms on 2 cores)."""
        import urllib3

        err: Exception | None = None
        # at least two tries: after an S3 restart the first request on a pooled keep-alive
        # connection fails although the server is back (a GET is idempotent)
        for attempt in range(max(2, self.cfg.max_attempts)):
            if attempt:
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + secrets.randbelow(1000) / 1000))
            try:
                r = self._http.request("GET", self._presigned(key, fresh=attempt > 0),
                                       headers={"Range": f"bytes={start}-{end - 1}"})
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out
                err = exc
                continue
            if r.status in (200, 206):
                data = r.data if r.status == 206 else r.data[start:end]  # 200: the server ignored Range
                if len(data) != end - start:
                    raise IntegrityError(f"cold segment {key}: short read ({len(data)} of {end - start} bytes)")
                return data
            if r.status == 404:
                raise IntegrityError(f"cold tier: object {key} is missing from {self.url}")
            err = RuntimeError(f"HTTP {r.status}: {r.data[:200]!r}")
            if r.status not in (403, 408, 429) and r.status < 500:
                break  # not worth retrying (403 is: an expired presigned URL is re-signed)
        raise self._unavailable(err or RuntimeError("no attempt made"))

    def _presigned(self, key: str, fresh: bool = False) -> str:
        now = time.time()
        hit = self._urls.get(key)
        if hit is None or fresh or hit[1] < now + 300:
            if self._client is None:
                self.connect()
            url = self._client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                      ExpiresIn=3600)
            hit = self._urls[key] = (url, now + 3600)
        return hit[0]

    def _tab(self) -> _Table | None:
        with self._lock:
            if self._table is None and self.segs:
                segs = list(self.segs.values())
                c = np.concatenate([s.footer.centroids for s in segs]).astype(np.float64)
                self._table = _Table(
                    segs, c, np.einsum("ij,ij->i", c, c),
                    np.concatenate([s.footer.radii for s in segs]).astype(np.float64),
                    np.concatenate([np.full(s.footer.parts, i) for i, s in enumerate(segs)]),
                    np.concatenate([np.arange(s.footer.parts) for s in segs]),
                    np.concatenate([s.footer.counts for s in segs]).astype(np.int64),
                    sum(int(s.footer.rows) for s in segs))
            return self._table

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
                built = coldseg.build(f, np.asarray(iids, np.uint64), vectors, metas, uids, metric=self.metric,
                                      dtype=self.cfg.dtype, fields=sorted(self.schema), segment_id=sid,
                                      store=self.catalog.uuid, kinds=self.schema)
            self.catalog.put_journal(sid, json.dumps({"op": op, "key": key, "rows": len(iids), "t": time.time()}).encode())
            self._upload(tmp, key, built.size)
            info = {"key": key, "rows": len(iids), "bytes": built.size, "parts": built.parts,
                    "footer": [built.footer_offset, built.footer_length, built.footer_checksum], "created": time.time()}
            with open(tmp, "rb") as f:
                f.seek(built.footer_offset)
                raw = f.read(built.footer_length)
            _write_atomic(self.root / "footers" / f"{sid}.ftr", raw)
            seg = _Seg(sid, info, coldseg.parse_footer(raw, built.footer_checksum))
            self._publish({sid: info}, set())
        except BaseException:
            self.catalog.delete_journal(sid)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        rows = np.empty(len(iids), np.int64)
        rows[built.order] = np.arange(len(iids))
        self._count("segments_written", 1)
        self._count("bytes_written", built.size)
        return Written(seg, rows)

    def _upload(self, path: Path, key: str, size: int) -> None:
        if size <= _MULTIPART:
            data = path.read_bytes()
            self._s3(lambda c: c.put_object(Bucket=self.bucket, Key=key, Body=data))
        else:
            from boto3.s3.transfer import TransferConfig

            tc = TransferConfig(multipart_threshold=_MULTIPART, multipart_chunksize=16 * 1024**2, max_concurrency=4)
            self._s3(lambda c: c.upload_file(str(path), self.bucket, key, Config=tc))
        self._count("puts", 1)

    def activate(self, w: Written) -> None:
        """Make a written segment searchable (before the catalog flip: until then its rows fail
        the catalog check, after it they are found)."""
        with self._lock:
            self.segs[w.seg.sid] = w.seg
            self._table = None

    def commit(self, txn: Any, w: Written) -> None:
        """Inside the caller's flip transaction: register the segment, close its journal entry."""
        self.catalog.put_cold_segment(txn, w.seg.sid, w.seg.info)
        self.catalog.delete_journal(w.seg.sid, txn)

    def abort(self, w: Written) -> None:
        """The flip failed: unlist the segment again (its object becomes an orphan for compact)."""
        with self._lock:
            self.segs.pop(w.seg.sid, None)
            self._table = None
        try:
            self._publish({}, {w.seg.sid})
        finally:
            self.catalog.delete_journal(w.seg.sid)

    # --- reading -----------------------------------------------------------------------------------

    def _blocks(self, wanted: list[tuple[_Seg, int]]) -> tuple[dict[tuple[int, int], coldseg.Block],
                                                                 dict[tuple[int, int], int], list[int]]:
        """Fetch partitions: cache first, then parallel ranged GETs, coalesced -> (blocks, the GET
        each block came in (absent: from the cache), bytes of each GET)."""
        out: dict[tuple[int, int], coldseg.Block] = {}
        misses: dict[int, tuple[_Seg, list[int]]] = {}
        for seg, p in wanted:
            k = (seg.sid, p)
            if k in out or p in misses.get(seg.sid, (None, ()))[1]:
                continue

            def load(raw: memoryview, seg: _Seg = seg, p: int = p) -> coldseg.Block:
                coldseg.verify_block(raw, seg.footer, p, f"cached block of {seg.info['key']}")
                return self._decode(seg, p, raw)

            blk = self.cache.get(BlockCache.name(seg.sid, p), load)
            if blk is None:
                misses.setdefault(seg.sid, (seg, []))[1].append(p)
            else:
                out[k] = blk
        self._count("cache_hits", len(out))
        self._count("cache_misses", sum(len(parts) for _, parts in misses.values()))
        runs = [r for seg, parts in misses.values() for r in self._runs(seg, sorted(parts))]
        got_in: dict[tuple[int, int], int] = {}
        run_bytes: list[int] = []
        for i, (run, fetched) in enumerate(zip(runs, self._io.map(lambda r: self._fetch_run(*r), runs), strict=True)):
            seg = run[0]
            for p, raw in fetched.items():
                out[(seg.sid, p)] = self._decode(seg, p, raw)
                got_in[(seg.sid, p)] = i
            run_bytes.append(int(seg.footer.offsets[run[2] + 1] - seg.footer.offsets[run[1]]))
        self._count("gets", len(runs))
        return out, got_in, run_bytes

    @staticmethod
    def _runs(seg: _Seg, parts: list[int]) -> list[tuple[_Seg, int, int, list[int]]]:
        """Group wanted partitions (sorted) into ranged reads: neighbours closer than
        ``_COALESCE_GAP`` partitions share one GET (on S3 a request costs more than a few hundred
        KiB more of transfer; partitions are laid out so that similar ones are adjacent)."""
        runs: list[tuple[_Seg, int, int, list[int]]] = []
        off = seg.footer.offsets
        for p in parts:
            if runs and p - runs[-1][2] - 1 <= _COALESCE_GAP and off[p + 1] - off[runs[-1][1]] <= _MAX_RUN:
                first, _, members = runs[-1][1:]
                runs[-1] = (seg, first, p, [*members, p])
            else:
                runs.append((seg, p, p, [p]))
        return runs

    def _fetch_run(self, seg: _Seg, first: int, last: int, wanted: list[int]) -> dict[int, memoryview]:
        f = seg.footer
        base = int(f.offsets[first])
        raw = memoryview(self._get_range(seg.info["key"], base, int(f.offsets[last + 1])))
        self._count("get_bytes", len(raw))
        out = {}
        for p in range(first, last + 1):
            blk = raw[int(f.offsets[p]) - base : int(f.offsets[p + 1]) - base]  # zero-copy slices
            if p in wanted:
                coldseg.verify_block(blk, f, p, f"cold segment {seg.info['key']}")
                out[p] = blk
            # gap fillers are cached too (a free prefetch), unverified: every cached block is
            # verified when it is first loaded from the cache
            self._cache_later(BlockCache.name(seg.sid, p), blk)
        return out

    def _cache_later(self, name: str, data: memoryview) -> None:
        """Write a fetched block to the disk cache off the query path (measured: writing the
        blocks inline cost a cache-cold query more than the GETs themselves). Skipped while more
        than ``_MAX_PENDING_CACHE`` bytes wait, so a burst of cold queries cannot pile up RAM."""
        with self._lock:
            if self._pending_cache + len(data) > _MAX_PENDING_CACHE:
                return
            self._pending_cache += len(data)

        def write() -> None:
            if not self._writer_niced:  # the cache writer yields the CPU to queries and I/O
                self._writer_niced = True
                with contextlib.suppress(OSError, AttributeError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            try:
                self.cache.put(name, data)
            except OSError as exc:
                log.warning("cold cache: could not write %s: %s", name, exc)
            finally:
                with self._lock:
                    self._pending_cache -= len(data)

        self._writer.submit(write)

    def _decode(self, seg: _Seg, p: int, raw: bytes) -> coldseg.Block:
        return coldseg.Block(raw, int(seg.footer.counts[p]), self.dim, seg.footer.dtype, seg.footer.format)

    def _pages(self, wanted: list[tuple[_Seg, int]]) -> tuple[dict[tuple[int, int], np.ndarray],
                                                               dict[tuple[int, int], int], list[int]]:
        """Pages of exact vectors (format 2) for the rerank: cache first, then coalesced ranged
        GETs in parallel -> (float32 arrays, the GET each page came in, bytes of each GET)."""
        out: dict[tuple[int, int], np.ndarray] = {}
        misses: dict[int, tuple[_Seg, set[int]]] = {}
        for seg, g in wanted:
            if (seg.sid, g) in out:
                continue

            def load(raw: memoryview, seg: _Seg = seg, g: int = g) -> np.ndarray:
                coldseg.verify_page(raw, seg.footer, g, f"cached page of {seg.info['key']}")
                return coldseg.decode_page(raw, seg.footer)

            v = self.cache.get(BlockCache.page_name(seg.sid, g), load)
            if v is None:
                misses.setdefault(seg.sid, (seg, set()))[1].add(g)
            else:
                out[(seg.sid, g)] = v
        runs: list[tuple[_Seg, int, int, list[int]]] = []
        for seg, gs in misses.values():
            for g in sorted(gs):
                a, b = seg.footer.page_range(g)
                if (runs and runs[-1][0] is seg and g - runs[-1][2] - 1 <= _PAGE_GAP
                        and b - seg.footer.page_range(runs[-1][1])[0] <= _MAX_RUN):
                    runs[-1] = (seg, runs[-1][1], g, [*runs[-1][3], g])
                else:
                    runs.append((seg, g, g, [g]))
        got_in: dict[tuple[int, int], int] = {}
        run_bytes: list[int] = []
        for i, (run, fetched) in enumerate(zip(runs, self._io.map(lambda r: self._fetch_pages(*r), runs), strict=True)):
            seg = run[0]
            for g, v in fetched.items():
                out[(seg.sid, g)] = v
                got_in[(seg.sid, g)] = i
            run_bytes.append(seg.footer.page_range(run[2])[1] - seg.footer.page_range(run[1])[0])
        self._count("gets", len(runs))
        self._count("rerank_gets", len(runs))
        return out, got_in, run_bytes

    def _fetch_pages(self, seg: _Seg, first: int, last: int, wanted: list[int]) -> dict[int, np.ndarray]:
        f = seg.footer
        base = f.page_range(first)[0]
        raw = memoryview(self._get_range(seg.info["key"], base, f.page_range(last)[1]))
        self._count("get_bytes", len(raw))
        out = {}
        for g in range(first, last + 1):
            a, b = f.page_range(g)
            page = raw[a - base : b - base]
            if g in wanted:
                coldseg.verify_page(page, f, g, f"cold segment {seg.info['key']}")
                out[g] = coldseg.decode_page(page, f)
            self._cache_later(BlockCache.page_name(seg.sid, g), page)
        return out

    def _exact(self, want: list[tuple[_Seg, int]]) -> tuple[list[np.ndarray], dict[tuple[int, int], int], list[int]]:
        """Exact float32 vectors of format-2 rows ``(segment, object row)`` -> (vectors, the GET
        each page came in, bytes per GET)."""
        pages, got_in, run_bytes = self._pages([(seg, r // seg.footer.page_rows) for seg, r in want])
        out = [pages[(seg.sid, r // seg.footer.page_rows)][r % seg.footer.page_rows] for seg, r in want]
        return out, got_in, run_bytes

    def bounds(self, qs: np.ndarray, tab: _Table) -> tuple[np.ndarray, np.ndarray]:
        # float64: the expanded |q|^2 + |c|^2 - 2 q.c loses precision in float32 for large norms
        return coldseg.rank_and_bound(qs.astype(np.float64), tab.centroids, tab.csq, tab.radii, self.metric)

    def search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None, *,
                    nprobe: int | None = None, bounds: Sequence[float] | None = None) -> list[TierAnswer]:
        """Per query: the best ``k`` (ids, distances, locations, details), best first.
        ``bounds[i]``: the k-th best distance the other tiers found for query i (partitions that
        cannot beat it are skipped)."""
        if self.read_only:
            if self._refresh_error is not None:
                raise TierUnavailableError(f"cold tier: could not follow the writer's segments: "
                                           f"{self._refresh_error}", tier="cold")
            if not self.connected and self.catalog.cold_segments():
                self.connect()  # TierUnavailableError: a partial answer, never a silently empty one
        tab = self._tab() if self.connected else None
        m = len(qs)
        if tab is None:
            return [TierAnswer([], [], False, [], {"partitions": 0, "probed": 0, "skipped": 0, "gets": 0,
                                                   "bytes": 0, "cache_hits": 0, "fetched": 0, "rows": 0,
                                                   "budget_rows": 0, "pruned_all": False}) for _ in range(m)]
        qs = distance.prepare(self.metric, qs)
        rank, lb = self.bounds(qs, tab)
        total = len(tab.radii)
        budget = self.probe_budget(nprobe, tab)
        order = np.argsort(rank, axis=1, kind="stable")
        meta_skipped = 0
        if node != filters.TRUE:  # partitions whose metadata summary rules the filter out: never read
            ok = tab.may_match(node)
            meta_skipped = int(total - ok.sum())
            if meta_skipped:
                order = order[ok[order]].reshape(m, -1)
        cum = np.cumsum(tab.rows[order], axis=1)
        total = order.shape[1]
        at = np.zeros(m, np.int64)  # per query: how far down its ranking it has probed
        probed: list[list[int]] = [[] for _ in range(m)]
        skipped = np.zeros(m, np.int64)
        found: list[list[tuple[float, int, int]]] = [[] for _ in range(m)]  # (dist, iid, loc)
        # GETs, bytes, cache hits, partitions fetched, rows scanned, rerank GETs, rerank bytes, rows reranked
        counts = np.zeros((m, 8), np.int64)
        # format 2 scans int8 codes: keep more candidates than k, reranked on the exact vectors
        cap = max(1, k) if all(seg.footer.format < 2 for seg in tab.segs) else max(k, _RERANK, 2 * k)
        active = list(range(m))
        while active:
            # Global selection: each query takes its best-ranked partitions over ALL segments until
            # they hold ``budget`` rows (rows, not partitions: small segments have small partitions)
            take: dict[int, list[int]] = {}
            wanted: dict[tuple[int, int], tuple[_Seg, int]] = {}
            for i in active:
                a = int(at[i])
                reach = int(cum[i, a - 1]) if a else 0
                end = min(total, int(np.searchsorted(cum[i], reach + budget, side="left")) + 1)
                chunk = order[i, a:end]
                at[i] = end
                if bounds is not None and math.isfinite(bounds[i]):
                    keep = chunk[lb[i, chunk] <= bounds[i]]
                    skipped[i] += len(chunk) - len(keep)
                else:
                    keep = chunk
                take[i] = keep.tolist()
                probed[i] += take[i]
                for j in take[i]:
                    seg = tab.segs[tab.seg_of[j]]
                    wanted[(seg.sid, int(tab.part_of[j]))] = (seg, int(tab.part_of[j]))
            blocks, got_in, run_bytes = self._blocks(list(wanted.values()))
            keys = list(wanted)
            slot = {key: b for b, key in enumerate(keys)}
            blks = [blocks[key] for key in keys]
            masks = []  # kept alive for the scan (it reads them by address)
            mask_at = np.zeros(len(keys), np.intp)
            if node != filters.TRUE:
                for b, blk in enumerate(blks):
                    ok = np.ascontiguousarray(blk.mask(node, self.schema, self.catalog.metadata_of), np.uint8)
                    masks.append(ok)
                    mask_at[b] = ok.ctypes.data if len(ok) else 0
            vec_at = np.array([blk.scan[0] for blk in blks], np.intp)
            sqn_at = np.array([blk.scan[1] for blk in blks], np.intp)
            scale_at = np.array([blk.scan[2] for blk in blks], np.intp)
            nrows = np.array([len(blk.iids) for blk in blks], np.int64)
            qptr = np.zeros(len(active) + 1, np.int64)
            items = []
            for n_, i in enumerate(active):
                its = [slot[(tab.segs[tab.seg_of[j]].sid, int(tab.part_of[j]))] for j in take[i]]
                items += its
                qptr[n_ + 1] = len(items)
                c = counts[i]
                runs_seen: set[int] = set()
                for b in its:
                    run = got_in.get(keys[b])
                    if run is None:
                        c[2] += 1
                        continue
                    c[3] += 1
                    if run not in runs_seen:
                        runs_seen.add(run)
                        c[0] += 1
                        c[1] += run_bytes[run]
                c[4] += int(nrows[its].sum()) if its else 0
            if items:
                dist, bl, rw = kernels.cold_scan(qs[active], distance.code(self.metric), qptr, np.asarray(items, np.int64),
                                                 vec_at, sqn_at, scale_at, mask_at, nrows, cap)
            nxt = []
            for n_, i in enumerate(active):
                if items:
                    ok = bl[n_] >= 0
                    for d, b, r in zip(dist[n_, ok].tolist(), bl[n_, ok].tolist(), rw[n_, ok].tolist(), strict=True):
                        seg, p = wanted[keys[b]]
                        row = int(seg.footer.row_starts[p]) + r
                        # (distance or its estimate, iid, location, estimate?, segment, object row, |v|^2)
                        found[i].append((d, int(blks[b].iids[r]), location(seg.sid, row), blks[b].vectors is None,
                                         seg, row, float(blks[b].sqnorms[r])))
                # A selective filter can leave fewer than k matches in the budget's partitions:
                # keep probing (in rank order, another budget's worth) until k match or none are left.
                if node != filters.TRUE and len(found[i]) < k and at[i] < total:
                    nxt.append(i)
            active = nxt
        total += meta_skipped
        tops = [sorted(f, key=lambda t: t[0])[:cap] for f in found]
        self._rerank(qs, tops, counts)
        out = []
        for i in range(m):
            best = sorted(tops[i], key=lambda t: (t[0], t[2]))[:k]
            c = counts[i]
            out.append(TierAnswer([b[1] for b in best], [b[0] for b in best], False, [b[2] for b in best],
                        {"partitions": total, "probed": len(probed[i]), "skipped": int(skipped[i]),
                         "gets": int(c[0] + c[5]), "bytes": int(c[1] + c[6]), "cache_hits": int(c[2]),
                         "fetched": int(c[3]), "rows": int(c[4]), "budget_rows": int(min(budget, tab.total_rows)),
                         "reranked": int(c[7]), "rerank_gets": int(c[5]), "rerank_bytes": int(c[6]),
                         "meta_skipped": meta_skipped,
                         "pruned_all": bool(skipped[i]) and not probed[i]}))
        return out

    def _rerank(self, qs: np.ndarray, tops: list[list[tuple]], counts: np.ndarray) -> None:
        """Replace the code estimates among each query's candidates (format 2) by exact distances
        on the stored vectors, read in pages (one parallel round of coalesced GETs for the batch)."""
        want = {(t[4].sid, t[5]): (t[4], t[5]) for top in tops for t in top if t[3]}
        if not want:
            return
        vecs, got_in, run_bytes = self._exact(list(want.values()))
        vec_of = dict(zip(want, vecs, strict=True))
        for i, top in enumerate(tops):
            est = [t for t in top if t[3]]
            if not est:
                continue
            v = np.stack([vec_of[(t[4].sid, t[5])] for t in est])
            # stored vectors are not normalised: cosine divides by their norms (t[6] = |v|^2)
            d = distance.exact_prepared(self.metric, v, qs[i], np.array([t[6] for t in est], np.float32))
            tops[i] = [t for t in top if not t[3]] + [
                (dd, t[1], t[2], False, t[4], t[5], t[6]) for dd, t in zip(d.tolist(), est, strict=True)]
            runs = {r for r in (got_in.get((t[4].sid, t[5] // t[4].footer.page_rows)) for t in est) if r is not None}
            counts[i, 5] += len(runs)
            counts[i, 6] += sum(run_bytes[r] for r in runs)
            counts[i, 7] += len(est)

    def probe_budget(self, nprobe: int | None, tab: _Table) -> float:
        """Rows a query scans: ``nprobe`` (per query, else ``cold.nprobe``) partitions of the size a
        single segment of every cold row would have (k-means into ~sqrt(rows) partitions), i.e.
        about ``nprobe * sqrt(cold rows)`` -- the same for one segment or a hundred small ones.
        ``nprobe`` >= the live partitions: everything."""
        n = int(tab.total_rows)
        want = nprobe or self.cfg.nprobe
        if want >= len(tab.radii) or n == 0:
            return math.inf
        return want * n / coldseg.default_parts(n)

    def fetch(self, entries: Sequence[Entry]) -> dict[int, np.ndarray]:
        """The stored vectors of cold ``entries`` (internal id -> float32 vector)."""
        with self._lock:
            segs = dict(self.segs)
        wanted, where = {}, []
        for e in entries:
            seg = segs.get(e.seg)
            if seg is None:
                raise IntegrityError(f"cold segment {e.seg} named by the catalog for {e.uid!r} is not live")
            p = int(np.searchsorted(seg.footer.row_starts, e.pos, side="right")) - 1
            wanted[(seg.sid, p)] = (seg, p)
            where.append((e, seg, p))
        blocks, _, _ = self._blocks(list(wanted.values()))
        out = {}
        exact = []  # format 2: the vectors live in pages, the block only says whose row it is
        for e, seg, p in where:
            blk = blocks[(seg.sid, p)]
            r = e.pos - int(seg.footer.row_starts[p])
            if int(blk.iids[r]) != e.iid:
                raise IntegrityError(f"cold segment {seg.info['key']}: row {e.pos} holds another id than the catalog says")
            if blk.vectors is None:
                exact.append((e, seg))
            else:
                out[e.iid] = np.array(blk.vectors[r], np.float32)
        if exact:
            vecs, _, _ = self._exact([(seg, int(e.pos)) for e, seg in exact])
            for (e, _), v in zip(exact, vecs, strict=True):
                out[e.iid] = np.array(v, np.float32)
        return out

    # --- maintenance -------------------------------------------------------------------------------

    def segments(self) -> list[Any]:
        """The listed segments (a snapshot)."""
        with self._lock:
            return list(self.segs.values())

    def counter_snapshot(self) -> dict[str, int]:
        """The tier's I/O counters (GETs, PUTs, bytes, cache hits), read under their lock."""
        with self._lock:
            return dict(self.counters)

    def publish_removed(self, sids: set[int]) -> None:
        """A new manifest without ``sids`` (their rows moved to another segment first)."""
        self._publish({}, set(sids))

    def small_segments(self) -> int:
        """Live segments under a quarter of ``segment_size`` rows (what compaction would merge)."""
        with self._lock:
            return sum(s.info["rows"] < self.cfg.segment_size // 4 for s in self.segs.values())

    def live_rows(self) -> Counter:
        """Live cold rows per segment (one pass over the catalog)."""
        live: Counter = Counter()
        for batch in self.catalog.entry_batches(tiers=[TIER_COLD]):
            live.update(e.seg for e in batch)
        return live

    def unlist(self, sids: Sequence[int]) -> list[_Seg]:
        """Stop searching ``sids`` (their rows were flipped elsewhere). Queries that already took
        the partition table may still read them: call :meth:`retire` after the reader grace."""
        with self._lock:
            gone = [self.segs.pop(s) for s in sids if s in self.segs]
            self._table = None
        return gone

    def retire(self, gone: Sequence[_Seg]) -> int:
        """Delete unlisted segments' objects and local files, once no query can still read them.
        Returns bytes freed."""
        freed = 0
        if gone:
            self.settle()  # no queued cache write may re-create a block of a retired segment
        for seg in gone:
            self.cache.drop_segment(seg.sid)
            (self.root / "footers" / f"{seg.sid}.ftr").unlink(missing_ok=True)
            try:
                self._s3(lambda c, seg=seg: c.delete_object(Bucket=self.bucket, Key=seg.info["key"]))
                freed += seg.info["bytes"]
            except TierStoreError as exc:
                log.warning("cold tier: could not delete %s now (compact retries): %s", seg.info["key"], exc)
        return freed

    def collect_garbage(self) -> dict[str, int]:
        """Delete segment objects no manifest lists (crash leftovers) and all but the newest
        manifests. Call with no segment write in flight (the store's write lock)."""
        listed = {i["key"] for i in self.manifest.values()}
        orphans = [(k, s) for k, s in self._list("segments") if k not in listed]
        for k, _ in orphans:
            self._s3(lambda c, k=k: c.delete_object(Bucket=self.bucket, Key=k))
        manifests = sorted(k for k, _ in self._list("manifest"))[:-_KEEP_MANIFESTS]
        for k in manifests:
            self._s3(lambda c, k=k: c.delete_object(Bucket=self.bucket, Key=k))
        return {"orphans_deleted": len(orphans), "orphan_bytes": sum(s for _, s in orphans),
                "manifests_deleted": len(manifests)}

    def verify(self, deep: bool = True, repair: bool = False) -> dict[str, Any]:
        """Check manifest == catalog segments, every object's footer and block checksums (``deep``:
        downloads every object and checks every byte of it: header, blocks, records, footer,
        trailer; and every local footer and block cache file), and that each cold catalog entry
        names a row holding its id. A damaged cache file is dropped (or rewritten from S3): it is
        a problem, or with ``repair`` listed under ``repaired``. S3 holds the only copy of a cold
        segment: a damaged object is reported (``damaged``: segment -> partitions), not repaired."""
        self.connect()
        problems: list[str] = []
        seq, manifest = self._latest_manifest()
        registry = self.catalog.cold_segments()
        for s in sorted(set(registry) - set(manifest)):
            problems.append(f"segment {s} is in the catalog but not in manifest {seq}")
        for s in sorted(set(manifest) - set(registry)):
            problems.append(f"segment {s} is in manifest {seq} but not in the catalog")
        objects = dict(self._list("segments"))
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
                raw = self._s3(lambda c, key=key: c.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except IntegrityError as exc:
                problems.append(f"{what}: {exc}")
                damaged[sid] = ["footer"]
                continue
            checked_bytes += len(raw)
            errs, f = coldseg.check_object(raw, info["footer"], what)
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
        damaged one is dropped (a footer rewritten from S3). Returns what was fixed."""
        fixed = []
        for sid, info in sorted(registry.items()):
            path = self.root / "footers" / f"{sid}.ftr"
            try:
                ok = coldseg.checksum(path.read_bytes()) == info["footer"][2]
            except FileNotFoundError:
                continue
            if not ok:
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
                sid, page = int(sid_s), part_s.startswith("v")
                part = int(part_s[1:] if page else part_s)
                seg = segs.get(sid)
                if seg is None or part >= (seg.footer.pages if page else seg.footer.parts):
                    continue
                (coldseg.verify_page if page else coldseg.verify_block)(blk.read_bytes(), seg.footer, part, "")
            except (ValueError, OSError):
                continue  # not a cache file of ours, or evicted meanwhile
            except IntegrityError:
                self.cache.drop(blk.stem)  # never served again: the next query fetches it from S3
                what = f"page {part} of exact vectors" if page else f"block of partition {part}"
                fixed.append(f"cold segment {sid}: cached {what} ({blk.name}) was damaged "
                             "on local disk (dropped; fetched again from S3 when needed)")
        return fixed

    def drop_cache(self) -> None:
        """Empty the local block cache (benchmarks: measure cache-cold queries)."""
        self.settle()
        self.cache.clear()

    def settle(self) -> None:
        """Wait until fetched blocks queued for the disk cache are written."""
        self._writer.submit(lambda: None).result()

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


__all__ = ["BlockCache", "ColdTier", "Written", "parse_url"]
