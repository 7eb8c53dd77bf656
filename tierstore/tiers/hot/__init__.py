"""The hot tier: Redis as an index of the catalog's hot vectors (never the truth).

The package, by module:

- :mod:`.base` -- :class:`HotTier`, what does not depend on how Redis indexes vectors:
  connection, verification, reconcile/rebuild, the catalog-driven writes; its class docstring
  is the **backend protocol** (the methods a backend implements);
- :mod:`.standby` -- the catalog stand-in that answers while Redis loads or is refilled
  (:class:`CatalogStandby`) and the switch to it and back;
- :mod:`.search` -- :class:`SearchHotTier`, RediSearch (``hot.backend = "search"``);
- :mod:`.vectorset` -- :class:`VectorSetHotTier`, Redis 8 vector sets (``"vectorset"``);
- :mod:`.cluster` -- :class:`ClusterHotTier`, RediSearch on every master of a Redis Cluster,
  over the shards of :mod:`.cluster_shard`;
- :mod:`.common` -- what the modules share (Redis errors and replies, the ids of moves).

:func:`make_hot_tier` (here) picks the backend once, at open: :func:`choose_backend` names it
from ``hot.backend``/``hot.cluster`` and what the server has, and :data:`BACKENDS` maps the
name to its class. **Adding a backend**: subclass :class:`HotTier` implementing the protocol,
add it to :data:`BACKENDS` under its ``hot.backend`` name (and allow that name in
``tierstore.config``); :func:`choose_backend` takes a registered name that it does not know
itself as it is.
"""

from __future__ import annotations

import redis

from ...catalog import Catalog
from ...config import HotConfig, redact_url
from ...errors import ConfigError, TierUnavailableError
from ...services import RedisServer
from .base import HotTier
from .cluster import ClusterHotTier
from .cluster_shard import cluster_enabled
from .common import UNAVAILABLE, is_unknown_command
from .search import SearchHotTier
from .standby import CatalogStandby
from .vectorset import VectorSetHotTier

# The backends by name: hot.backend values, and "cluster" (RediSearch on a Redis Cluster)
BACKENDS: dict[str, type[HotTier]] = {"search": SearchHotTier, "vectorset": VectorSetHotTier,
                                       "cluster": ClusterHotTier}
_CHOSEN_HERE = ("auto", "search", "vectorset")  # hot.backend values choose_backend decides on


def server_has(url: str, config: HotConfig, feature: str) -> bool:
    """Does the Redis at ``url`` have RediSearch (``feature="search"``) or vector sets
    (``"vectorset"``)? Asked with a command of each (FT._LIST, VCARD): that needs no
    MODULE LIST permission, and Redis 8 builds its vector sets in without listing a module."""
    probe = ("FT._LIST",) if feature == "search" else ("VCARD", "tierstore:probe")
    r = redis.Redis.from_url(url, protocol=3, socket_timeout=config.socket_timeout,
                             socket_connect_timeout=min(config.socket_timeout, 5.0))
    try:
        r.execute_command(*probe)
        return True
    except redis.ResponseError as exc:
        if is_unknown_command(exc):
            return False
        raise TierUnavailableError(f"hot tier: Redis at {redact_url(url)} refused {probe[0]}: {exc}", tier="hot") from exc
    except UNAVAILABLE as exc:
        raise TierUnavailableError(f"hot tier: Redis at {redact_url(url)} is unavailable: {exc}", tier="hot") from exc
    finally:
        r.close()


def choose_backend(url: str, config: HotConfig, metric: str, *, server: RedisServer | None = None,
                   embedded: RedisServer | None = None) -> str:
    """The :data:`BACKENDS` name for ``hot.backend``: "search", "vectorset", or "auto" = search
    when the server has the RediSearch module, vector sets otherwise; "cluster" when the server
    is a Redis Cluster node (``hot.cluster``: auto-detected). A backend the server cannot run
    (or, for vector sets, a metric other than cosine) is a :class:`ConfigError` naming why.
    ``server``: the embedded redis-server the tier owns (and restarts); ``embedded``: the one
    another process (the writer) owns -- either way a single node whose modules we know."""
    if config.backend not in _CHOSEN_HERE and config.backend in BACKENDS:
        return config.backend  # a registered backend checks what it needs itself
    where = "the embedded redis-server" if server is not None else url
    backend = config.backend
    known = server or embedded
    if config.cluster is not False and known is None:
        probe = redis.Redis.from_url(url, protocol=3, socket_timeout=config.socket_timeout,
                                     socket_connect_timeout=min(config.socket_timeout, 5.0))
        try:
            clustered = cluster_enabled(probe)
        except UNAVAILABLE as exc:
            raise TierUnavailableError(f"hot tier: Redis at {redact_url(url)} is unavailable: {exc}", tier="hot") from exc
        finally:
            probe.close()
        if config.cluster and not clustered:
            raise ConfigError(f"hot.cluster: true is not allowed: {redact_url(url)} is not a Redis Cluster node "
                              "(INFO cluster says cluster_enabled:0)")
        if clustered:
            if config.prefix and "{" in config.prefix:
                raise ConfigError(f"hot.prefix: {config.prefix!r} is not allowed on a Redis Cluster: a hash tag "
                                  "('{...}') would put every vector in one slot, on one master")
            if backend == "vectorset":
                raise ConfigError("hot.backend: 'vectorset' is not allowed on a Redis Cluster: a vector set is "
                                  "one key on one node; use backend = 'search' (RediSearch on every master)")
            if not server_has(url, config, "search"):
                raise ConfigError(f"hot.backend: {backend!r} is not allowed: the Redis Cluster at {redact_url(url)} has no "
                                  "RediSearch module (FT.*); the cluster hot tier needs it loaded on every master")
            return "cluster"
    elif config.cluster and known is not None:
        raise ConfigError("hot.cluster: true is not allowed without hot.redis_url (the embedded redis-server "
                          "is a single node)")
    if known is not None:
        # an embedded server: we know what it loaded, and asking it now could meet it loading its
        # data (every command but a few answers LOADING until the AOF is replayed)
        backend = "search" if known.search else "vectorset"
    elif backend in ("auto", "search") and not server_has(url, config, "search"):
        if backend == "search":
            raise ConfigError(f"hot.backend: 'search' is not allowed: {where} has no RediSearch module "
                              "(FT.* commands); load it, or use backend = 'vectorset' (Redis 8)")
        backend = "vectorset"
    elif backend == "auto":
        backend = "search"
    if backend == "vectorset":
        if metric != "cosine":
            # vector sets normalise every vector at insert: only cosine similarity is exact
            reason = (f"{where} has no RediSearch module and vector sets (the other backend)"
                      if config.backend == "auto" else "vector sets")
            raise ConfigError(f"hot.backend: {config.backend!r} is not allowed: {reason} only support "
                              f"store.metric = 'cosine' (this store is {metric!r})")
        if known is None and not server_has(url, config, "vectorset"):
            raise ConfigError(f"hot.backend: {config.backend!r} is not allowed: {where} has neither RediSearch "
                              "nor vector sets (VADD/VSIM need Redis 8)")
    return backend



def make_hot_tier(
    url: str,
    *,
    catalog: Catalog,
    config: HotConfig,
    schema: dict[str, str],
    metric: str,
    server: RedisServer | None = None,
    embedded: RedisServer | None = None,
) -> HotTier:
    """The hot tier for this config and server (:func:`choose_backend`), not yet opened."""
    cls = BACKENDS[choose_backend(url, config, metric, server=server, embedded=embedded)]
    return cls(url, catalog=catalog, config=config, schema=schema, metric=metric, server=server)


__all__ = ["BACKENDS", "CatalogStandby", "ClusterHotTier", "HotTier", "SearchHotTier", "VectorSetHotTier",
           "choose_backend", "make_hot_tier", "server_has"]
