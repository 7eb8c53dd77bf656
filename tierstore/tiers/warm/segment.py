"""Warm-tier segments: an immutable HNSW graph + int8 codes + exact vectors, memory-mapped.

A segment is a directory ``seg-<id>`` of plain ``.npy`` arrays (so any numpy can read it) and a
``meta.json``; the graph is built by hnswlib and converted, so the serving path never loads an
hnswlib index into process memory. Format version 1 (rows are hnswlib's internal order)::

    meta.json      {"format": 1, "n", "dim", "metric", "m", "m0", "entry", "max_level",
                    "code": "int8", "ef_construction", "created"}
    iids.npy       (n,) uint64    internal id of each row
    links0.npy     (n, m0) int32  layer-0 neighbours, -1 padded
    levels.npy     (n,) int8      top layer of each row
    upper_off.npy  (n + 1,) int64 row i's upper links start at upper[upper_off[i]], m per layer
    upper.npy      (total,) int32 layers 1..levels[i], -1 padded
    codes.npy      (n, dim) int8  per-dimension scalar quantisation: x_j ~ codes_j * scales_j
    scales.npy     (dim,) float32
    vectors.npy    (n, dim) float32 exact vectors (unit length under cosine) for the rerank
    sqnorms.npy    (n,) float32   squared norms (l2)
    checksums.txt  one line "<file> <bytes> <xxh3_64 hex>" per file above (meta.json included), then
                   "self <xxh3_64 hex of the preceding lines>": any changed byte of any file is seen

What a search touches: links0/levels/upper and codes (about (m0 * 4 + dim) bytes per visited
row) stay hot in the page cache; ``vectors`` is read for the ``rerank`` best rows only.

Writes are crash-safe: everything goes to ``seg-<id>.tmp``, each file and the directory are
fsynced, then the directory is renamed into place (and the parent fsynced); only then does the
caller record the segment in the catalog. A ``.tmp`` directory left by a crash is deleted on open.
``checksums.txt`` is written last, before the rename; :meth:`Segment.open` checks every file
against it the first time a process maps the segment (:func:`check_files`), and
:meth:`Segment.verify_files` re-reads them from disk (``verify --deep``). A segment written before
checksums existed has no such file: it opens (``checksums`` is None) and reports "no checksums".

>>> import numpy as np, tempfile, os
>>> rng = np.random.default_rng(0); x = rng.standard_normal((500, 16)).astype(np.float32)
>>> x /= np.linalg.norm(x, axis=1, keepdims=True)
>>> d = os.path.join(tempfile.mkdtemp(), "seg-00000001")
>>> seg = Segment.open(write_segment(d, np.arange(500, dtype=np.uint64), x, metric="cosine"))
>>> rows, dist = seg.search(x[7], k=3, ef=32)
>>> int(seg.iids[rows[0]]), round(float(dist[0]), 4)
(7, 0.0)
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hnswlib
import numba
import numpy as np
import xxhash

from ... import distance, kernels
from ...errors import IntegrityError

FORMAT = 1
_BEAM_CAP = 16  # a masked walk's beam is at most this many times ef (see Segment.filtered_plan)
_ARRAYS = ("iids", "links0", "levels", "upper_off", "upper", "codes", "scales", "vectors", "sqnorms")
# hnswlib's saveIndex header (hnswalg.h): offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData (size_t), maxlevel (int), enterpoint (uint32),
# maxM, maxM0, M (size_t), mult (double), ef_construction (size_t)
_HNSWLIB_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
CHECKSUMS = "checksums.txt"
FILES = (*(f"{a}.npy" for a in _ARRAYS), "meta.json")  # what checksums.txt covers
_CHUNK = 8 * 1024**2
_ROWS = 8192  # rows per step when quantising (bounds the float temporaries)
EXPORT_PREFIX = ".export-"  # hnswlib files being exported into a segment (exported())


# --- building ---------------------------------------------------------------------------------------


def new_index(dim: int, metric: str, capacity: int, m: int, ef_construction: int, seed: int = 100) -> hnswlib.Index:
    """An empty hnswlib index in the space matching ``metric`` ("ip" = 1 - dot: cosine on unit
    vectors, and ip)."""
    index = hnswlib.Index(space="l2" if metric == "l2" else "ip", dim=dim)
    index.init_index(max_elements=max(capacity, 1), M=m, ef_construction=ef_construction, random_seed=seed,
                     allow_replace_deleted=False)
    return index


def export_graph(index: hnswlib.Index, dim: int) -> dict[str, Any]:
    """An hnswlib index (in RAM) as segment arrays, via its own on-disk format."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "graph.bin")
        index.save_index(path)
        with open(path, "rb") as fh:
            raw = fh.read()
    return parse_hnswlib(raw, dim)


@contextlib.contextmanager
def exported(index: hnswlib.Index, dim: int, workdir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """:func:`export_graph` without the heap copies: hnswlib's file goes to a temporary file in
    ``workdir`` (the segment's own disk, named ``.export-*``; an open deletes leftovers) and is
    read through a memory map, so the graph's vectors stay file-backed page cache while
    :func:`write_graph` streams them into the segment (reading the file into a bytes object and
    copying the vectors out held ~3 copies of them on the heap: ~500 MB for 100k rows at 384-d).
    The arrays stay valid after the block (the mapping outlives the deleted file)."""
    fd, path = tempfile.mkstemp(prefix=EXPORT_PREFIX, suffix=".bin", dir=workdir)
    os.close(fd)
    try:
        index.save_index(path)
        del index  # (the caller may drop its reference now: the graph is in the file)
        with open(path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        yield parse_hnswlib(mm, dim, copy=False)
    finally:
        os.unlink(path)


def build_graph(vectors: np.ndarray, metric: str, m: int = 16, ef_construction: int = 200,
                threads: int = 1, seed: int = 100) -> dict[str, Any]:
    """Build an HNSW graph with hnswlib and return it as segment arrays (rows in hnswlib order)
    plus ``labels``: labels[row] = index into ``vectors``."""
    n, dim = vectors.shape
    index = new_index(dim, metric, n, m, ef_construction, seed)
    index.add_items(vectors, np.arange(n, dtype=np.int64), num_threads=threads)
    return export_graph(index, dim)


def parse_hnswlib(raw: Any, dim: int, copy: bool = True) -> dict[str, Any]:
    """Decode hnswlib's on-disk format (float spaces) into flat numpy arrays. ``copy=False``:
    ``vectors`` is a strided view into ``raw`` (a memory map, see :func:`exported`)."""
    (off0, _max_el, n, per_el, label_off, data_off, max_level, entry, max_m, max_m0, m, _mult,
     efc) = _HNSWLIB_HEADER.unpack_from(raw)
    if off0 != 0:
        raise IntegrityError(f"unexpected hnswlib layout (offsetLevel0 = {off0})")
    pos = _HNSWLIB_HEADER.size
    level0 = np.frombuffer(raw, np.uint8, count=n * per_el, offset=pos).reshape(n, per_el)
    pos += n * per_el
    counts0 = level0[:, 0:2].copy().view(np.uint16)[:, 0].astype(np.int64)
    links0 = level0[:, 4 : 4 + 4 * max_m0].copy().view(np.int32).reshape(n, max_m0)
    links0[np.arange(max_m0)[None, :] >= counts0[:, None]] = -1
    labels = level0[:, label_off : label_off + 8].copy().view(np.uint64)[:, 0].astype(np.int64)
    vectors = level0[:, data_off : data_off + 4 * dim]
    vectors = (vectors.copy() if copy else vectors).view(np.float32).reshape(n, dim)
    per_level = 4 + 4 * max_m
    levels = np.zeros(n, np.int8)
    upper_off = np.zeros(n + 1, np.int64)
    blocks: list[np.ndarray] = []
    total = 0
    for i in range(n):  # one pass over the per-element link-list records
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        lv = size // per_level
        levels[i] = lv
        upper_off[i] = total
        if lv:
            rec = np.frombuffer(raw, np.uint8, count=size, offset=pos).reshape(lv, per_level)
            cnt = rec[:, 0:2].copy().view(np.uint16)[:, 0].astype(np.int64)
            lk = rec[:, 4:].copy().view(np.int32).reshape(lv, max_m)
            lk[np.arange(max_m)[None, :] >= cnt[:, None]] = -1
            blocks.append(lk.reshape(-1))
            total += lv * max_m
        pos += size
    upper_off[n] = total
    upper = np.concatenate(blocks) if blocks else np.zeros(0, np.int32)
    return {"links0": links0, "levels": levels, "upper_off": upper_off, "upper": upper.astype(np.int32),
            "labels": labels, "vectors": vectors, "entry": int(entry), "max_level": int(max_level), "m": int(m),
            "m0": int(max_m0), "ef_construction": int(efc)}


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension symmetric int8 codes: x_j ~ codes_j * scales_j. (In chunks of rows: no
    float temporary of the whole array.)"""
    amax = np.zeros(vectors.shape[1], np.float32)
    for a in range(0, len(vectors), _ROWS):
        np.maximum(amax, np.abs(vectors[a : a + _ROWS]).max(axis=0), out=amax)
    if not len(vectors):
        amax[:] = 1.0
    scales = (np.where(amax > 0, amax, 1.0) / 127.0).astype(np.float32)
    codes = np.empty(vectors.shape, np.int8)
    for a in range(0, len(vectors), _ROWS):
        codes[a : a + _ROWS] = np.clip(np.rint(vectors[a : a + _ROWS] / scales), -127, 127)
    return codes, scales


def _sqnorms(vectors: np.ndarray) -> np.ndarray:
    out = np.empty(len(vectors), np.float32)
    for a in range(0, len(vectors), _ROWS):
        v = np.ascontiguousarray(vectors[a : a + _ROWS], np.float32)
        out[a : a + _ROWS] = np.einsum("ij,ij->i", v, v)
    return out


def write_segment(path: str | os.PathLike[str], iids: np.ndarray, vectors: np.ndarray, *, metric: str,
                  m: int = 16, ef_construction: int = 200, threads: int = 1) -> Path:
    """Build and durably write a segment directory at ``path`` (must not exist). ``vectors``
    must already be unit length for cosine. Returns the path."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    g = build_graph(vectors, metric, m, ef_construction, threads)
    return write_graph(path, np.asarray(iids, np.uint64)[g["labels"]], g, metric=metric)


def write_graph(path: str | os.PathLike[str], iids: np.ndarray, g: dict[str, Any], *, metric: str) -> Path:
    """Durably write an exported graph (``export_graph``) as a segment; ``iids`` in row order."""
    path = Path(path)
    g = dict(g)
    g.pop("labels", None)
    vec = g.pop("vectors")
    codes, scales = quantize(vec)
    arrays = {"iids": np.asarray(iids, np.uint64), "links0": g.pop("links0"), "levels": g.pop("levels"),
              "upper_off": g.pop("upper_off"), "upper": g.pop("upper"), "codes": codes, "scales": scales,
              "vectors": vec, "sqnorms": _sqnorms(vec)}
    meta = {"format": FORMAT, "n": int(len(vec)), "dim": int(vec.shape[1]), "metric": metric, "code": "int8",
            "created": time.time(), **g}
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, arr in arrays.items():
        _write_synced(tmp / f"{name}.npy", lambda fh, arr=arr: np.save(fh, arr, allow_pickle=False))
    _write_synced(tmp / "meta.json", lambda fh: fh.write(json.dumps(meta).encode()))
    write_checksums(tmp)  # last: a directory with a valid checksums file is complete
    _fsync_dir(tmp)
    os.rename(tmp, path)
    _fsync_dir(path.parent)
    return path


def _write_synced(path: Path, write: Any) -> None:
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- checksums ------------------------------------------------------------------------------------


def hash_file(path: Path) -> tuple[int, int]:
    """(size, xxh3_64) of a file, read in 8 MiB chunks (no mapping: pages stay in the page
    cache only, not in the process's resident set)."""
    h = xxhash.xxh3_64()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return size, h.intdigest()


def _checksums_text(sums: dict[str, tuple[int, int]]) -> bytes:
    body = "".join(f"{name} {size} {digest:016x}\n" for name, (size, digest) in sorted(sums.items())).encode()
    return body + f"self {xxhash.xxh3_64_intdigest(body):016x}\n".encode()


def write_checksums(path: str | os.PathLike[str]) -> dict[str, tuple[int, int]]:
    """Hash every segment file in directory ``path`` and durably write ``checksums.txt`` there
    (through a temporary file and a rename, so an existing one is replaced atomically)."""
    path = Path(path)
    sums = {name: hash_file(path / name) for name in FILES}
    tmp = path / (CHECKSUMS + ".tmp")
    _write_synced(tmp, lambda fh: fh.write(_checksums_text(sums)))
    os.replace(tmp, path / CHECKSUMS)
    return sums


def read_checksums(path: str | os.PathLike[str]) -> dict[str, tuple[int, int]] | None:
    """The checksum table of segment directory ``path``; None when it has none (written before
    checksums existed). IntegrityError when the table itself is damaged."""
    try:
        raw = (Path(path) / CHECKSUMS).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IntegrityError(f"{CHECKSUMS} unreadable ({exc})") from None
    try:
        lines = raw.decode("ascii").split("\n")
        sums = {}
        for line in lines[:-2]:
            name, size, digest = line.split(" ")
            sums[name] = (int(size), int(digest, 16))
    except ValueError:
        sums = None
    # the file must be exactly what these values write: one changed byte anywhere fails here
    if sums is None or _checksums_text(sums) != raw or set(sums) != set(FILES):
        raise IntegrityError(f"{CHECKSUMS} is damaged (its own checksum does not match)")
    return sums


def check_files(path: str | os.PathLike[str], sums: dict[str, tuple[int, int]],
                names: tuple[str, ...] = FILES) -> tuple[list[str], int]:
    """Compare ``names`` in directory ``path`` with the checksum table -> (problems, bytes read)."""
    problems, read = [], 0
    for name in names:
        size, digest = sums[name]
        try:
            got_size, got = hash_file(Path(path) / name)
        except OSError as exc:
            problems.append(f"{name}: unreadable ({exc.strerror or exc})")
            continue
        read += got_size
        if got_size != size:
            problems.append(f"{name}: {got_size} bytes, checksums.txt says {size}")
        elif got != digest:
            problems.append(f"{name}: checksum mismatch (xxh3_64 {got:016x}, expected {digest:016x})")
    return problems, read


# --- serving --------------------------------------------------------------------------------------


def search_each(search: Callable[..., tuple[np.ndarray, np.ndarray]], qs: np.ndarray, k: int, ef: int,
                rerank: int, ok: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``search(q, k, ef, rerank, ok)`` per query -> (rows, distances), each (len(qs), k), padded
    with -1 / inf: the batch form of a search that has no parallel kernel (exact scans)."""
    out_r = np.full((len(qs), k), -1, np.int64)
    out_d = np.full((len(qs), k), np.inf, np.float32)
    for i, q in enumerate(qs):
        r, d = search(q, k, ef, rerank, ok)
        out_r[i, : len(r)], out_d[i, : len(r)] = r, d
    return out_r, out_d


class Segment:
    """A sealed segment, memory-mapped read-only. Thread-safe: each searching thread gets its own
    visited-tag array."""

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.meta = meta
        self.n = int(meta["n"])
        self.metric = meta["metric"]
        self.metric_code = distance.code(self.metric)  # what the kernels branch on
        for name in _ARRAYS:
            setattr(self, name, arrays[name])
        self._local = threading.local()  # per searching thread: its visited-tag array (no lock needed)

    checksums: dict[str, tuple[int, int]] | None = None  # None: written before checksums existed

    @classmethod
    def open(cls, path: str | os.PathLike[str], check: bool = True) -> Segment:
        """Map a segment. ``check``: first compare every file with ``checksums.txt`` (the first
        map in a process; pass False for a segment this process has just written)."""
        path = Path(path)
        try:
            sums = read_checksums(path)
        except IntegrityError as exc:
            raise IntegrityError(f"warm segment {path}: {exc}") from None
        if sums is not None and check:
            problems, _ = check_files(path, sums)
            if problems:
                raise IntegrityError(f"warm segment {path}: {'; '.join(problems)}")
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"warm segment {path}: unreadable meta.json ({exc})") from None
        if meta.get("format") != FORMAT:
            raise IntegrityError(f"warm segment {path}: format {meta.get('format')} (this version reads {FORMAT})")
        arrays = {}
        for name in _ARRAYS:
            try:
                arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # a damaged header: ValueError, SyntaxError, tokenize.TokenError, ...
                raise IntegrityError(f"warm segment {path}: cannot map {name}.npy ({exc})") from None
        try:
            n, dim = int(meta["n"]), int(meta["dim"])
            want = {"iids": (n,), "links0": (n, int(meta["m0"])), "levels": (n,), "upper_off": (n + 1,),
                    "codes": (n, dim), "scales": (dim,), "vectors": (n, dim), "sqnorms": (n,)}
            distance.code(meta["metric"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"warm segment {path}: meta.json incomplete ({exc!r})") from None
        if any(arrays[a].shape != shape for a, shape in want.items()) or arrays["upper"].ndim != 1:
            raise IntegrityError(f"warm segment {path}: array shapes do not match meta.json")
        seg = cls(path, meta, arrays)
        seg.checksums = sums
        return seg

    def verify_files(self, full: bool = True) -> tuple[list[str], int]:
        """Re-read the segment's files from disk and compare them with ``checksums.txt`` (itself
        checked) -> (problems, bytes hashed). ``full=False``: the table, every file's size and
        meta.json only. A segment without checksums returns no problems (see ``checksums``)."""
        try:
            sums = read_checksums(self.path)
        except IntegrityError as exc:
            return [str(exc)], 0
        if sums is None:
            if self.checksums is not None:
                return [f"{CHECKSUMS} is missing"], 0
            return [f"{name}: missing" for name in FILES if not (self.path / name).is_file()], 0
        problems = [] if self.checksums in (None, sums) else [f"{CHECKSUMS} changed since it was mapped"]
        if full:
            more, read = check_files(self.path, sums)
            return problems + more, read
        for name in FILES:
            try:
                size = (self.path / name).stat().st_size
            except OSError as exc:
                problems.append(f"{name}: unreadable ({exc.strerror or exc})")
                continue
            if size != sums[name][0]:
                problems.append(f"{name}: {size} bytes, checksums.txt says {sums[name][0]}")
        more, read = check_files(self.path, sums, ("meta.json",))
        return problems + more, read

    def _visited(self) -> tuple[np.ndarray, int]:
        st = self._local
        if getattr(st, "visited", None) is None:
            st.visited = np.zeros(max(self.n, 1), np.uint32)
            st.tag = 0
        st.tag += 1
        if st.tag >= 2**32 - 1:  # wrap: clear and restart the tags
            st.visited[:] = 0
            st.tag = 1
        return st.visited, st.tag

    def filtered_plan(self, allowed: int, ef: int, k: int) -> int:
        """How a query with ``allowed`` eligible rows (a filter, dead rows) searches: 0 = an exact
        scan of them, else the beam width of the graph walk.

        The walk's beam holds ``ef`` rows of any kind, so a mask that keeps a share s of the rows
        leaves ~s*ef eligible ones in it: on random data (tests/unit/test_segment.py) an ef-64 walk
        found 0.70-0.87 of the filtered top 10 under 5-50% masks, where an unfiltered one finds
        0.89. The beam is widened to ef / s^1.5 (same data, s = 0.3 / 0.5 / 0.7 / 0.9: ef / s gave
        0.99 / 0.965 / 0.95 / 0.89, ef / s^1.5 1.0 / 0.985 / 0.96 / 0.90; ~4% more beam than ef at
        10% dead rows), at most ``_BEAM_CAP`` x ef: the walk's sorted lists cost more than
        linearly in their width. Where such a walk (~beam * m0 / 2 rows scored) costs more than
        scoring the allowed rows, or they are few (<= max(4 ef, k, n / 50)), they are scanned
        exactly (wordnet, 2.5-10% filters on 50k-row segments: recall 0.71-0.74 -> 1.0)."""
        if allowed <= max(4 * ef, k, self.n // 50):
            return 0
        wide = int(min(self.n, math.ceil(ef / (allowed / self.n) ** 1.5)))
        if allowed <= wide * int(self.links0.shape[1]) // 2:
            return 0
        return max(ef, min(wide, _BEAM_CAP * ef))

    def search(self, q: np.ndarray, k: int, ef: int, rerank: int = 64,
               ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and exact distances of the k nearest rows (with ``ok[row]`` when given)."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        if ok is not None:
            allowed = int(np.count_nonzero(ok))
            if allowed == 0:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            ef = self.filtered_plan(allowed, ef, k)
            if not ef:
                return kernels.exact_scan(q, self.vectors, np.flatnonzero(ok), self.metric_code, k)
        visited, tag = self._visited()
        rows, dist = kernels.hnsw_search(
            q, self.links0, self.levels, self.upper, self.upper_off, int(self.meta["m"]),
            int(self.meta["entry"]), int(self.meta["max_level"]), self.codes, self.scales, self.vectors,
            self.sqnorms, self.metric_code, np.empty(0, np.bool_) if ok is None else ok,
            max(ef, k), rerank, k, visited, tag)
        if ok is not None and len(rows) < k:
            # The walk found too few eligible rows (a mask that cuts the graph): fall back to exact.
            return kernels.exact_scan(q, self.vectors, np.flatnonzero(ok), self.metric_code, k)
        return rows, dist

    def search_batch(self, qs: np.ndarray, k: int, ef: int, rerank: int = 64,
                     ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for many queries at once, in parallel threads (numba prange). Returns
        (rows, distances) of shape (len(qs), k), padded with -1 / inf."""
        qs = np.ascontiguousarray(qs, dtype=np.float32)
        if ok is not None:
            wide = self.filtered_plan(int(np.count_nonzero(ok)), ef, k)
            if not wide:
                return search_each(self.search, qs, k, ef, rerank, ok)
            ef = wide
        return kernels.hnsw_search_batch(
            qs, self.links0, self.levels, self.upper, self.upper_off, int(self.meta["m"]), int(self.meta["entry"]),
            int(self.meta["max_level"]), self.codes, self.scales, self.vectors, self.sqnorms, self.metric_code,
            np.empty(0, np.bool_) if ok is None else ok, max(ef, k), rerank, k, numba.get_num_threads())

    def resident_bytes(self) -> int:
        """What the traversal keeps hot: graph + codes (the exact vectors are touched rarely)."""
        return int(sum(getattr(self, a).nbytes for a in ("links0", "levels", "upper_off", "upper", "codes")))

    def disk_bytes(self) -> int:
        return int(sum(f.stat().st_size for f in self.path.iterdir()))


__all__ = ["CHECKSUMS", "FILES", "FORMAT", "Segment", "build_graph", "check_files", "export_graph", "exported", "hash_file",
           "new_index", "parse_hnswlib", "quantize", "read_checksums", "search_each", "write_checksums", "write_graph",
           "write_segment"]
