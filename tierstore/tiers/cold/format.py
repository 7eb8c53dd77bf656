"""The cold segment object: one immutable S3 object per segment, partitioned by k-means.

Format 2 (written now; little-endian; every offset is from the start of the object)::

    header   16 B    b"TSCOLD\\x00\\x01", format version u32 (2), reserved u32
    block 0 .. P-1   one per partition, rows row_start[p] .. row_start[p+1]: what the scan reads
                       internal ids   u64   x n
                       squared norms  f32   x n      (of the stored, decoded vectors)
                       scales         f32   x n      (per row: codes * scale ~ the row)
                       codes          i8    x n x dim  (max-abs per row; of the unit vector under cosine)
                       columns        UTF-8 JSON {field: [value per row]} for the [schema] fields
    vectors          f32|f16 x rows x dim in row order (exactly as given): the exact rerank reads
                     them in pages of ``page_rows`` rows, each checked against ``vchecksums[g]``
    records, footer, trailer as in format 1; the footer's JSON adds "vectors": [offset, length],
    "page_rows" and "code": "int8-row", its arrays add vchecksums u64 (pages)

A query scans the codes of its probed partitions, then reads the exact vectors of only its best
candidates (a few pages, coalesced ranged GETs) and reranks them.

Format 1 (still read; ``build(..., version=1)`` writes it for tests)::

    header   16 B    b"TSCOLD\\x00\\x01", format version u32 (1), reserved u32
    block 0 .. P-1   one per partition, rows row_start[p] .. row_start[p+1]:
                       internal ids   u64   x n
                       squared norms  f32   x n      (of the stored, decoded vectors)
                       vectors        f32|f16 x n x dim  (exactly as given; cosine is not normalised)
                       columns        UTF-8 JSON {field: [value per row]} for the [schema] fields
    records          zlib(JSON [[user id, metadata], ...]) in row order: the segment is self-contained
    footer           u32 JSON length, JSON (shape, dtype, fields, array table), then 8-aligned arrays:
                       centroids f32 (P, dim), radii f32 (P), counts u32 (P),
                       offsets u64 (P + 1), row_starts u64 (P + 1), checksums u64 (P)
    trailer  32 B    footer offset u64, footer length u64, xxh3_64 of the footer u64, b"TSCOLD\\x00\\x01"

A query reads the footer once (it is cached locally), ranks partitions by centroid, and fetches a
partition with one ranged GET of ``offsets[p] .. offsets[p+1]``, checked against ``checksums[p]``
(xxh3_64). Under cosine the partitions, centroids and radii live in the unit-normalised space (a
query is normalised too); otherwise in the raw space. ``radii[p]`` is the largest Euclidean
distance from centroid p to a member, rounded up, which makes the pruning bound of the query path
(search.py) safe.

>>> import numpy as np, io
>>> x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
>>> blob = io.BytesIO()
>>> built = build(blob, np.arange(50, dtype=np.uint64), x, [{}] * 50, list(range(50)),
...               metric="l2", dtype="float32", fields=[], parts=5, segment_id=1, store="demo")
>>> f = parse_footer(blob.getvalue()[built.footer_offset:built.footer_offset + built.footer_length])
>>> f.parts, f.rows, int(f.counts.sum())
(5, 50, 50)
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import xxhash

from ... import coldkernels, filters, kernels
from ...errors import IntegrityError

FORMAT = 2  # written; 1 and 2 are read
PAGE_ROWS = 8  # format 2: exact vectors per checked page (dim 384 float32: 12 KiB)
MAGIC = b"TSCOLD\x00\x01"
HEADER = struct.Struct("<8sII")
TRAILER = struct.Struct("<QQQ8s")
_DTYPES = {"float32": np.float32, "float16": np.float16}


def checksum(data: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data)


# --- k-means ----------------------------------------------------------------------------------------


def _assign(x: np.ndarray, c: np.ndarray, x_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.empty(len(x), np.int32)
    dist = np.empty(len(x), np.float32)
    c_sq = np.einsum("ij,ij->i", c, c).astype(np.float32)
    ct = np.ascontiguousarray(c.T)
    for s in range(0, len(x), 8192):  # bounded temporary: 8192 x k floats
        kernels.nearest_centroid(x[s : s + 8192] @ ct, x_sq, c_sq, labels, dist, s)
    return labels, dist


def _seed(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on a small sample (8 rows per centroid): spread-out starting centroids,
    so well-separated groups are not merged by an unlucky random start."""
    pool = x if len(x) <= 8 * k else x[rng.choice(len(x), 8 * k, replace=False)]
    pool = pool.astype(np.float64)
    chosen = [int(rng.integers(len(pool)))]
    d2 = ((pool - pool[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        j = int(rng.choice(len(pool), p=d2 / total)) if total > 0 else int(rng.integers(len(pool)))
        chosen.append(j)
        d2 = np.minimum(d2, ((pool - pool[j]) ** 2).sum(1))
    return pool[chosen].astype(np.float32)


def kmeans(x: np.ndarray, k: int, iters: int = 12, seed: int = 0, per_centroid: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means -> (centroids (k', dim) float32, labels (n,) int32), k' <= k (empty clusters
    are dropped). Trains on a sample of ``per_centroid`` rows per centroid, then assigns every row
    and recomputes each centroid as the mean of its members (so radii are tight)."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    train = x if n <= per_centroid * k else x[np.sort(rng.choice(n, per_centroid * k, replace=False))]
    t_sq = np.einsum("ij,ij->i", train, train).astype(np.float32)
    c = _seed(train, k, rng)
    for _ in range(iters):
        labels, dist = _assign(train, c, t_sq)
        sums, counts = kernels.cluster_sums(train, labels, k)
        nonempty = counts > 0
        c[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        if not nonempty.all():  # re-seed empty clusters with the worst-served rows
            far = np.argsort(dist)[::-1][: int((~nonempty).sum())]
            c[~nonempty] = train[far]
    x_sq = np.einsum("ij,ij->i", x, x).astype(np.float32)
    labels, _ = _assign(x, c, x_sq)
    sums, counts = kernels.cluster_sums(x, labels, k)
    keep = np.flatnonzero(counts)
    c = (sums[keep] / counts[keep, None]).astype(np.float32)
    remap = np.full(k, -1, np.int32)
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    return c, remap[labels]


def _chain(points: np.ndarray, start: int) -> list[int]:
    """Greedy nearest-neighbour walk through ``points`` from ``start``."""
    left = np.ones(len(points), bool)
    out = [start]
    left[start] = False
    for _ in range(len(points) - 1):
        d = ((points - points[out[-1]]) ** 2).sum(1)
        d[~left] = np.inf
        j = int(np.argmin(d))
        out.append(j)
        left[j] = False
    return out


def layout_order(centroids: np.ndarray, seed: int = 0) -> np.ndarray:
    """An order of the partitions that keeps similar ones adjacent: centroids are grouped by a
    small k-means (~sqrt(P) groups), groups follow a nearest-neighbour walk, and partitions inside
    a group follow one too, starting next to where the previous group ended."""
    p = len(centroids)
    if p <= 2:
        return np.arange(p)
    gc, glabels = kmeans(np.ascontiguousarray(centroids, np.float32), max(1, round(math.sqrt(p))), seed=seed)
    out: list[int] = []
    for g in _chain(gc, int(np.argmin(gc[:, 0]))):
        members = np.flatnonzero(glabels == g)
        pts = centroids[members]
        first = 0 if not out else int(np.argmin(((pts - centroids[out[-1]]) ** 2).sum(1)))
        out += members[_chain(pts, first)].tolist()
    return np.asarray(out, np.int64)


def default_parts(n: int) -> int:
    """~sqrt(n) partitions (a few hundred rows each at 100k)."""
    return max(1, round(math.sqrt(n)))


# --- writing ----------------------------------------------------------------------------------------


@dataclass
class Built:
    """What :func:`build` wrote: the rows' order in the object and where the footer is."""

    order: np.ndarray  # row r of the object is input row order[r]
    size: int
    footer_offset: int
    footer_length: int
    footer_checksum: int
    parts: int


def build(out: BinaryIO, iids: np.ndarray, vectors: np.ndarray, metas: Sequence[dict[str, Any]],
          uids: Sequence[str | int], *, metric: str, dtype: str, fields: Sequence[str], parts: int | None = None,
          segment_id: int, store: str, version: int = FORMAT, kinds: dict[str, str] | None = None) -> Built:
    """Partition ``vectors`` and write one segment object to ``out`` (a file or buffer), in
    format ``version`` (2; 1 for tests of old segments). ``kinds`` (field -> "tag" | "numeric",
    the ``[schema]``): per-partition summaries of those fields go into the footer."""
    n, dim = vectors.shape
    if dtype == "float16":
        with np.errstate(over="ignore"):
            half = vectors.astype(np.float16)
        # values beyond float16's range (or rows that would round to all zeros) keep float32:
        # the footer records the dtype per segment, so readers follow
        if not np.isfinite(half).all() or not half.any(axis=1).all():
            dtype = "float32"
    stored = np.ascontiguousarray(vectors, dtype=_DTYPES[dtype])
    decoded = stored.astype(np.float32)  # what queries will score: partition the same values
    space = decoded / np.linalg.norm(decoded, axis=1, keepdims=True) if metric == "cosine" else decoded
    centroids, labels = kmeans(np.ascontiguousarray(space), parts or default_parts(n), seed=segment_id)
    # Lay out neighbouring partitions next to each other, so the partitions one query probes
    # tend to be adjacent in the object and can be read with fewer (coalesced) ranged GETs.
    layout = layout_order(centroids, seed=segment_id)
    rank = np.empty(len(layout), np.int32)
    rank[layout] = np.arange(len(layout), dtype=np.int32)
    centroids, labels = centroids[layout], rank[labels]
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    p = len(centroids)
    counts = np.bincount(labels, minlength=p).astype(np.uint32)
    row_starts = np.zeros(p + 1, np.uint64)
    row_starts[1:] = np.cumsum(counts)
    radii = kernels.cluster_radii(np.ascontiguousarray(space[order]), labels, centroids)
    radii = (radii * (1 + 1e-5) + 1e-6).astype(np.float32)  # round up: a bound must not undercut

    out.write(HEADER.pack(MAGIC, version, 0))
    pos = HEADER.size
    offsets = np.zeros(p + 1, np.uint64)
    sums = np.zeros(p, np.uint64)
    offsets[0] = pos
    sqn = np.einsum("ij,ij->i", decoded, decoded).astype(np.float32)
    if version >= 2:
        codes, scales = coldkernels.quantize_rows(np.ascontiguousarray(space))
    for j in range(p):
        rows = order[int(row_starts[j]) : int(row_starts[j + 1])]
        cols = {f: [metas[r].get(f) for r in rows.tolist()] for f in fields}
        body = ((scales[rows].tobytes(), codes[rows].tobytes()) if version >= 2 else (stored[rows].tobytes(),))
        block = b"".join((iids[rows].astype("<u8").tobytes(), sqn[rows].tobytes(), *body,
                          json.dumps(cols, separators=(",", ":")).encode()))
        out.write(block)
        sums[j] = checksum(block)
        pos += len(block)
        offsets[j + 1] = pos
    extra: dict[str, Any] = {"summaries": summarize(metas, order, row_starts, kinds or {})}
    extra_arrays: dict[str, np.ndarray] = {}
    if version >= 2:  # the exact vectors, in row order, checked per page
        region = stored[order].tobytes()
        row_bytes = dim * stored.itemsize
        page = PAGE_ROWS * row_bytes
        extra_arrays["vchecksums"] = np.array([checksum(region[g : g + page]) for g in range(0, len(region), page)],
                                              np.uint64)
        out.write(region)
        extra.update({"vectors": [pos, len(region)], "page_rows": PAGE_ROWS, "code": "int8-row"})
        pos += len(region)
    records = zlib.compress(json.dumps([[uids[r], metas[r]] for r in order.tolist()],
                                       separators=(",", ":")).encode(), 1)
    out.write(records)
    rec = [pos, len(records), checksum(records)]
    pos += len(records)
    arrays = {"centroids": centroids.astype("<f4"), "radii": radii, "counts": counts, "offsets": offsets,
              "row_starts": row_starts, "checksums": sums, **extra_arrays}
    table, blob, off = {}, io.BytesIO(), 0
    for name, a in arrays.items():
        raw = np.ascontiguousarray(a).tobytes()
        table[name] = [off, a.dtype.str, list(a.shape)]
        blob.write(raw + b"\0" * (-len(raw) % 8))
        off += len(raw) + (-len(raw) % 8)
    head = json.dumps({"format": version, "segment": segment_id, "store": store, "rows": n, "dim": dim,
                       "parts": p, "dtype": dtype, "metric": metric, "fields": list(fields), "records": rec,
                       "arrays": table, "created": time.time(), **extra}).encode()
    head += b" " * (-(4 + len(head)) % 8)
    footer = struct.pack("<I", len(head)) + head + blob.getvalue()
    out.write(footer)
    out.write(TRAILER.pack(pos, len(footer), checksum(footer), MAGIC))
    return Built(order, pos + len(footer) + TRAILER.size, pos, len(footer), checksum(footer), p)


_SUMMARY_TAGS = 64  # a partition with more distinct values of a tag field is summarised as "any"


def summarize(metas: Sequence[dict[str, Any]], order: np.ndarray, row_starts: np.ndarray,
              kinds: dict[str, str]) -> dict[str, Any]:
    """Per partition and ``[schema]`` field, what a filter needs to rule the partition out: the
    set of tag values (None: more than ``_SUMMARY_TAGS``, or unreadable: anything), or a
    numeric [min, max] ([] when no row has a value; None: unknown)."""
    out: dict[str, Any] = {}
    bounds = row_starts.tolist()
    for f, kind in sorted(kinds.items()):
        per: list[Any] = []
        for j in range(len(bounds) - 1):
            raw = [metas[r].get(f) for r in order[bounds[j] : bounds[j + 1]].tolist()]
            try:
                if kind == "tag":
                    vals = sorted({v for x in raw if x is not None for v in filters.tag_values(x, f)})
                    per.append(vals if len(vals) <= _SUMMARY_TAGS else None)
                else:
                    xs = [filters.numeric_value(x, f) for x in raw if x is not None]
                    per.append([min(xs), max(xs)] if xs else [])
            except Exception:  # noqa: BLE001 - a value the filter code rejects: no summary
                per.append(None)
        out[f] = {"kind": kind, "parts": per}
    return out


def may_match(node: filters.Node, summaries: dict[str, Any], part: int) -> bool:
    """False only when no row of partition ``part`` can satisfy ``node`` (the semantics of
    filters.matches; anything unknown -- a field without a summary, $ne -- may match)."""
    if isinstance(node, filters.Const):
        return node.value
    if isinstance(node, filters.And):
        return all(may_match(c, summaries, part) for c in node.children)
    if isinstance(node, filters.Or):
        return any(may_match(c, summaries, part) for c in node.children)
    s = summaries.get(node.field)
    if (node.op in filters.NEGATED or (node.op == "$exists" and not node.values[0]) or s is None
            or s.get("kind") != node.kind):
        return True
    have = s["parts"][part]
    if have is None:
        return True
    if node.kind == "tag":
        return any(v in have for v in node.values)
    if not have:
        return False  # no row has a value: a comparison ($exists: true too) is false for every row
    if node.op == "$exists":
        return True
    lo, hi = have
    if node.op in ("$eq", "$in"):
        return any(lo <= v <= hi for v in node.values)
    v = node.values[0]
    return {"$gt": hi > v, "$gte": hi >= v, "$lt": lo < v, "$lte": lo <= v}[node.op]


# --- reading ----------------------------------------------------------------------------------------


@dataclass
class Footer:
    """A segment's partition table (kept in RAM for every live segment: a few hundred KiB)."""

    segment: int
    rows: int
    dim: int
    parts: int
    dtype: str
    metric: str
    fields: list[str]
    records: list[int]
    centroids: np.ndarray
    radii: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    row_starts: np.ndarray
    checksums: np.ndarray
    format: int = 1
    vectors: tuple[int, int] = (0, 0)  # format 2: the exact vectors' region (offset, length)
    page_rows: int = 0
    vchecksums: np.ndarray | None = None  # format 2: xxh3_64 per page of exact vectors
    summaries: dict[str, Any] | None = None  # [schema] field -> per-partition summary (see summarize)

    @property
    def pages(self) -> int:
        return 0 if self.vchecksums is None else len(self.vchecksums)

    def page_range(self, g: int) -> tuple[int, int]:
        """Bytes [start, end) of page ``g`` of the exact vectors (the last page may be short)."""
        size = self.page_rows * self.dim * np.dtype(_DTYPES[self.dtype]).itemsize
        start = self.vectors[0] + g * size
        return start, min(start + size, self.vectors[0] + self.vectors[1])


def parse_trailer(raw: bytes, what: str) -> tuple[int, int, int]:
    off, length, sumv, magic = TRAILER.unpack(raw[-TRAILER.size :])
    if magic != MAGIC:
        raise IntegrityError(f"{what}: not a tierstore cold segment (bad trailer magic)")
    return off, length, sumv


def parse_footer(raw: bytes, expect_checksum: int | None = None, what: str = "cold segment") -> Footer:
    if expect_checksum is not None and checksum(raw) != expect_checksum:
        raise IntegrityError(f"{what}: footer checksum mismatch (object corrupted or replaced)")
    (hlen,) = struct.unpack_from("<I", raw)
    head = json.loads(raw[4 : 4 + hlen])
    if head["format"] > FORMAT:
        raise IntegrityError(f"{what}: written by a newer tierstore (format {head['format']})")
    base = 4 + hlen
    base += -base % 8
    arrays = {}
    for name, (off, dt, shape) in head["arrays"].items():
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(raw, dtype=np.dtype(dt), count=count, offset=base + off).reshape(shape).copy()
    return Footer(head["segment"], head["rows"], head["dim"], head["parts"], head["dtype"], head["metric"],
                  head["fields"], head["records"], format=int(head["format"]),
                  vectors=tuple(head.get("vectors", (0, 0))), page_rows=int(head.get("page_rows", 0)),
                  summaries=head.get("summaries") or {}, **arrays)


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0]) if a.size else 0


_MASKS_KEPT = 8  # filters whose masks a block keeps (1 byte per row each)


class Block:
    """One decoded partition: internal ids, squared norms, filter columns, and float32 vectors
    (format 1) or int8 codes with per-row scales (format 2: ``vectors`` is None)."""

    __slots__ = ("_columns", "_masks", "_raw_cols", "codes", "iids", "nbytes", "scales", "scan", "sqnorms", "vectors")

    def __init__(self, raw: bytes, n: int, dim: int, dtype: str, fmt: int = 1) -> None:
        self.iids = np.frombuffer(raw, np.uint64, n, 0)
        self.sqnorms = np.frombuffer(raw, np.float32, n, 8 * n)
        if fmt >= 2:
            self.vectors = None
            self.scales = np.frombuffer(raw, np.float32, n, 12 * n)
            self.codes = np.frombuffer(raw, np.int8, n * dim, 16 * n).reshape(n, dim)
            self._raw_cols = raw[(16 + dim) * n :]
            # what coldkernels.cold_scan reads, by address: (codes or vectors, squared norms, scales or 0)
            self.scan = (_address(self.codes), _address(self.sqnorms), _address(self.scales))
        else:
            item = np.dtype(_DTYPES[dtype]).itemsize
            vecs = np.frombuffer(raw, _DTYPES[dtype], n * dim, 12 * n).reshape(n, dim)
            self.vectors = vecs if dtype == "float32" else vecs.astype(np.float32)
            self.codes = self.scales = None
            self._raw_cols = raw[(12 + item * dim) * n :]
            self.scan = (_address(self.vectors), _address(self.sqnorms), 0)
        self._columns: dict[str, Any] | None = None
        self._masks: dict[filters.Node, np.ndarray] = {}  # the last few filters' masks (see mask)
        self.nbytes = len(raw)

    def mask(self, node: filters.Node, schema: dict[str, str],
             metas: Callable[[np.ndarray], list[dict]] | None = None) -> np.ndarray:
        """Rows satisfying ``node`` (bool; do not modify it). Columns come from the block; a field
        the block lacks (added to the schema after the segment was written) is read through
        ``metas`` (the catalog). The masks of the last ``_MASKS_KEPT`` filters are kept with the
        block: a filtered query probes dozens of blocks, and the same filters come back."""
        masks = self._masks
        if self._columns is not None and (hit := masks.get(node)) is not None and set(self._columns) == set(schema):
            return hit
        if self._columns is None or set(self._columns) != set(schema):  # built on first use
            masks = self._masks = {}
            raw = json.loads(bytes(self._raw_cols)) if len(self._raw_cols) else {}
            missing = [f for f in schema if f not in raw]
            if missing and metas is not None:
                rows = metas(self.iids)
                for f in missing:
                    raw[f] = [m.get(f) for m in rows]
            self._columns = {f: (filters.TagColumn if kind == "tag" else filters.NumericColumn).build(
                raw.get(f, [None] * len(self.iids)), f) for f, kind in schema.items()}
        hit = filters.mask(node, self._columns, len(self.iids))
        hit.flags.writeable = False
        if len(masks) >= _MASKS_KEPT:  # (a new dict, not an eviction: other threads may be reading it)
            masks = self._masks = {}
        masks[node] = hit
        return hit


def rank_and_bound(qs: np.ndarray, centroids: np.ndarray, csq: np.ndarray, radii: np.ndarray,
                   metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(rank, lower bound), each (queries, partitions). Rank orders partitions for probing (lower
    first: -q.c/|c| for cosine, -q.c for ip, the centroid distance for l2); the lower bound is a distance no member of the partition can beat, by the
    triangle inequality with the partition's radius r: cosine ``max(0, |q-c| - r)^2 / 2`` on unit
    vectors (``qs`` must be normalised), l2 ``max(0, |q-c| - r)^2``, ip ``1 - q.c - |q| r``.

    ``centroids`` float32 (what the cold tier passes under cosine: unit vectors, centroids of norm
    <= 1) or float64 (l2 and ip: large norms would leave a float32 *ranking* noise); ``csq`` their
    squared norms in float64. With float32 centroids the products are float32: a query reads the whole centroid
    table (1,900 x 384 at 600k cold rows: 2.9 MB instead of 5.8), and after a scan has flushed the
    CPU caches that read was most of this function's time. The bound stays a bound: a float32 dot
    product of n terms (q rounded to float32 too) is off by at most gamma_(n+1) |q| |c|, gamma_m =
    m u / (1 - m u), u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), and
    the bound is taken from the largest q.c that error allows."""
    dots = (qs.astype(centroids.dtype, copy=False) @ centroids.T).astype(np.float64)
    qsq = np.einsum("ij,ij->i", qs, qs, dtype=np.float64)[:, None]
    if centroids.dtype == np.float64:
        top = dots
    else:
        mu = (centroids.shape[1] + 1) * 2.0**-24
        top = dots + mu / (1.0 - mu) * np.sqrt(qsq) * np.sqrt(np.asarray(csq, np.float64))[None, :]
    if metric == "cosine":
        # Rank by q.c/|c| (the angle to the centroid). Within one segment this ranks like q.c (and
        # better than |q-c|: 0.942 vs 0.922 recall@10 at 32 of 316 partitions), but q.c favours
        # the partitions of small segments, whose means of fewer unit vectors are longer:
        # wordnet-minilm, 100k rows in 20 segments, a budget of 15.2k rows: recall@10 0.951 vs
        # 0.941 (100 segments: 0.952 vs 0.940; one segment: 0.963 vs 0.962).
        rank = -dots / np.sqrt(np.maximum(np.asarray(csq, np.float64), 1e-30))[None, :]
    if metric == "ip":
        qn = np.sqrt(qsq)
        return -dots, 1.0 - top - qn * radii[None, :] - 1e-5 * (1.0 + qn)
    # the distance to the centroid from the largest q.c the rounding allows (the smallest |q-c|)
    d2 = np.maximum(qsq + np.asarray(csq, np.float64)[None, :] - 2.0 * top, 0.0)
    # float32 products carry rounding error: shave a hair off the bound so it stays a bound
    gap = np.maximum(np.sqrt(d2) - radii[None, :] - 1e-5 * (1.0 + np.sqrt(qsq)), 0.0) ** 2
    if metric == "cosine":
        return rank, gap / 2.0
    if top is dots:
        return d2, gap
    return np.maximum(qsq + np.asarray(csq, np.float64)[None, :] - 2.0 * dots, 0.0), gap


def verify_block(raw: bytes, footer: Footer, part: int, what: str) -> None:
    if len(raw) != int(footer.offsets[part + 1] - footer.offsets[part]) or checksum(raw) != int(footer.checksums[part]):
        raise IntegrityError(f"{what}: partition {part} checksum mismatch (object corrupted)")


def verify_page(raw: bytes, footer: Footer, g: int, what: str) -> None:
    a, b = footer.page_range(g)
    if footer.vchecksums is None or len(raw) != b - a or checksum(raw) != int(footer.vchecksums[g]):
        raise IntegrityError(f"{what}: vectors page {g} checksum mismatch (object corrupted)")


def decode_page(raw: bytes, footer: Footer) -> np.ndarray:
    """A page of exact vectors as float32 (rows, dim)."""
    v = np.frombuffer(raw, _DTYPES[footer.dtype]).reshape(-1, footer.dim)
    return v if footer.dtype == "float32" else v.astype(np.float32)


def check_object(raw: bytes, footer_at: Sequence[int], what: str) -> tuple[list[str], Footer | None]:
    """Every byte of a whole segment object, given the catalog's ``(footer offset, length,
    checksum)`` -> (problems, the footer when it is intact). The header and the trailer must be
    exactly what :func:`build` writes for that footer; the footer, each block and the records
    must match their xxh3_64; and the footer's layout must cover the object without a gap."""
    problems: list[str] = []
    off, length, sumv = (int(x) for x in footer_at)
    head = bytes(raw[: HEADER.size])
    if head not in {HEADER.pack(MAGIC, v, 0) for v in range(1, FORMAT + 1)}:
        problems.append(f"{what}: header damaged")
    if bytes(raw[-TRAILER.size :]) != TRAILER.pack(off, length, sumv, MAGIC):
        problems.append(f"{what}: trailer damaged (it does not name the footer the catalog recorded)")
    if off + length + TRAILER.size != len(raw):
        problems.append(f"{what}: {len(raw)} bytes, expected {off + length + TRAILER.size}")
        return problems, None
    try:
        f = parse_footer(bytes(raw[off : off + length]), sumv, what)
    except IntegrityError as exc:
        return [*problems, str(exc)], None
    except (ValueError, KeyError, TypeError, struct.error) as exc:  # intact but not ours to read
        return [*problems, f"{what}: footer unreadable ({exc!r})"], None
    if not problems and head != HEADER.pack(MAGIC, f.format, 0):
        problems.append(f"{what}: header damaged")
    r0, rl, rs = (int(x) for x in f.records)
    v0, vl = (int(x) for x in f.vectors) if f.format >= 2 else (r0, 0)
    row_bytes = f.dim * np.dtype(_DTYPES[f.dtype]).itemsize
    if (int(f.offsets[0]) != HEADER.size or int(f.offsets[-1]) != v0 or v0 + vl != r0 or r0 + rl != off
            or (f.format >= 2 and (vl != f.rows * row_bytes or f.page_rows < 1
                                   or f.pages != -(-f.rows // f.page_rows)))):
        return [*problems, f"{what}: the footer's layout does not cover the object"], f
    view = memoryview(raw)
    for p in range(f.parts):
        if checksum(view[int(f.offsets[p]) : int(f.offsets[p + 1])]) != int(f.checksums[p]):
            problems.append(f"{what}: partition {p} (rows {int(f.row_starts[p])}..{int(f.row_starts[p + 1]) - 1}) "
                            "checksum mismatch")
    for g in range(f.pages):
        a, b = f.page_range(g)
        if checksum(view[a:b]) != int(f.vchecksums[g]):
            problems.append(f"{what}: vectors of rows {g * f.page_rows}..{min(f.rows, (g + 1) * f.page_rows) - 1} "
                            "checksum mismatch")
    if checksum(view[r0 : r0 + rl]) != rs:
        problems.append(f"{what}: records checksum mismatch")
    return problems, f


__all__ = ["FORMAT", "Block", "Built", "Footer", "build", "check_object", "checksum", "decode_page", "default_parts",
           "kmeans", "may_match", "parse_footer", "parse_trailer", "rank_and_bound", "summarize", "verify_block",
           "verify_page"]
