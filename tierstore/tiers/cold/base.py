"""What every part of the cold tier shares: the live segments (:class:`Seg`) and their partition
table (:class:`Table`), the S3 calls (errors mapped onto tierstore's), the ranged GETs of the
query path, and the I/O counters.

:class:`ColdBase` is the base of :class:`~.tier.ColdTier`, whose parts live in sibling modules:
``search`` (the query path) over ``reads`` (blocks, pages, stored vectors), ``writer`` (segment
writes, manifest, recovery, garbage) and ``tier`` (connecting, following a writer, verify, info). They share the state :meth:`ColdBase.__init__`
sets up; each part keeps its own helpers private.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import filters
from ...catalog import Catalog
from ...config import ColdConfig
from ...errors import IntegrityError, TierStoreError, TierUnavailableError
from . import format as fmt
from .blockcache import BlockCache

_WRITER_NICE = 10  # the cache writer's nice (see ColdBase.lower_writer_priority)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file so that another process never reads it half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Seg:
    """A live segment: its id, its record in the catalog and the manifest (object key, rows, bytes,
    where its footer is) and its parsed footer."""

    sid: int
    info: dict[str, Any]
    footer: fmt.Footer


@dataclass
class Table:
    """Every live partition, concatenated across segments, for one matrix product per query."""

    segs: list[Seg]
    centroids: np.ndarray  # (P, dim) float32
    csq: np.ndarray  # squared norms of the centroids (float64)
    radii: np.ndarray  # float64
    seg_of: np.ndarray  # index into segs
    part_of: np.ndarray  # partition number inside its segment
    rows: np.ndarray  # rows of each partition (int64)
    total_rows: int
    possible: dict[Any, np.ndarray] = field(default_factory=dict)  # filter -> partitions it may match
    _lists: tuple[list[Seg], list[int]] | None = None
    _c64: np.ndarray | None = None

    def centroids64(self) -> np.ndarray:
        """The centroids in float64 (built once: the l2 and ip ranking need its precision)."""
        if self._c64 is None:
            self._c64 = self.centroids.astype(np.float64)
        return self._c64

    def lists(self) -> tuple[list[Seg], list[int]]:
        """(segment, partition number) of every table index as Python lists (built once: a query
        looks up each probed partition's, and numpy scalar indexing costs ~10x a list's)."""
        if self._lists is None:
            self._lists = ([self.segs[s] for s in self.seg_of.tolist()], self.part_of.tolist())
        return self._lists

    def may_match(self, node: filters.Node) -> np.ndarray:
        """Partitions that can hold a row matching ``node`` (by the footers' metadata summaries)."""
        hit = self.possible.get(node)
        if hit is None:
            hit = np.array([fmt.may_match(node, self.segs[s].footer.summaries or {}, int(p))
                            for s, p in zip(self.seg_of.tolist(), self.part_of.tolist(), strict=True)], bool)
            if len(self.possible) < 256:
                self.possible[node] = hit
        return hit


class ColdBase:
    """The cold tier's shared state and S3 access (see the module docstring)."""

    def __init__(self, root: Path, catalog: Catalog, config: ColdConfig, schema: dict[str, str], metric: str,
                 bucket: str, prefix: str, read_only: bool) -> None:
        self.root = root
        self.read_only = read_only
        self.catalog, self.cfg, self.schema, self.metric = catalog, config, dict(schema), metric
        self.dim = catalog.dim
        self.bucket, self.prefix = bucket, prefix
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self._client: Any = None  # boto3's S3 client, once connected
        self._lock = threading.RLock()
        self.segs: dict[int, Seg] = {}
        self._table: Table | None = None
        self.cache = BlockCache(self.root / "cache", config.cache_size, shared=read_only)
        self._io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tierstore-s3")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierstore-cache")
        import urllib3

        self._http = urllib3.PoolManager(maxsize=16, retries=False,
                                         timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout))
        self._urls: dict[str, tuple[str, float]] = {}  # object key -> (presigned GET URL, expiry)
        self.counters = Counter()

    def connect(self) -> None:
        """Connect to S3 (:meth:`~.tier.ColdTier.connect`)."""
        raise NotImplementedError

    def tally(self, name: str, n: int) -> None:
        with self._lock:  # incremented from the I/O threads
            self.counters[name] += n

    def unavailable(self, exc: Exception) -> TierUnavailableError:
        return TierUnavailableError(f"cold tier (S3 {self.url}) unavailable: {type(exc).__name__}: {exc}",
                                    tier="cold")

    def s3(self, fn: Callable[[Any], Any]) -> Any:
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
            raise self.unavailable(exc) from exc
        except TierStoreError:
            raise
        except Exception as exc:  # connection refused, timeouts, ...
            raise self.unavailable(exc) from exc

    def list_keys(self, sub: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        token = None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": f"{self.prefix}/{sub}/"}
            if token:
                kw["ContinuationToken"] = token
            page = self.s3(lambda c, kw=kw: c.list_objects_v2(**kw))
            out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def get_range(self, key: str, start: int, end: int) -> bytes:
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
        raise self.unavailable(err or RuntimeError("no attempt made"))

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

    def relist(self, add: dict[int, Seg] | None = None, remove: Iterable[int] = ()) -> list[Seg]:
        """Change the segments queries search: stop searching ``remove``, search ``add`` (the
        partition table is rebuilt by the next query). Returns the removed segments."""
        with self._lock:
            gone = [self.segs.pop(s) for s in remove if s in self.segs]
            self.segs.update(add or {})
            self._table = None
        return gone

    def table(self) -> Table | None:
        """The partition table of the live segments (rebuilt after a change); None without any."""
        with self._lock:
            if self._table is None and self.segs:
                segs = list(self.segs.values())
                c = np.ascontiguousarray(np.concatenate([s.footer.centroids for s in segs]), np.float32)
                c64 = c.astype(np.float64)
                self._table = Table(
                    segs, c, np.einsum("ij,ij->i", c64, c64),
                    np.concatenate([s.footer.radii for s in segs]).astype(np.float64),
                    np.concatenate([np.full(s.footer.parts, i) for i, s in enumerate(segs)]),
                    np.concatenate([np.arange(s.footer.parts) for s in segs]),
                    np.concatenate([s.footer.counts for s in segs]).astype(np.int64),
                    sum(int(s.footer.rows) for s in segs))
            return self._table

    _writer_niced = False

    def lower_writer_priority(self) -> None:
        """(On the cache writer's thread) run it at nice ``_WRITER_NICE``: below queries, but
        not starved by a busy query loop (at nice 19 it fell seconds behind). Once per thread."""
        if not self._writer_niced:
            self._writer_niced = True
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _WRITER_NICE)

    def settle(self) -> None:
        """Wait until fetched blocks queued for the disk cache are written."""
        self._writer.submit(lambda: None).result()


__all__ = ["ColdBase", "Seg", "Table", "write_atomic"]
