"""The configuration's sections: frozen dataclasses whose fields carry how they are parsed
(``spec(default, kind, **bounds)``), read by the loader."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .parse import HOT_BACKENDS, METRICS, SEARCH_VECTOR_TYPES, TIERS, VSET_QUANTIZATIONS


def spec(default: Any, kind: str, **kw: Any) -> Any:
    """A dataclass field carrying how to parse/validate it (kind + bounds + choices)."""
    return field(default=default, metadata={"kind": kind, **kw})


# --- sections --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where the data lives and the vector space."""

    path: str = spec("./tierstore-data", "str")
    dim: int = spec(0, "int", lo=1, hi=65536)
    metric: str = spec("cosine", "choice", choices=METRICS)
    # How the store is labelled in metrics (label store="..."); absent = the store's path.
    name: str | None = spec(None, "optstr")
    # Queries remembered for the repeat skip (0 = off): a query asked again searches only Redis
    # while warm and cold provably cannot change its answer (see engine.query.RepeatCache).
    repeat_cache: int = spec(10_000, "int", lo=0, hi=10_000_000)


@dataclass(frozen=True)
class HotConfig:
    """``[hot]``: the Redis HNSW tier. ``redis_url`` absent = an embedded redis-server."""

    redis_url: str | None = spec(None, "redis_url")
    # Redis Cluster (one RediSearch index per master, KNN fanned out and merged; see tiers/hot/cluster.py):
    # absent or "auto" = when the node at redis_url says cluster_enabled:1; true = require it.
    cluster: bool | None = spec(None, "optbool")
    # "search": RediSearch HNSW over hashes (FT.*); "vectorset": Redis 8 vector sets (VADD/VSIM,
    # cosine only); "auto" (the default, so an unset key can be told from an explicit "search"):
    # search when the server has the module, else vector sets. See hot.make_hot_tier.
    backend: str = spec("auto", "choice", choices=HOT_BACKENDS)
    # Vector-set element encoding (ignored by "search", which stores FLOAT32): "q8" int8 (the
    # Redis default: ~4x less memory than float32, recall barely changes; results are reranked
    # on the exact float32 vectors anyway), "noquant" float32, "bin" 1 bit per dimension
    # (fastest and smallest, lowest recall).
    quantization: str = spec("q8", "choice", choices=VSET_QUANTIZATIONS)
    # RediSearch vector type (ignored by "vectorset"): "float16" halves the vector bytes in Redis;
    # its distances are approximate, so the tier fetches 2k and re-scores them on the exact
    # float32 vectors from the catalog (answers keep exact distances).
    vector_type: str = spec("float32", "choice", choices=SEARCH_VECTOR_TYPES)
    # Hard limit: the hot tier never holds more (ingest beyond it spills to warm).
    capacity: int = spec(100_000, "int", lo=0)
    # Optional second limit in Redis memory (0 = none): capacity becomes
    # min(capacity, capacity_bytes / estimated bytes per hot vector); see policy.bytes_per_vector.
    capacity_bytes: int = spec(0, "size")
    m: int = spec(16, "int", lo=2, hi=512)
    ef_construction: int = spec(200, "int", lo=1, hi=100_000)
    ef_runtime: int = spec(64, "int", lo=1, hi=100_000)
    # Key namespace in Redis; absent = "ts:<first 8 hex digits of the store's uuid>:".
    prefix: str | None = spec(None, "optstr")
    socket_timeout: float = spec(10.0, "duration")
    # How long a query waits for Redis to finish (re)indexing after a restart before failing.
    index_wait: float = spec(300.0, "duration")


@dataclass(frozen=True)
class WarmConfig:
    """``[warm]``: memory-mapped HNSW segments on local disk."""

    # The warm budget: the policy keeps at most this many vectors warm (the rest go cold).
    capacity: int = spec(1_000_000, "int", lo=0)
    capacity_bytes: int = spec(0, "size")  # optional limit on local disk (0 = none)
    # Rows a sealed segment grows to (by merging); the growing segment, which lives in RAM
    # (~2 KB per row at 384 dimensions), is sealed at growing_size rows, and the maintenance
    # thread merges sealed segments with fewer than segment_size / 2 live rows into segments of
    # up to segment_size rows (growing_size >= segment_size: seal at segment_size, no merging).
    segment_size: int = spec(200_000, "int", lo=1)
    growing_size: int = spec(50_000, "int", lo=1)
    m: int = spec(16, "int", lo=2, hi=512)
    ef_construction: int = spec(200, "int", lo=1, hi=100_000)
    ef: int = spec(64, "int", lo=1, hi=100_000)
    # Candidates reranked with full-precision vectors = max(rerank, k).
    rerank: int = spec(64, "int", lo=1, hi=100_000)
    # Compact code the graph traversal reads: per-dimension int8 scalar quantisation (recall at
    # equal ef matched hnswlib's float32 graph walk in benchmarks.warm, so no float16 variant).
    code: str = spec("int8", "choice", choices=("int8",))
    compact_threshold: float = spec(0.3, "float", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class ColdConfig:
    """``[cold]``: partitioned immutable segments in S3."""

    url: str | None = spec(None, "optstr")
    enabled: bool = spec(True, "bool")
    endpoint_url: str | None = spec(None, "http_url")
    region: str | None = spec(None, "optstr")
    # a budget of rows, not partitions: ~nprobe * sqrt(cold rows), the best-ranked partitions over
    # all segments (tiers/cold/search.py, the probe budget); recall holds however the cold rows arrived
    nprobe: int = spec(56, "int", lo=1, hi=1_000_000)
    # When the faster tiers already hold k answers, a query first scans this share of its budget
    # (the best-ranked partitions) and stops there if no row it saw could enter the answer; else
    # it scans the rest. 0 = always the whole budget (tiers/cold/search.py, the early stop)
    early_stop: float = spec(0.25, "float", lo=0.0, hi=1.0)
    cache_size: int = spec(2 * 1024**3, "size")
    segment_size: int = spec(100_000, "int", lo=1)
    dtype: str = spec("float32", "choice", choices=("float32", "float16"))
    compact_threshold: float = spec(0.3, "float", lo=0.0, hi=1.0)
    # The store's maintenance thread merges cold's small segments (< segment_size / 4 rows, e.g.
    # one per ingest batch or policy demotion: fewer segments, fewer GETs per query) once this
    # many have piled up, whatever the policy does. 0 = only `compact()`.
    auto_compact_segments: int = spec(4, "int", lo=0)
    timeout: float = spec(10.0, "duration")
    max_attempts: int = spec(4, "int", lo=1, hi=20)


@dataclass(frozen=True)
class PolicyConfig:
    """``[policy]``: access-frequency placement."""

    # "auto": chosen by the policy among shadow half-lives measured in accesses (issue 18);
    # a duration: a fixed half-life in wall time
    half_life: float | str = spec("auto", "halflife")
    interval: float = spec(30.0, "duration")
    # promote on access between cycles, checked this often (0 = only at cycles). Short: every
    # access a newly popular vector serves from warm/cold before it is promoted is a slow one;
    # a check costs O(accesses since the last), so 10 checks/s cost nothing when idle
    promote_interval: float = spec(0.1, "duration")
    ingest_tier: str = spec("hot", "choice", choices=TIERS)
    hysteresis: float = spec(0.2, "float", lo=0.0, hi=10.0)
    # accesses (decayed) a vector must out-score an incumbent by, on top of the hysteresis factor,
    # to take its place in a tier: a move must be paid for by evidence, not by one access more
    # (without it, at 10% budgets most promotions swapped keys seen once for keys seen once)
    min_gain: float = spec(1.0, "float", lo=0.0, hi=1e6)
    max_moves_per_cycle: int = spec(50_000, "int", lo=0)
    grace_period: float = spec(600.0, "duration")
    access: str = spec("topk", "choice", choices=("topk", "top1"))
    # Vectors moved per batch (one Redis pipeline / warm insert / catalog flip per batch).
    batch_size: int = spec(5_000, "int", lo=1, hi=1_000_000)
    # Queries over which stats() reports the share of results served by each tier.
    hit_window: int = spec(10_000, "int", lo=1, hi=10_000_000)
    # Filters (DESIGN filter language over [schema] fields): matching vectors are kept in that
    # tier whatever their access counts, e.g. pin_hot = {tenant = "acme"}.
    pin_hot: dict | None = spec(None, "filter")
    pin_warm: dict | None = spec(None, "filter")
    pin_cold: dict | None = spec(None, "filter")


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the opt-in Prometheus HTTP exporter (the metrics themselves always exist:
    ``store.metrics.registry``)."""

    # Absent = no exporter. Set: serve /metrics on addr:port while the store is open (0 = any free port).
    port: int | None = spec(None, "optint", lo=0, hi=65535)
    addr: str = spec("127.0.0.1", "host")


SECTIONS: dict[str, type] = {
    "store": StoreConfig,
    "hot": HotConfig,
    "warm": WarmConfig,
    "cold": ColdConfig,
    "policy": PolicyConfig,
    "metrics": MetricsConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration. Build it with :func:`load_config`."""

    store: StoreConfig
    schema: Mapping[str, str]
    hot: HotConfig
    warm: WarmConfig
    cold: ColdConfig
    policy: PolicyConfig
    metrics: MetricsConfig = MetricsConfig()
    source: str | None = None  # the TOML file it came from, if any

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (TOML-shaped) of every setting, for ``stats`` and ``--json`` output."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        out["schema"] = dict(self.schema)
        return out
