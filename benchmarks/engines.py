"""The engines ``benchmarks.compare`` puts side by side, each behind the same four calls.

Every engine is driven the way its users drive it, with its own client library:

- ``tierstore``: ``tierstore.open`` with a hot / warm / cold budget and the policy running;
- ``redis``: everything in Redis, a RediSearch HNSW index built and queried with redis-py
  (``FT.CREATE`` / pipelined ``HSET`` / ``FT.SEARCH KNN``), the same M / EF as tierstore's tiers;
- ``hnswlib``: everything in process RAM;
- ``lancedb-local`` / ``lancedb-s3``: a LanceDB table with an IVF_PQ index (refined with the
  stored vectors) on local disk or on the same S3 server tierstore's cold tier uses;
- ``exact``: numpy brute force (the ground truth, and the floor of what exactness costs).

An engine gets ``ingest(base, tags)`` once, then ``search(q, k, tag)`` (``tag``: an equality
filter on the one metadata field, or None), ``set_point(p)`` to move along its recall/latency
curve (``points``), and ``close()``. Each runs in its own process (see ``compare.worker``), so
its RAM is its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

M, EF_CONSTRUCTION, EF = 16, 200, 64  # the HNSW parameters every HNSW engine uses
TAG = "tag"  # the one metadata field filters use


class Engine:
    name = "?"
    points: list[dict[str, Any]] = [{}]  # settings along the recall/latency curve; [0] is the default
    label = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.dir = Path(spec["dir"])
        self.dir.mkdir(parents=True, exist_ok=True)

    def ingest(self, base: np.ndarray, tags: list[str]) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int, tag: str | None) -> list[int]:
        raise NotImplementedError

    def set_point(self, p: dict[str, Any]) -> None:
        self.point = p

    def server_memory(self) -> dict[str, int]:
        """Memory held outside this process on the engine's behalf (Redis)."""
        return {}

    def disk_bytes(self) -> int:
        return _du(self.dir)

    def details(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):  # a file removed while walking
                total += os.lstat(os.path.join(root, f)).st_blocks * 512  # bytes on disk, not apparent size
    return total


def _normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --- exact -------------------------------------------------------------------------------------


class Exact(Engine):
    name, label = "exact", "numpy brute force (exact)"

    def ingest(self, base: np.ndarray, tags: list[str]) -> None:
        self.base = _normalized(base)
        by_tag: dict[str, list[int]] = {}
        for i, t in enumerate(tags):
            by_tag.setdefault(t, []).append(i)
        self.rows = {t: np.asarray(r, np.int64) for t, r in by_tag.items()}

    def search(self, q: np.ndarray, k: int, tag: str | None) -> list[int]:
        q = q / np.linalg.norm(q)
        if tag is None:
            sims = self.base @ q
            rows = None
        else:
            rows = self.rows.get(tag, np.zeros(0, np.int64))
            sims = self.base[rows] @ q
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k] if k else np.zeros(0, np.int64)
        top = top[np.argsort(-sims[top], kind="stable")]
        return (top if rows is None else rows[top]).tolist()


# --- hnswlib -----------------------------------------------------------------------------------


class Hnswlib(Engine):
    name, label = "hnswlib", "hnswlib, all in process RAM"
    points = [{"ef": EF}, {"ef": 16}, {"ef": 32}, {"ef": 128}, {"ef": 256}]

    def ingest(self, base: np.ndarray, tags: list[str]) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="cosine", dim=base.shape[1])
        self.index.init_index(max_elements=len(base), M=M, ef_construction=EF_CONSTRUCTION)
        self.index.add_items(base, np.arange(len(base)), num_threads=os.cpu_count() or 1)
        self.tags = np.asarray(tags)
        self.set_point(self.points[0])

    def set_point(self, p: dict[str, Any]) -> None:
        super().set_point(p)
        self.index.set_ef(p["ef"])

    def search(self, q: np.ndarray, k: int, tag: str | None) -> list[int]:
        # hnswlib filters with a Python callback per visited node, which is what its users do.
        f = None if tag is None else (lambda label, tags=self.tags, tag=tag: tags[label] == tag)
        try:
            labels, _ = self.index.knn_query(q, k=k, filter=f, num_threads=1)
        except RuntimeError:  # fewer than k reachable matches
            return []
        return labels[0].tolist()

    def disk_bytes(self) -> int:
        return 0  # nothing persisted (saving the index would take about its RAM size on disk)


# --- all in Redis ------------------------------------------------------------------------------


class AllRedis(Engine):
    name, label = "redis", "all in Redis (RediSearch HNSW)"
    points = [{"ef": EF}, {"ef": 16}, {"ef": 32}, {"ef": 128}, {"ef": 256}]
    INDEX, PREFIX = "allvec", "v:"

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import redis

        self.r = redis.Redis.from_url(spec["redis_url"], protocol=2)  # flat FT.SEARCH replies
        self.point = self.points[0]

    def ingest(self, base: np.ndarray, tags: list[str]) -> None:
        self.r.execute_command(
            "FT.CREATE", self.INDEX, "ON", "HASH", "PREFIX", "1", self.PREFIX, "SCHEMA", TAG, "TAG",
            "v", "VECTOR", "HNSW", "12", "TYPE", "FLOAT32", "DIM", str(base.shape[1]), "DISTANCE_METRIC", "COSINE",
            "M", str(M), "EF_CONSTRUCTION", str(EF_CONSTRUCTION), "EF_RUNTIME", str(EF))
        base = np.ascontiguousarray(base, np.float32)
        for s in range(0, len(base), 1000):
            pipe = self.r.pipeline(transaction=False)
            for i in range(s, min(s + 1000, len(base))):
                pipe.hset(f"{self.PREFIX}{i}", mapping={"v": base[i].tobytes(), TAG: tags[i]})
            pipe.execute()

    def search(self, q: np.ndarray, k: int, tag: str | None) -> list[int]:
        pre = "*" if tag is None else f"@{TAG}:{{{_tag_escape(tag)}}}"
        reply = self.r.execute_command(
            "FT.SEARCH", self.INDEX, f"({pre})=>[KNN {k} @v $q EF_RUNTIME {self.point['ef']} AS d]",
            "PARAMS", "2", "q", np.asarray(q, np.float32).tobytes(), "RETURN", "1", "d", "SORTBY", "d",
            "LIMIT", "0", str(k), "DIALECT", "2")
        return [int(reply[i][len(self.PREFIX):]) for i in range(1, len(reply), 2)]

    def server_memory(self) -> dict[str, int]:
        info = self.r.info("memory")
        return {"redis_used_memory": int(info["used_memory"]), "redis_rss": int(info["used_memory_rss"])}

    def disk_bytes(self) -> int:
        return _du(Path(self.spec["redis_dir"]))  # the AOF: what Redis keeps on disk to survive a restart

    def close(self) -> None:
        self.r.close()


def _tag_escape(v: str) -> str:
    return "".join("\\" + c if not (c.isalnum() or c == "_") else c for c in v)


# --- tierstore ---------------------------------------------------------------------------------


class TierStore(Engine):
    name, label = "tierstore", "tierstore 10/30/60, policy on"
    points = [{"ef": EF, "nprobe": None}, {"ef": 16, "nprobe": 10}, {"ef": 32, "nprobe": 20},
              {"ef": 128, "nprobe": 80}, {"ef": 256, "nprobe": 160}]

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import tierstore

        n = spec["n"]
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = spec["s3_keys"]
        self.store = tierstore.open(
            path=str(self.dir / "store"), dim=spec["dim"], env={}, schema={TAG: "tag"},
            **({"repeat_cache": 0} if spec.get("no_repeats") else {}),
            hot={"redis_url": spec["redis_url"], "capacity": max(1, round(spec["hot_share"] * n)), "m": M,
                 "ef_construction": EF_CONSTRUCTION, "ef_runtime": EF},
            warm={"capacity": max(1, round(spec["warm_share"] * n)), "m": M, "ef_construction": EF_CONSTRUCTION,
                  "ef": EF},
            # segment sizes at their defaults (warm 200k rows, cold 100k): what a user gets
            cold={"url": f"s3://{spec['bucket']}/store", "endpoint_url": spec["s3_endpoint"]},
            # grace_period 0: the default (10 min) keeps freshly ingested vectors where ingest
            # put them, and this run is shorter than that.
            policy={"interval": spec["policy_interval"], "half_life": spec["policy_half_life"], "grace_period": 0})
        self.point = self.points[0]

    def ingest(self, base: np.ndarray, tags: list[str]) -> None:
        # Plain upserts: the store fills hot, then warm, then cold (ingest spill); the policy
        # moves vectors afterwards as the queries show what is popular.
        for s in range(0, len(base), 10_000):
            e = min(s + 10_000, len(base))
            self.store.upsert(list(range(s, e)), base[s:e], [{TAG: t} for t in tags[s:e]])
        self.store.flush()

    def search(self, q: np.ndarray, k: int, tag: str | None) -> list[int]:
        self.last = self.store.query(q, k=k, filter=None if tag is None else {TAG: tag}, ef=self.point["ef"],
                                     nprobe=self.point["nprobe"])
        return self.last.ids()

    def server_memory(self) -> dict[str, int]:
        info = self.store.hot.r.info("memory")
        return {"redis_used_memory": int(info["used_memory"]), "redis_rss": int(info["used_memory_rss"])}

    def disk_bytes(self) -> int:
        return _du(self.dir) + _du(Path(self.spec["redis_dir"]))

    def details(self) -> dict[str, Any]:
        st = self.store.stats()
        return {"tiers": {t: v.get("count") for t, v in st["tiers"].items()}, "policy": {
            k: st["policy"].get(k) for k in ("cycles", "moves_total", "last_cycle", "hit_ratio")},
            # cold searches whose early look decided, and those that stopped there (whole run)
            "cold_early": {k: st["tiers"].get("cold", {}).get(k, 0) for k in ("early_looks", "early_stops")}}

    def close(self) -> None:
        self.store.close()


# --- LanceDB -----------------------------------------------------------------------------------


class Lance(Engine):
    name, label = "lancedb-local", "LanceDB IVF_PQ, local disk"
    points = [{"nprobes": 20, "refine": 10}, {"nprobes": 5, "refine": 10}, {"nprobes": 10, "refine": 10},
              {"nprobes": 40, "refine": 10}, {"nprobes": 80, "refine": 20}]

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import lancedb

        self.db = lancedb.connect(str(self.dir / "lance"))
        self.point = self.points[0]

    def ingest(self, base: np.ndarray, tags: list[str]) -> None:
        import pyarrow as pa
        from lancedb.index import IvfPq

        n, dim = base.shape
        data = pa.table({"id": np.arange(n, dtype=np.int64),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.ravel()), dim), TAG: tags})
        self.table = self.db.create_table("vectors", data=data, mode="overwrite")
        # LanceDB's guidance: ~sqrt(n) partitions, dim/8 sub-vectors (8 dims per 1-byte code).
        parts = max(8, int(np.sqrt(n)))
        self.table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=parts,
                                                       num_sub_vectors=dim // 8))
        self.table.create_scalar_index(TAG, index_type="BITMAP")
        # A fresh handle, as a serving process would open it.
        self.table = self.db.open_table("vectors")

    def search(self, q: np.ndarray, k: int, tag: str | None) -> list[int]:
        b = (self.table.search(q).distance_type("cosine").nprobes(self.point["nprobes"])
             .refine_factor(self.point["refine"]).limit(k).select(["id", "_distance"]))
        if tag is not None:
            b = b.where(f"{TAG} = '{tag}'", prefilter=True)
        return b.to_arrow()["id"].to_pylist()


class LanceS3(Lance):
    name, label = "lancedb-s3", "LanceDB IVF_PQ on S3"

    def __init__(self, spec: dict[str, Any]) -> None:
        Engine.__init__(self, spec)
        import lancedb

        key, secret = spec["s3_keys"]
        self.db = lancedb.connect(f"s3://{spec['bucket']}/lance", storage_options={
            "aws_access_key_id": key, "aws_secret_access_key": secret, "aws_endpoint": spec["s3_endpoint"],
            "aws_region": "us-east-1", "allow_http": "true"})
        self.point = self.points[0]


ENGINES: dict[str, type[Engine]] = {e.name: e for e in (TierStore, AllRedis, Hnswlib, Lance, LanceS3, Exact)}


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
