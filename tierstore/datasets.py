"""Datasets for the demo, tests and benchmarks: the real wordnet-minilm set, or generated data.

``wordnet-minilm`` is 100k WordNet glosses embedded with all-MiniLM-L6-v2 (384-d, normalized),
1,000 example-sentence queries and their exact top-100. When it is not present, clustered
Gaussian data stands in (real embeddings are clustered; uniform random data is not).

>>> ds = clustered(2000, 16, queries=10, seed=1)
>>> ds.base.shape, ds.gt.shape, bool(ds.gt[0, 0] == brute_force(ds.base, ds.queries[:1], 1)[0, 0])
((2000, 16), (10, 100), True)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WORDNET = "wordnet-minilm"


@dataclass
class Dataset:
    name: str
    base: np.ndarray  # (n, dim) float32
    queries: np.ndarray  # (q, dim) float32
    gt: np.ndarray  # (q, >=10) int rows of base, nearest first (cosine)
    metadata: list[dict] = field(default_factory=list)  # one per base row ({} when none)
    query_texts: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


def find_wordnet(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Where wordnet-minilm lives: ``explicit``, ``$TIERSTORE_DATA``, or ``shared/data`` next to
    the working directory or to this source checkout."""
    here = Path(__file__).resolve().parents[1]
    candidates = [explicit, os.environ.get("TIERSTORE_DATA")]
    for root in (Path.cwd(), here):
        candidates += [root / "../shared/data" / WORDNET, root / "shared/data" / WORDNET]
    for c in candidates:
        if c and (Path(c) / "base_f16.npy").exists():
            return Path(c).resolve()
    return None


def load_wordnet(path: str | os.PathLike[str], n: int | None = None, queries: int | None = None) -> Dataset:
    """The first ``n`` base rows (all by default) with metadata {pos, lexname, nlemmas}; ground
    truth from the file for the full set, recomputed by brute force for a prefix."""
    path = Path(path)
    base = np.load(path / "base_f16.npy", mmap_mode="r")
    n = base.shape[0] if n is None else min(n, base.shape[0])
    base = np.ascontiguousarray(base[:n], dtype=np.float32)
    qs = np.load(path / "queries_f32.npy")
    if queries is not None:
        qs = qs[:queries]
    qs = np.ascontiguousarray(qs, dtype=np.float32)
    gt = np.load(path / "gt_ids_i32.npy")[: len(qs)] if n == 100_000 else brute_force(base, qs, 100)
    metadata, titles = [], []
    with open(path / "base.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            row = json.loads(line)
            metadata.append({"pos": row["pos"], "lexname": row["lexname"], "nlemmas": len(row["lemmas"])})
            titles.append(row["title"])
    texts = []
    with open(path / "queries.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= len(qs):
                break
            texts.append(json.loads(line)["text"])
    return Dataset(WORDNET, base, qs, gt, metadata, texts, titles)


def clustered(n: int, dim: int, *, queries: int = 1000, clusters: int | None = None, seed: int = 0) -> Dataset:
    """Normalized Gaussian clusters; queries drawn near the same centres. Metadata: a ``cluster``
    tag and a numeric ``rank``."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(8, int(np.sqrt(n) / 4))
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    base = centres[labels] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    qlabels = rng.integers(0, clusters, queries)
    qs = centres[qlabels] + 0.6 * rng.standard_normal((queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    meta = [{"cluster": f"c{int(c)}", "rank": int(i % 1000)} for i, c in enumerate(labels)]
    return Dataset(f"clustered-{n}x{dim}", base, qs, brute_force(base, qs, min(100, n)), meta)


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Exact top-``k`` rows of ``base`` for each query (lower distance first), in blocks."""
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    else:
        b, q = base, queries
    out = np.empty((len(queries), k), dtype=np.int64)
    sq = (b * b).sum(axis=1) if metric == "l2" else None
    for s in range(0, len(q), 256):
        sims = q[s : s + 256] @ b.T
        d = (sq[None, :] - 2 * sims) if metric == "l2" else -sims
        part = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k]
        rows = np.take_along_axis(d, part, axis=1)
        out[s : s + 256] = np.take_along_axis(part, np.argsort(rows, axis=1, kind="stable"), axis=1)
    return out


def recall_at(found: list[list[int]], gt: np.ndarray, k: int = 10) -> float:
    """Mean |found[i][:k] & gt[i][:k]| / k."""
    hits = sum(len(set(f[:k]) & set(gt[i, :k].tolist())) for i, f in enumerate(found))
    return hits / (k * len(found)) if found else 0.0


__all__ = ["Dataset", "brute_force", "clustered", "find_wordnet", "load_wordnet", "recall_at"]
