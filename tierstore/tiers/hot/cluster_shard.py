"""One master of a Redis Cluster, as the cluster hot tier sees it: the slot arithmetic, the
shard tier (:class:`ShardTier`: the RediSearch hot tier of one master, restricted to its slots)
and one reading of the slot map (:class:`Plan`). How they are used: :mod:`.cluster`.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ...errors import TierStoreError, TierUnavailableError
from .common import CHUNK, UNAVAILABLE, MoveIds, Stale, as_str, is_missing_index
from .search import SearchHotTier

if TYPE_CHECKING:
    from .cluster import ClusterHotTier

SLOTS = 16384
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 5.0  # a failed shard is skipped this long before the next try
# what a master that cannot answer raises: the shard is down (the others still answer)
SHARD_ERRORS = (*UNAVAILABLE, redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
                redis.exceptions.MasterDownError)


@lru_cache(maxsize=4096)
def tag_for_slot(slot: int) -> str:
    """The shortest decimal string whose CRC16 slot is ``slot`` (a hash tag pinning a key there).

    >>> tag_for_slot(0), key_slot(b"{" + tag_for_slot(16383).encode() + b"}")
    ('3560', 16383)
    """
    i = 0
    while True:
        t = str(i)
        if key_slot(t.encode()) == slot:
            return t
        i += 1


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (scheme, credentials, options) pointed at another node of its cluster.

    >>> node_url("rediss://u:pw@10.0.0.1:7000/0?ssl_cert_reqs=none", "10.0.0.2", 7001)
    'rediss://u:pw@10.0.0.2:7001/0?ssl_cert_reqs=none'
    """
    u = urlsplit(url)
    user = u.netloc.rpartition("@")[0]
    return urlunsplit((u.scheme, f"{user}@{host}:{port}" if user else f"{host}:{port}", "/0", u.query, ""))


def cluster_enabled(r: redis.Redis) -> bool:
    """Is this node a Redis Cluster node (``INFO cluster`` -> cluster_enabled:1)?"""
    return int(r.info("cluster").get("cluster_enabled", 0)) == 1

class TopologyChanged(Exception):
    """A node answered MOVED/ASK: the slot map we planned with is out of date."""


class ShardTier(SearchHotTier):
    """The RediSearch hot tier of one master: its index, its meta key and the catalog's vectors
    whose keys hash into its slots."""

    sharded = True
    standby_ok = False

    def __init__(self, cluster: ClusterHotTier, node_id: str, host: str, port: int) -> None:
        self.cluster = cluster
        self.node_id, self.host, self.port = node_id, host, port
        self.node = f"{host}:{port}"
        self.tag = ""
        super().__init__(node_url(cluster.url, host, port), catalog=cluster.catalog, config=cluster.cfg,
                         schema=cluster.schema, metric=cluster.metric)
        self.read_only = cluster.read_only
        # moves protect ids cluster-wide: every shard's reconcile must respect them
        self.ids = MoveIds(share_protected_with=cluster.ids)
        self._set_tag("")
        self.down_until = 0.0
        self.backoff = _BACKOFF_MIN
        self.error: TierStoreError | None = None

    def _retry(self) -> Retry:
        # One retry on a dropped connection (a restarted node), none on a timeout: a stopped node
        # must cost one socket_timeout, not three, before the shard is reported down.
        return Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(redis.ConnectionError,))

    def _set_tag(self, tag: str) -> None:
        self.tag = tag
        self.index = f"{self.prefix}idx{{{tag}}}"
        self.meta_key = f"{self.prefix}meta{{{tag}}}"

    def _owns(self, iid: int) -> bool:
        return self.cluster.owner(iid) is self

    def unavailable(self, exc: Exception) -> TierUnavailableError:
        return TierUnavailableError(f"hot tier: Redis Cluster master {self.node} is unavailable: {exc}", tier="hot")

    def _stale_error(self, exc: redis.ResponseError) -> bool:
        if isinstance(exc, redis.exceptions.AskError | redis.exceptions.MovedError):  # (MovedError is an AskError)
            self.cluster.topology_changed()
            raise TopologyChanged(f"{self.node}: {exc}") from exc
        return is_missing_index(exc)

    # --- which index is ours on this node ------------------------------------------------------

    def verify(self) -> None:
        with self._lock:
            if self._verified:
                return
            self.choose_tag()
            if not self.read_only and self.r.hget(self.meta_key, "uuid") is None:
                # A node without our meta key: restarted without persistence, flushed, or its
                # index renamed after a reshard. Index whatever vectors it still holds, claim it,
                # and let the reconcile below (forced) add what is missing and drop what is extra:
                # cheaper than the standalone rebuild when only the names changed.
                self._check_index()
                self.r.hset(self.meta_key, mapping={"uuid": self.catalog.uuid, "backend": self.backend,
                                                    "created": str(time.time())})
                self._run_id = ""
                self.stats["rebuilds"] += 1
            super().verify()

    def choose_tag(self) -> None:
        """Keep the index this store already has on the node if its name is still in the
        node's slots; otherwise name a new one after the node's highest slot."""
        slots = self.cluster.slots_of(self)
        if not len(slots):
            raise TierUnavailableError(f"hot tier: master {self.node} owns no slots any more", tier="hot")
        owned = set(slots.tolist())
        lead = f"{self.prefix}idx{{"
        mine = sorted(n for n in map(as_str, self.r.execute_command("FT._LIST")) if n.startswith(lead) and n.endswith("}"))
        valid = [n for n in mine if key_slot(n.encode()) in owned]
        self.orphans = [n for n in mine if n not in valid]
        tag = valid[0][len(lead):-1] if valid else tag_for_slot(int(slots.max()))
        for extra in valid[1:]:  # a second index of ours on one node double-indexes every key
            if not self.read_only:
                self.r.execute_command("FT.DROPINDEX", extra)
        if tag != self.tag:
            self._set_tag(tag)

    # --- what differs on a cluster node --------------------------------------------------------

    def _delete_keys(self, iids) -> None:
        # keys in different slots cannot share one UNLINK: one command each, pipelined
        keys = [self.key(i) for i in iids]
        for start in range(0, len(keys), CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for k in keys[start : start + CHUNK]:
                pipe.unlink(k)
            pipe.execute()

    def _purge(self) -> None:  # only this shard's index and keys (a scan of the prefix would cross slots)
        self._drop_index_and_keys()

    def count(self) -> int:
        # A write only checks the masters it touches: a node flushed behind our back shows up
        # here as a missing index, which must re-verify (refill) it rather than count 0.
        info = self._index_info()
        if info is None:
            self._verified = False
            raise Stale(f"hot tier: master {self.node} lost the index {self.index}")
        return int(info.get(b"num_docs", 0))

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(node=self.node, node_id=self.node_id, slots=int(len(self.cluster.slots_of(self))))
        if getattr(self, "orphans", None):
            out["orphaned_indexes"] = list(self.orphans)
        return out

    # --- failure bookkeeping (used by the cluster tier's fan-out) --------------------------------

    def usable(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, exc: TierStoreError) -> None:
        self.error = exc
        self.down_until = time.monotonic() + self.backoff
        self.backoff = min(2 * self.backoff, _BACKOFF_MAX)

    def succeeded(self) -> None:
        if self.error is not None:
            self.error, self.down_until, self.backoff = None, 0.0, _BACKOFF_MIN


class Plan:
    """One reading of the slot map: the masters (shards) and which one owns each slot."""

    def __init__(self, shards: list[ShardTier], owner: np.ndarray, signature: tuple) -> None:
        self.shards = shards
        self.owner = owner  # (16384,) int16: index into shards, -1 = not served
        self.signature = signature


__all__ = ["SHARD_ERRORS", "SLOTS", "Plan", "ShardTier", "TopologyChanged", "cluster_enabled", "node_url",
           "tag_for_slot"]
