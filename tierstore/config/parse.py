"""Value parsers of the configuration: each takes the raw value and its key path, and returns the
typed value or raises :class:`ConfigError` naming the key, the value and what is allowed."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .. import tiers
from ..errors import ConfigError

METRICS = ("cosine", "ip", "l2")
TIERS = tiers.NAMES
FIELD_TYPES = ("tag", "numeric")
HOT_BACKENDS = ("auto", "search", "vectorset")
VSET_QUANTIZATIONS = ("q8", "noquant", "bin")
SEARCH_VECTOR_TYPES = ("float32", "float16")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


# --- value parsers: each takes (value, key_path) and returns the typed value or raises ------------


def fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path}: {value!r} is not allowed: {allowed}")


def parse_int(value: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    allowed = "must be an integer" + (f" >= {lo}" if lo is not None else "") + (
        f" and <= {hi}" if hi is not None else ""
    )
    if isinstance(value, bool):
        raise fail(path, value, allowed)
    if isinstance(value, str):
        s = value.strip().replace("_", "")
        if not re.fullmatch(r"[+-]?\d+", s):
            raise fail(path, value, allowed)
        value = int(s)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise fail(path, value, allowed)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise fail(path, value, allowed)
    return value


def parse_float(value: Any, path: str, lo: float | None = None, hi: float | None = None) -> float:
    allowed = "must be a number" + (f" >= {lo}" if lo is not None else "") + (
        f" and <= {hi}" if hi is not None else ""
    )
    if isinstance(value, bool):
        raise fail(path, value, allowed)
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise fail(path, value, allowed) from None
    if not math.isfinite(out) or (lo is not None and out < lo) or (hi is not None and out > hi):
        raise fail(path, value, allowed)
    return out


def parse_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise fail(path, value, "must be true or false")


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, path: str) -> float:
    """'30s', '1h', '500ms', '2d', '0' or a number of seconds -> seconds (float)."""
    allowed = "must be a duration like '500ms', '30s', '5m', '1h', '2d' or a number of seconds >= 0"
    if isinstance(value, bool):
        raise fail(path, value, allowed)
    if isinstance(value, int | float):
        try:
            out = float(value)
        except OverflowError:
            raise fail(path, value, allowed) from None
        if out < 0 or not math.isfinite(out):
            raise fail(path, value, allowed)
        return out
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*", value.lower())
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    raise fail(path, value, allowed)


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
        raise fail(path, value, allowed)
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower().replace("_", ""))
        if m and m.group(2) in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise fail(path, value, allowed)


def parse_choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise fail(path, value, "must be one of " + ", ".join(repr(c) for c in choices))


def parse_str(value: Any, path: str, optional: bool = False) -> str | None:
    if value is None or (optional and isinstance(value, str) and value.strip() == ""):
        if optional:
            return None
        raise fail(path, value, "must be a string")
    if not isinstance(value, str):
        raise fail(path, value, "must be a string")
    return value


def parse_host(value: Any, path: str) -> str:
    """An IP address or a host name to bind to ('127.0.0.1', '0.0.0.0', '::', 'localhost')."""
    allowed = "must be an IP address or a host name, e.g. '127.0.0.1', '0.0.0.0' or 'localhost'"
    if not isinstance(value, str):
        raise fail(path, value, allowed)
    s = value.strip()
    try:
        ipaddress.ip_address(s)
        return s
    except ValueError:
        pass
    if re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", s):
        return s
    raise fail(path, value, allowed)


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: every message, log line and
    ``stats()`` value that names a server URL goes through it (passwords never leave the config).

    >>> redact_url("redis://default:s3cret@10.0.0.5:6379/0")
    'redis://default:***@10.0.0.5:6379/0'
    >>> redact_url("redis://:s3cret@h:1"), redact_url("redis://h:1")
    ('redis://:***@h:1', 'redis://h:1')
    """
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
        raise fail(path, redact_url(url), f"{why}; {form}")
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
        raise fail(path, redact_url(url), f"{why}; {form}")
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
            raise fail(path, value, "must be a filter table such as {tenant = \"acme\"} (or JSON text)") from None
        if value is None:
            return None
    if not isinstance(value, Mapping) or not value:
        raise fail(path, value, "must be a non-empty filter table such as {tenant = \"acme\"}")
    return dict(value)
