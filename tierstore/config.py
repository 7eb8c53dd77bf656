"""Typed, validated configuration: TOML file -> environment -> keyword overrides.

Every key is optional except ``store.dim``. A wrong key or value raises :class:`ConfigError`
naming the key path, the bad value and what is allowed, e.g.
``hot.capacity: -5 is not allowed: must be an integer >= 0``.

Precedence (later wins): the TOML file (or dict), ``TIERSTORE_<SECTION>_<KEY>`` environment
variables, keyword overrides. A relative ``store.path`` in a file is resolved against the file's
directory, so a service finds its data whatever its working directory.

>>> cfg = load_config(store={"dim": 4}, hot={"capacity": 1000, "ef_runtime": "32"}, env={})
>>> cfg.store.dim, cfg.hot.capacity, cfg.hot.ef_runtime, cfg.policy.half_life
(4, 1000, 32, 'auto')
>>> load_config(store={"dim": 4}, hot={"capasity": 1}, env={})
Traceback (most recent call last):
...
tierstore.errors.ConfigError: hot.capasity: unknown key (did you mean 'capacity'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import filters
from .errors import ConfigError, TierStoreError

METRICS = ("cosine", "ip", "l2")
TIERS = ("hot", "warm", "cold")
FIELD_TYPES = ("tag", "numeric")
HOT_BACKENDS = ("auto", "search", "vectorset")
VSET_QUANTIZATIONS = ("q8", "noquant", "bin")
SEARCH_VECTOR_TYPES = ("float32", "float16")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


# --- value parsers: each takes (value, key_path) and returns the typed value or raises ------------


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path}: {value!r} is not allowed: {allowed}")


def parse_int(value: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    allowed = "must be an integer" + (f" >= {lo}" if lo is not None else "") + (
        f" and <= {hi}" if hi is not None else ""
    )
    if isinstance(value, bool):
        raise _fail(path, value, allowed)
    if isinstance(value, str):
        s = value.strip().replace("_", "")
        if not re.fullmatch(r"[+-]?\d+", s):
            raise _fail(path, value, allowed)
        value = int(s)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise _fail(path, value, allowed)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(path, value, allowed)
    return value


def parse_float(value: Any, path: str, lo: float | None = None, hi: float | None = None) -> float:
    allowed = "must be a number" + (f" >= {lo}" if lo is not None else "") + (
        f" and <= {hi}" if hi is not None else ""
    )
    if isinstance(value, bool):
        raise _fail(path, value, allowed)
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _fail(path, value, allowed) from None
    if not math.isfinite(out) or (lo is not None and out < lo) or (hi is not None and out > hi):
        raise _fail(path, value, allowed)
    return out


def parse_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise _fail(path, value, "must be true or false")


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, path: str) -> float:
    """'30s', '1h', '500ms', '2d', '0' or a number of seconds -> seconds (float)."""
    allowed = "must be a duration like '500ms', '30s', '5m', '1h', '2d' or a number of seconds >= 0"
    if isinstance(value, bool):
        raise _fail(path, value, allowed)
    if isinstance(value, int | float):
        try:
            out = float(value)
        except OverflowError:
            raise _fail(path, value, allowed) from None
        if out < 0 or not math.isfinite(out):
            raise _fail(path, value, allowed)
        return out
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*", value.lower())
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    raise _fail(path, value, allowed)


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(value: Any, path: str) -> int:
    """'2GiB', '512MB', '100k' or a number of bytes -> bytes (int)."""
    allowed = "must be a size like '512MiB', '2GiB', '10GB' or a number of bytes >= 0"
    if isinstance(value, bool):
        raise _fail(path, value, allowed)
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower().replace("_", ""))
        if m and m.group(2) in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise _fail(path, value, allowed)


def parse_choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise _fail(path, value, "must be one of " + ", ".join(repr(c) for c in choices))


def parse_str(value: Any, path: str, optional: bool = False) -> str | None:
    if value is None or (optional and isinstance(value, str) and value.strip() == ""):
        if optional:
            return None
        raise _fail(path, value, "must be a string")
    if not isinstance(value, str):
        raise _fail(path, value, "must be a string")
    return value


def parse_host(value: Any, path: str) -> str:
    """An IP address or a host name to bind to ('127.0.0.1', '0.0.0.0', '::', 'localhost')."""
    allowed = "must be an IP address or a host name, e.g. '127.0.0.1', '0.0.0.0' or 'localhost'"
    if not isinstance(value, str):
        raise _fail(path, value, allowed)
    s = value.strip()
    try:
        ipaddress.ip_address(s)
        return s
    except ValueError:
        pass
    if re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", s):
        return s
    raise _fail(path, value, allowed)


def _redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for error messages."""
    head, sep, tail = url.partition("://")
    userinfo, at, rest = tail.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{head}://{userinfo.split(':', 1)[0]}:***@{rest}"


def _url_port(u: Any) -> str | None:
    """Why the port of a parsed URL is wrong, or None when it is absent or fine."""
    try:
        port = u.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raw = u.netloc.rpartition("@")[2].rpartition(":")[2]
        return f"port {raw!r} is not a number in 1..65535"
    return None


def parse_redis_url(value: Any, path: str) -> str | None:
    """A Redis URL redis-py accepts: ``redis://[user:password@]host[:port][/db]``, ``rediss://``
    (TLS) or ``unix:///path/to/redis.sock[?db=N]``; absent/empty = None. Checked here so a typo
    is a ConfigError naming the key, not redis-py's ValueError (or a silent default) at open."""
    from urllib.parse import urlparse

    url = parse_str(value, path, optional=True)
    if url is None:
        return None
    form = "must look like 'redis://host:6379/0', 'rediss://host:6380/0' (TLS) or 'unix:///path/redis.sock'"
    u = urlparse(url.strip())
    why: str | None = None
    if u.scheme not in ("redis", "rediss", "unix") or not url.strip().startswith(f"{u.scheme}://"):
        why = "the scheme must be redis://, rediss:// or unix://"
    elif u.scheme == "unix":
        if not u.path:
            why = "a unix:// URL needs the socket's path (unix:///path/redis.sock)"
    elif not u.hostname:
        why = "no host"
    else:
        why = _url_port(u)
        if why is None and u.path.strip("/") and not u.path.strip("/").isdigit():
            why = f"the path {u.path!r} must be a database number (/0)"
    if why is None:
        import redis.connection

        try:
            redis.connection.parse_url(url.strip())
        except ValueError as exc:
            why = str(exc).rstrip(".")
    if why is not None:
        raise _fail(path, _redact(url), f"{why}; {form}")
    return url.strip()


def parse_http_url(value: Any, path: str) -> str | None:
    """An http(s) endpoint URL (``http://host[:port][/path]``); absent/empty = None."""
    from urllib.parse import urlparse

    url = parse_str(value, path, optional=True)
    if url is None:
        return None
    form = "must look like 'http://host:port' or 'https://host'"
    u = urlparse(url.strip())
    why: str | None = None
    if u.scheme not in ("http", "https") or not url.strip().startswith(f"{u.scheme}://"):
        why = "the scheme must be http:// or https://"
    elif not u.hostname or " " in url.strip():
        why = "no host" if not u.hostname else "it holds a space"
    else:
        why = _url_port(u)
    if why is not None:
        raise _fail(path, _redact(url), f"{why}; {form}")
    return url.strip()


def parse_filter_table(value: Any, path: str) -> dict[str, Any] | None:
    """A filter in the DESIGN filter language: a TOML table, or JSON text (environment
    variables). Its fields are checked against ``[schema]`` once the whole config is read."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            raise _fail(path, value, "must be a filter table such as {tenant = \"acme\"} (or JSON text)") from None
        if value is None:
            return None
    if not isinstance(value, Mapping) or not value:
        raise _fail(path, value, "must be a non-empty filter table such as {tenant = \"acme\"}")
    return dict(value)


def _spec(default: Any, kind: str, **kw: Any) -> Any:
    """A dataclass field carrying how to parse/validate it (kind + bounds + choices)."""
    return field(default=default, metadata={"kind": kind, **kw})


# --- sections --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where the data lives and the vector space."""

    path: str = _spec("./tierstore-data", "str")
    dim: int = _spec(0, "int", lo=1, hi=65536)
    metric: str = _spec("cosine", "choice", choices=METRICS)
    # How the store is labelled in metrics (label store="..."); absent = the store's path.
    name: str | None = _spec(None, "optstr")
    # Queries remembered for the repeat skip (0 = off): a query asked again searches only Redis
    # while warm and cold provably cannot change its answer (see query.RepeatCache).
    repeat_cache: int = _spec(10_000, "int", lo=0, hi=10_000_000)


@dataclass(frozen=True)
class HotConfig:
    """``[hot]``: the Redis HNSW tier. ``redis_url`` absent = an embedded redis-server."""

    redis_url: str | None = _spec(None, "redis_url")
    # Redis Cluster (one RediSearch index per master, KNN fanned out and merged; see hot_cluster):
    # absent or "auto" = when the node at redis_url says cluster_enabled:1; true = require it.
    cluster: bool | None = _spec(None, "optbool")
    # "search": RediSearch HNSW over hashes (FT.*); "vectorset": Redis 8 vector sets (VADD/VSIM,
    # cosine only); "auto" (the default, so an unset key can be told from an explicit "search"):
    # search when the server has the module, else vector sets. See hot.make_hot_tier.
    backend: str = _spec("auto", "choice", choices=HOT_BACKENDS)
    # Vector-set element encoding (ignored by "search", which stores FLOAT32): "q8" int8 (the
    # Redis default: ~4x less memory than float32, recall barely changes; results are reranked
    # on the exact float32 vectors anyway), "noquant" float32, "bin" 1 bit per dimension
    # (fastest and smallest, lowest recall).
    quantization: str = _spec("q8", "choice", choices=VSET_QUANTIZATIONS)
    # RediSearch vector type (ignored by "vectorset"): "float16" halves the vector bytes in Redis;
    # its distances are approximate, so the tier fetches 2k and re-scores them on the exact
    # float32 vectors from the catalog (answers keep exact distances).
    vector_type: str = _spec("float32", "choice", choices=SEARCH_VECTOR_TYPES)
    # Hard limit: the hot tier never holds more (ingest beyond it spills to warm).
    capacity: int = _spec(100_000, "int", lo=0)
    # Optional second limit in Redis memory (0 = none): capacity becomes
    # min(capacity, capacity_bytes / estimated bytes per hot vector); see policy.bytes_per_vector.
    capacity_bytes: int = _spec(0, "size")
    m: int = _spec(16, "int", lo=2, hi=512)
    ef_construction: int = _spec(200, "int", lo=1, hi=100_000)
    ef_runtime: int = _spec(64, "int", lo=1, hi=100_000)
    # Key namespace in Redis; absent = "ts:<first 8 hex digits of the store's uuid>:".
    prefix: str | None = _spec(None, "optstr")
    socket_timeout: float = _spec(10.0, "duration")
    # How long a query waits for Redis to finish (re)indexing after a restart before failing.
    index_wait: float = _spec(300.0, "duration")


@dataclass(frozen=True)
class WarmConfig:
    """``[warm]``: memory-mapped HNSW segments on local disk."""

    # The warm budget: the policy keeps at most this many vectors warm (the rest go cold).
    capacity: int = _spec(1_000_000, "int", lo=0)
    capacity_bytes: int = _spec(0, "size")  # optional limit on local disk (0 = none)
    segment_size: int = _spec(200_000, "int", lo=1)
    m: int = _spec(16, "int", lo=2, hi=512)
    ef_construction: int = _spec(200, "int", lo=1, hi=100_000)
    ef: int = _spec(64, "int", lo=1, hi=100_000)
    # Candidates reranked with full-precision vectors = max(rerank, k).
    rerank: int = _spec(64, "int", lo=1, hi=100_000)
    # Compact code the graph traversal reads: per-dimension int8 scalar quantisation (recall at
    # equal ef matched hnswlib's float32 graph walk in benchmarks.warm, so no float16 variant).
    code: str = _spec("int8", "choice", choices=("int8",))
    compact_threshold: float = _spec(0.3, "float", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class ColdConfig:
    """``[cold]``: partitioned immutable segments in S3."""

    url: str | None = _spec(None, "optstr")
    enabled: bool = _spec(True, "bool")
    endpoint_url: str | None = _spec(None, "http_url")
    region: str | None = _spec(None, "optstr")
    # a budget of rows, not partitions: ~nprobe * sqrt(cold rows), the best-ranked partitions over
    # all segments (cold.py ColdTier.probe_budget); recall holds however the cold rows arrived
    nprobe: int = _spec(56, "int", lo=1, hi=1_000_000)
    cache_size: int = _spec(2 * 1024**3, "size")
    segment_size: int = _spec(100_000, "int", lo=1)
    dtype: str = _spec("float32", "choice", choices=("float32", "float16"))
    compact_threshold: float = _spec(0.3, "float", lo=0.0, hi=1.0)
    # The policy's background cycle compacts cold (merges small segments: fewer, better-clustered
    # partitions, so nprobe reaches further) once this many small ones (< segment_size / 4 rows,
    # e.g. one per ingest batch or policy demotion) have piled up. 0 = only `compact()`.
    auto_compact_segments: int = _spec(4, "int", lo=0)
    timeout: float = _spec(10.0, "duration")
    max_attempts: int = _spec(4, "int", lo=1, hi=20)


@dataclass(frozen=True)
class PolicyConfig:
    """``[policy]``: access-frequency placement."""

    # "auto": chosen by the policy among shadow half-lives measured in accesses (issue 18);
    # a duration: a fixed half-life in wall time
    half_life: float | str = _spec("auto", "halflife")
    interval: float = _spec(30.0, "duration")
    # promote on access between cycles (checked this often; 0 = only at cycles)
    promote_interval: float = _spec(1.0, "duration")
    ingest_tier: str = _spec("hot", "choice", choices=TIERS)
    hysteresis: float = _spec(0.2, "float", lo=0.0, hi=10.0)
    max_moves_per_cycle: int = _spec(50_000, "int", lo=0)
    grace_period: float = _spec(600.0, "duration")
    access: str = _spec("topk", "choice", choices=("topk", "top1"))
    # Vectors moved per batch (one Redis pipeline / warm insert / catalog flip per batch).
    batch_size: int = _spec(5_000, "int", lo=1, hi=1_000_000)
    # Queries over which stats() reports the share of results served by each tier.
    hit_window: int = _spec(10_000, "int", lo=1, hi=10_000_000)
    # Filters (DESIGN filter language over [schema] fields): matching vectors are kept in that
    # tier whatever their access counts, e.g. pin_hot = {tenant = "acme"}.
    pin_hot: dict | None = _spec(None, "filter")
    pin_warm: dict | None = _spec(None, "filter")
    pin_cold: dict | None = _spec(None, "filter")


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the opt-in Prometheus HTTP exporter (the metrics themselves always exist:
    ``store.metrics.registry``)."""

    # Absent = no exporter. Set: serve /metrics on addr:port while the store is open (0 = any free port).
    port: int | None = _spec(None, "optint", lo=0, hi=65535)
    addr: str = _spec("127.0.0.1", "host")


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


# --- loading ---------------------------------------------------------------------------------------


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _parse_value(spec: dict[str, Any], value: Any, path: str) -> Any:
    kind = spec["kind"]
    if kind == "int":
        return parse_int(value, path, spec.get("lo"), spec.get("hi"))
    if kind == "float":
        return parse_float(value, path, spec.get("lo"), spec.get("hi"))
    if kind == "bool":
        return parse_bool(value, path)
    if kind == "duration":
        return parse_duration(value, path)
    if kind == "halflife":
        return "auto" if value == "auto" else parse_duration(value, path)
    if kind == "size":
        return parse_size(value, path)
    if kind == "choice":
        return parse_choice(value, path, spec["choices"])
    if kind == "str":
        return parse_str(value, path)
    if kind == "optstr":
        return parse_str(value, path, optional=True)
    if kind == "filter":
        return parse_filter_table(value, path)
    if kind == "optbool":  # None = auto
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
            return None
        if not isinstance(value, bool) and not (isinstance(value, str) and value.strip().lower() in
                                                ("1", "true", "yes", "on", "0", "false", "no", "off")):
            raise _fail(path, value, "must be true, false or \"auto\"")
        return parse_bool(value, path)
    if kind == "optint":
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        return parse_int(value, path, spec.get("lo"), spec.get("hi"))
    if kind == "host":
        return parse_host(value, path)
    if kind == "redis_url":
        return parse_redis_url(value, path)
    if kind == "http_url":
        return parse_http_url(value, path)
    raise AssertionError(kind)


def _build_section(name: str, raw: Any) -> Any:
    cls = SECTIONS[name]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: must be a table of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{name}.{key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown key{_suggest(key, list(fields))}")
        kwargs[key] = _parse_value(dict(fields[key].metadata), value, path)
    return cls(**kwargs)


def _build_schema(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"schema: must be a table of field = 'tag' | 'numeric', got {raw!r}")
    out = {}
    for key, value in raw.items():
        path = f"schema.{key}"
        if not isinstance(key, str) or not _FIELD_NAME.match(key) or key.startswith("__"):
            raise ConfigError(
                f"{path}: bad field name: must match [A-Za-z_][A-Za-z0-9_]* (max 64 chars) "
                "and must not start with '__' (reserved)"
            )
        out[key] = parse_choice(value, path, FIELD_TYPES)
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``TIERSTORE_HOT_CAPACITY=5`` -> {"hot": {"capacity": "5"}}; unknown names are errors."""
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("TIERSTORE_") or name in ("TIERSTORE_CONFIG",):
            continue
        rest = name[len("TIERSTORE_") :]
        section, _, key = rest.partition("_")
        # Section and key names are lower case; schema field names are case-sensitive.
        section = section.lower()
        key = key if section == "schema" else key.lower()
        if section not in SECTIONS and section != "schema":
            raise ConfigError(
                f"environment variable {name}: unknown section {section!r}"
                f"{_suggest(section, [*SECTIONS, 'schema'])}"
            )
        if not key:
            raise ConfigError(f"environment variable {name}: expected TIERSTORE_<SECTION>_<KEY>")
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for section, values in extra.items():
        if isinstance(values, Mapping):
            base.setdefault(section, {})
            if not isinstance(base[section], dict):
                raise ConfigError(f"{section}: must be a table of keys, got {base[section]!r}")
            base[section].update(values)
        else:
            base[section] = values


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build a validated :class:`Config`.

    ``source`` is a TOML file path, a TOML-shaped dict or an existing Config. ``overrides`` are
    either ``[store]`` keys given directly (``path=``, ``dim=``, ``metric=``) or
    whole sections (``hot={"capacity": 10}``, ``schema={"category": "tag"}``). ``env`` defaults
    to ``os.environ``.
    """
    raw: dict[str, Any] = {}
    base_dir: Path | None = None
    source_name: str | None = None
    if isinstance(source, Config):
        raw = source.to_dict()
        source_name = source.source
    elif isinstance(source, Mapping):
        _merge(raw, source)
    elif source is not None:
        file = Path(source)
        source_name = str(file)
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(file)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(file)!r} is not valid TOML: not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"config file {str(file)!r} cannot be read: {exc.strerror or exc}") from None
        _merge(raw, data)
        base_dir = file.resolve().parent
    for section in raw:
        if section not in SECTIONS and section != "schema":
            raise ConfigError(f"{section}: unknown section{_suggest(section, [*SECTIONS, 'schema'])}")

    _merge(raw, _env_overrides(os.environ if env is None else env))

    store_keys = {f.name for f in dataclasses.fields(StoreConfig)}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in store_keys:
            raw.setdefault("store", {})[key] = value
        elif key in SECTIONS or key == "schema":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: keyword override must be a dict of keys, got {value!r}")
            _merge(raw, {key: value})
        else:
            raise ConfigError(
                f"{key}: unknown option{_suggest(key, [*store_keys, *SECTIONS, 'schema'])}"
            )

    sections = {name: _build_section(name, raw.get(name, {})) for name in SECTIONS}
    schema = _build_schema(raw.get("schema", {}))
    store: StoreConfig = sections["store"]
    if "dim" not in raw.get("store", {}):
        raise ConfigError("store.dim: missing: the vector dimension is required (e.g. dim = 384)")
    path = Path(os.path.expanduser(store.path))
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    sections["store"] = dataclasses.replace(store, path=str(path.resolve()))

    hot: HotConfig = sections["hot"]
    if hot.backend == "vectorset" and sections["store"].metric != "cosine":
        # Vector sets normalise every vector at insert: only cosine similarity is exact.
        raise _fail("hot.backend", "vectorset", f"vector sets only support store.metric = 'cosine' "
                    f"(this store is {sections['store'].metric!r}); use backend = 'search'")
    cold: ColdConfig = sections["cold"]
    if cold.url is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", cold.url):
        raise _fail("cold.url", cold.url, "must look like 's3://bucket' or 's3://bucket/prefix'")
    policy: PolicyConfig = sections["policy"]
    if policy.ingest_tier == "cold" and not cold.enabled:
        raise _fail("policy.ingest_tier", "cold", "cold tier is disabled (cold.enabled = false)")
    if policy.pin_cold is not None and not cold.enabled:
        raise _fail("policy.pin_cold", policy.pin_cold, "cold tier is disabled (cold.enabled = false)")
    for name in ("pin_hot", "pin_warm", "pin_cold"):
        spec = getattr(policy, name)
        if spec is not None:
            try:
                filters.compile_filter(spec, schema)
            except TierStoreError as exc:
                raise ConfigError(f"policy.{name}: {exc}") from None
    return Config(schema=schema, source=source_name, **sections)


__all__ = [
    "ColdConfig",
    "Config",
    "HotConfig",
    "MetricsConfig",
    "PolicyConfig",
    "StoreConfig",
    "WarmConfig",
    "load_config",
    "parse_duration",
    "parse_size",
]
