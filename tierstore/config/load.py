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
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import filters
from ..errors import ConfigError, TierStoreError
from .parse import (
    FIELD_NAME,
    FIELD_TYPES,
    fail,
    parse_bool,
    parse_choice,
    parse_duration,
    parse_filter_table,
    parse_float,
    parse_host,
    parse_http_url,
    parse_int,
    parse_redis_url,
    parse_size,
    parse_str,
)
from .sections import SECTIONS, ColdConfig, Config, HotConfig, PolicyConfig, StoreConfig

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
            raise fail(path, value, "must be true, false or \"auto\"")
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
        if not isinstance(key, str) or not FIELD_NAME.match(key) or key.startswith("__"):
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
        raise fail("hot.backend", "vectorset", f"vector sets only support store.metric = 'cosine' "
                    f"(this store is {sections['store'].metric!r}); use backend = 'search'")
    cold: ColdConfig = sections["cold"]
    if cold.url is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", cold.url):
        raise fail("cold.url", cold.url, "must look like 's3://bucket' or 's3://bucket/prefix'")
    policy: PolicyConfig = sections["policy"]
    if policy.ingest_tier == "cold" and not cold.enabled:
        raise fail("policy.ingest_tier", "cold", "cold tier is disabled (cold.enabled = false)")
    if policy.pin_cold is not None and not cold.enabled:
        raise fail("policy.pin_cold", policy.pin_cold, "cold tier is disabled (cold.enabled = false)")
    for name in ("pin_hot", "pin_warm", "pin_cold"):
        spec = getattr(policy, name)
        if spec is not None:
            try:
                filters.compile_filter(spec, schema)
            except TierStoreError as exc:
                raise ConfigError(f"policy.{name}: {exc}") from None
    return Config(schema=schema, source=source_name, **sections)
