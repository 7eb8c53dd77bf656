"""Hot tier on RediSearch (``hot.backend = "search"``): an HNSW index over one hash per vector.

Keys (``P`` = ``hot.prefix``): ``P idx``, the index (``FT.CREATE ... ON HASH PREFIX 1 P v:``), and
``P v:<16 hex>``, one hash per vector: ``__v`` (FLOAT32, or FLOAT16 with ``hot.vector_type =
"float16"``: then twice k is fetched and re-scored exactly on the catalog's float32 records),
``__ver`` (the catalog version it was written from) and the ``[schema]`` fields (tags joined
with :data:`filters.TAG_SEP`, hex-encoded; numbers). The shared machinery (verify, reconcile,
writes, stand-in) is :class:`~tierstore.tiers.hot.base.HotTier`'s; a Redis Cluster master is
a subclass of this one (:class:`~tierstore.tiers.hot.cluster_shard.ShardTier`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import redis

from ... import distance, filters
from ...costs import bytes_per_vector
from ...errors import TierUnavailableError
from ..protocol import TierAnswer
from .base import HotTier
from .common import CHUNK, as_dict, as_str, is_missing_index

_METRIC = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
# hot.vector_type -> (RediSearch TYPE, numpy dtype of the stored and queried bytes)
_VECTOR_TYPES = {"float32": ("FLOAT32", np.float32), "float16": ("FLOAT16", np.float16)}


class SearchHotTier(HotTier):
    """RediSearch-backed hot tier (``hot.backend = "search"``): an HNSW index over hashes."""

    backend = "search"

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.index = f"{self.prefix}idx"
        self.key_prefix = f"{self.prefix}v:"
        self._kp = self.key_prefix.encode()
        self._vtype, self._vdtype = _VECTOR_TYPES[self.cfg.vector_type]
        self._f16 = self._vdtype is np.float16

    def _stale_error(self, exc: redis.ResponseError) -> bool:
        return is_missing_index(exc)

    # --- index definition ----------------------------------------------------------------------

    def _create_index(self) -> None:
        vec = ["TYPE", self._vtype, "DIM", str(self.dim), "DISTANCE_METRIC", _METRIC[self.metric],
               "M", str(self.cfg.m), "EF_CONSTRUCTION", str(self.cfg.ef_construction),
               "EF_RUNTIME", str(self.cfg.ef_runtime)]
        args = ["FT.CREATE", self.index, "ON", "HASH", "PREFIX", "1", self.key_prefix, "STOPWORDS", "0",
                "SCHEMA", "__v", "VECTOR", "HNSW", str(len(vec)), *vec]
        for field, kind in sorted(self.schema.items()):
            if kind == "tag":
                args += [field, "TAG", "SEPARATOR", filters.TAG_SEP, "CASESENSITIVE"]
            else:
                args += [field, "NUMERIC"]
        self.r.execute_command(*args)
        self.stats["index_recreated"] += 1

    def _index_info(self) -> dict | None:
        try:
            return as_dict(self.r.execute_command("FT.INFO", self.index))
        except redis.ResponseError as exc:
            if is_missing_index(exc):
                return None
            raise

    def _index_matches(self, info: dict) -> bool:
        attrs = {}
        for a in info.get(b"attributes", []):
            a = as_dict(a)
            attrs[as_str(a.get(b"identifier"))] = a
        v = attrs.pop("__v", None)
        if v is None:
            return False
        want = {"dim": self.dim, "distance_metric": _METRIC[self.metric], "M": self.cfg.m,
                "ef_construction": self.cfg.ef_construction, "data_type": self._vtype}
        for k, expected in want.items():
            got = v.get(k.encode())
            if got is None or as_str(got).upper() != str(expected).upper():
                return False
        have = {name: as_str(a.get(b"type")).lower() for name, a in attrs.items()}
        return have == self.schema

    def _check_index(self) -> None:
        info = self._index_info()
        if info is not None and not self._index_matches(info):
            if self._vector_type_of(info) not in (None, self._vtype):
                # hot.vector_type changed: the hashes hold the other type's bytes. Drop them with
                # the index; verify's count check then re-adds every vector from the catalog.
                self._reset_index()
                return
            # m / ef_construction / schema changed in the config: re-index in place.
            self.r.execute_command("FT.DROPINDEX", self.index)
            info = None
        if info is None:
            self._create_index()  # existing hashes are indexed in the background
        self._wait_indexed()

    def _wait_indexed(self) -> None:
        deadline = time.monotonic() + self.cfg.index_wait
        while True:
            info = self._index_info() or {}
            done = float(as_str(info.get(b"percent_indexed", b"1"))) >= 1.0 and int(info.get(b"indexing", 0)) == 0
            if done:
                return
            if time.monotonic() > deadline:
                raise TierUnavailableError(
                    f"hot tier: Redis is still indexing after {self.cfg.index_wait:.0f}s "
                    f"({100 * float(as_str(info.get(b'percent_indexed', b'0'))):.0f}% done); try again later "
                    "or raise hot.index_wait", tier="hot")
            time.sleep(0.05)

    @staticmethod
    def _vector_type_of(info: dict) -> str | None:
        for a in info.get(b"attributes", []):
            a = as_dict(a)
            if as_str(a.get(b"identifier")) == "__v":
                return as_str(a.get(b"data_type", b"")).upper() or None
        return None

    def bytes_per_vector(self) -> int:
        full = bytes_per_vector("hot", self.dim, self.cfg.m)
        return full - 4 * self.dim if self._f16 else full  # the vector twice (hash + index) at 2 B

    def _drop_index_and_keys(self) -> None:
        """Drop this tier's index and delete the vector keys it holds."""
        try:
            self.r.execute_command("FT.DROPINDEX", self.index)
        except redis.ResponseError as exc:
            if not is_missing_index(exc):
                raise
        self._delete_keys(self.keys())

    def _reset_index(self) -> None:
        self._drop_index_and_keys()
        self._create_index()
        # FT.CREATE scans the keyspace in the background; hashes written while that scan runs
        # can be indexed twice (a duplicate HNSW node degrades recall), so wait for it first.
        self._wait_indexed()

    # --- writes --------------------------------------------------------------------------------

    def key(self, iid: int) -> str:
        return f"{self.key_prefix}{iid:016x}"

    def _put(self, pipe: redis.client.Pipeline, iid: int, vec: bytes, meta: dict[str, Any], version: int) -> None:
        if self._f16:
            vec = np.frombuffer(vec, dtype=np.float32).astype(np.float16).tobytes()
        mapping, absent = self._hash_fields(vec, meta)
        mapping["__ver"] = str(version)
        k = self.key(iid)
        pipe.hset(k, mapping=mapping)
        if absent:
            pipe.hdel(k, *absent)

    def _remove(self, pipe: redis.client.Pipeline, iid: int) -> None:
        pipe.unlink(self.key(iid))

    def _vectors(self, iids: Sequence[int]) -> list[np.ndarray | None]:
        pipe = self.r.pipeline(transaction=False)
        for iid in iids:
            pipe.hget(self.key(iid), "__v")
        return [None if v is None else np.frombuffer(v, self._vdtype) for v in pipe.execute()]

    def _same(self, want: np.ndarray, got: np.ndarray) -> bool:
        if self._f16:
            want = want.astype(np.float16)
        return got.shape == want.shape and bool(np.array_equal(got, want))

    def _versions(self, iids: Sequence[int]) -> list[int | None]:
        pipe = self.r.pipeline(transaction=False)
        for iid in iids:
            pipe.hget(self.key(iid), "__ver")
        return [None if v is None else int(v) for v in pipe.execute()]

    def _hash_fields(self, vec: bytes, meta: dict[str, Any]) -> tuple[dict[str, bytes | str], list[str]]:
        mapping: dict[str, bytes | str] = {"__v": vec}
        absent = []
        for field, kind in self.schema.items():
            value = meta.get(field)
            if value is None:
                absent.append(field)
            elif kind == "tag":
                mapping[field] = filters.TAG_SEP.join(filters.encode_tag(v) for v in filters.tag_values(value, field))
            else:
                mapping[field] = repr(float(value))
        return mapping, absent

    def _delete_keys(self, iids: Iterable[int]) -> None:
        keys = [self.key(i) for i in iids]
        for start in range(0, len(keys), 1000):
            self.r.unlink(*keys[start : start + 1000])

    # --- reads ---------------------------------------------------------------------------------

    def knn_command(self, q: np.ndarray, k: int, node: filters.Node, ef: int | None) -> list:
        """The FT.SEARCH command of one KNN query (its replies: :meth:`knn_answers`)."""
        pre = filters.to_redis(node)
        if self._f16:  # approximate distances: fetch more, re-score exactly (_exact)
            k, q = 2 * k, q.astype(np.float16)
        query = f"({pre})=>[KNN {k} @__v $q EF_RUNTIME {ef or self.cfg.ef_runtime} AS __d]"
        return ["FT.SEARCH", self.index, query, "PARAMS", "2", "q", q.tobytes(), "RETURN", "1", "__d",
                "SORTBY", "__d", "LIMIT", "0", str(k), "DIALECT", "2"]

    def knn_answers(self, qs: np.ndarray | Sequence[np.ndarray], replies: Sequence[Any], k: int) -> list[TierAnswer]:
        """The answers of :meth:`knn_command` replies, one per query (FLOAT16: re-scored exactly)."""
        answers = [self._parse(r) for r in replies]
        return [self._exact(q, a, k) for q, a in zip(qs, answers, strict=True)] if self._f16 else answers

    def _exact(self, q: np.ndarray, answer: TierAnswer, k: int) -> TierAnswer:
        """FLOAT16 answers: the best ``k`` by exact distance on the catalog's float32 vectors (a
        vector the catalog no longer holds keeps Redis's estimate: the query's check drops it)."""
        if not answer.iids:
            return answer
        iids, dists = distance.rerank_on_catalog(self.catalog, self.metric, q, answer.iids, answer.dists, k)
        return TierAnswer(iids, dists, answer.incomplete)

    def _parse(self, reply: Any) -> TierAnswer:
        reply = as_dict(reply)
        n = len(self._kp)
        iids, dists = [], []
        for row in reply.get(b"results", ()):
            iids.append(int(row[b"id"][n:], 16))
            dists.append(float(row[b"extra_attributes"][b"__d"]))
        warnings = reply.get(b"warning")
        timed_out = bool(warnings) and any(b"timeout" in w.lower() for w in warnings if isinstance(w, bytes))
        return TierAnswer(iids, dists, timed_out)

    def _search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Batch KNN in pipelined round trips."""
        if node == filters.FALSE:
            return [TierAnswer([], []) for _ in qs]
        if len(qs) == 1:  # one round trip without a pipeline: the common single-query path
            # the arguments name the index, which a verification may rename (a cluster shard's):
            # build them inside
            q = qs[0]
            return self.knn_answers(qs, [self.call(lambda: self.r.execute_command(*self.knn_command(q, k, node, ef)))], k)

        def run() -> list:
            out = []
            for start in range(0, len(qs), CHUNK):
                pipe = self.r.pipeline(transaction=False)
                for q in qs[start : start + CHUNK]:
                    pipe.execute_command(*self.knn_command(q, k, node, ef))
                out.extend(pipe.execute())
            return out

        return self.knn_answers(qs, self.call(run), k)

    # --- inspection ----------------------------------------------------------------------------

    def keys(self) -> set[int]:
        out = set()
        n = len(self._kp)
        for k in self.r.scan_iter(match=self.key_prefix + "*", count=5000):
            out.add(int(k[n:], 16))
        return out

    def count(self) -> int:
        info = self._index_info()
        return int(info.get(b"num_docs", 0)) if info else 0

    def info(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            info = self._index_info() or {}
            mem = self.r.info("memory")
            return {
                "backend": "search",
                "index": self.index,
                "num_docs": int(info.get(b"num_docs", 0)),
                "vector_index_bytes": int(float(as_str(info.get(b"vector_index_sz_mb", b"0"))) * 2**20),
                "redis_used_memory": int(mem.get("used_memory", 0)),
                "redis_used_memory_human": as_str(mem.get("used_memory_human", "")),
                **self.stats,
            }

        return self.call(run)


__all__ = ["SearchHotTier"]
