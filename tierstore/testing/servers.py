"""A local Redis Cluster for tests and benchmarks (the store never starts one itself: a
clustered hot tier is given ``hot.redis_url`` of a cluster someone else runs).

Built from :class:`tierstore.services.RedisServer` processes, so the nodes get the same
parent-death signal and clean-up at exit as the store's own embedded server.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import TierUnavailableError
from ..services import RedisServer, free_port


class RedisCluster:
    """A local Redis Cluster of ``masters`` redis-servers (RediSearch loaded on each) and
    ``replicas`` more (replica j follows master j mod masters; ``servers[masters:]``), for tests and
    benchmarks. Formed without redis-cli: each master gets an equal slot range (``CLUSTER
    ADDSLOTSRANGE``), every node meets the first (``CLUSTER MEET``), replicas ``CLUSTER REPLICATE``,
    and :meth:`start` returns once every node reports ``cluster_state:ok`` and knows every other.

    The nodes serve their own slots while another is down (``cluster-require-full-coverage no``,
    ``cluster-allow-reads-when-down yes``): what a deployment that wants partial answers during a
    shard outage configures. Each node keeps its identity and slots in ``<data_dir>/node<i>/nodes.conf``
    (restart one with ``restart(i)``: same port, same id, its data gone unless ``appendonly``).

    >>> with RedisCluster(tempfile.mkdtemp()) as cluster:        # doctest: +SKIP
    ...     redis.Redis.from_url(cluster.url).execute_command("CLUSTER", "INFO")
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, masters: int = 3, replicas: int = 0, search: bool = True,
                 appendonly: bool = False, node_timeout_ms: int = 2000) -> None:
        self.data_dir = Path(data_dir)
        self.masters = masters
        self._opts = {"search": search, "appendonly": appendonly, "node_timeout_ms": node_timeout_ms}
        self.bus_ports: list[int] = [free_port() for _ in range(masters + replicas)]
        self.servers: list[RedisServer] = [self._node(i) for i in range(masters + replicas)]
        self._started: set[int] = set()  # nodes started at least once (their ports are final)

    def _node(self, i: int) -> RedisServer:
        o = self._opts
        return RedisServer(
            self.data_dir / f"node{i}", port=0, search=o["search"], appendonly=o["appendonly"],
            extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-port", str(self.bus_ports[i]), "--cluster-node-timeout", str(o["node_timeout_ms"]),
                        "--cluster-require-full-coverage", "no", "--cluster-allow-reads-when-down", "yes"])

    def _start_node(self, i: int) -> None:
        """Start node ``i``. Its ports were free when chosen, but another process can take one
        before the node binds it (CI once lost a bus port to one); on a node's first start that
        port is chosen again (up to three tries) -- later starts must keep theirs."""
        for attempt in range(3):
            try:
                self.servers[i].start()
                self._started.add(i)
                return
            except TierUnavailableError as exc:
                if i in self._started or attempt == 2 or "Address already in use" not in str(exc):
                    raise
                (self.data_dir / f"node{i}" / "nodes.conf").unlink(missing_ok=True)  # (it names the old ports)
                self.bus_ports[i] = free_port()
                self.servers[i] = self._node(i)

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def client(self, i: int, **kw):
        return self.servers[i].client(**kw)

    def node_id(self, i: int) -> str:
        c = self.client(i)
        try:
            return c.execute_command("CLUSTER", "MYID").decode()
        finally:
            c.close()

    def start(self, timeout: float = 60.0) -> RedisCluster:
        for i, s in enumerate(self.servers):
            if not s.alive():
                self._start_node(i)
        n, m = len(self.servers), self.masters
        info = self._info(0)
        if int(info.get("cluster_known_nodes", 0)) < n or int(info.get("cluster_slots_assigned", 0)) < 16384:
            for i, s in enumerate(self.servers):
                c = s.client()
                try:
                    if i < m:
                        lo, hi = round(i * 16384 / m), round((i + 1) * 16384 / m) - 1  # as redis-cli splits
                        with contextlib.suppress(Exception):  # already assigned (a restart)
                            c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
                    if i:  # the bus port is not port + 10000 here: MEET must name it
                        c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port, self.bus_ports[0])
                finally:
                    c.close()
            deadline = time.monotonic() + timeout
            for i in range(m, n):  # a replica can follow its master once gossip has told it the id
                master_id = self.node_id(i % m)
                c = self.client(i)
                try:
                    while True:
                        try:
                            c.execute_command("CLUSTER", "REPLICATE", master_id)
                            break
                        except Exception:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.1)
                finally:
                    c.close()
        self.wait_ok(timeout)
        return self

    def _info(self, i: int) -> dict[str, str]:
        c = self.client(i, socket_timeout=2)
        try:
            text = c.execute_command("CLUSTER", "INFO").decode()
        finally:
            c.close()
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def wait_ok(self, timeout: float = 60.0, nodes: Sequence[int] | None = None) -> None:
        """Until every (listed) node says cluster_state:ok, knows every node and agrees on the slot map."""
        idx = list(range(len(self.servers))) if nodes is None else list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for i in idx:
                c = self.client(i, socket_timeout=2)
                try:
                    fields = self._info(i)
                    slots = sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in c.execute_command("CLUSTER", "SLOTS"))
                    states.append((fields.get("cluster_state"), int(fields.get("cluster_known_nodes", 0)), slots))
                except Exception as exc:  # noqa: BLE001 - still starting
                    states.append((str(exc), 0, []))
                finally:
                    c.close()
            if all(st[0] == "ok" and st[1] == len(self.servers) and st[2] == states[0][2] for st in states) \
                    and sum(hi - lo + 1 for lo, hi, _p in states[0][2]) == 16384:
                return
            if time.monotonic() > deadline:
                raise TierUnavailableError(f"Redis Cluster did not form in {timeout:.0f}s: {states}")
            time.sleep(0.1)

    def restart(self, i: int, timeout: float = 60.0) -> None:
        """Stop node ``i`` (if running) and start it again with its nodes.conf; wait for the cluster."""
        self.servers[i].stop()
        self._start_node(i)
        self.wait_ok(timeout)

    def move_slots(self, slots: Sequence[int], src: int, dst: int) -> int:
        """Reshard: move ``slots`` (with their keys) from node ``src`` to node ``dst`` the way
        redis-cli does (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE). Returns keys moved."""
        clients = [self.client(i) for i in range(len(self.servers))]
        a, b = clients[src], clients[dst]
        moved = 0
        try:
            a_id, b_id = self.node_id(src), self.node_id(dst)
            for slot in slots:
                b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", a_id)
                a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", b_id)
                while True:
                    keys = a.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
                    if not keys:
                        break
                    a.execute_command("MIGRATE", "127.0.0.1", self.servers[dst].port, "", 0, 10_000, "KEYS", *keys)
                    moved += len(keys)
                for c in (b, a, *(c for c in clients if c is not a and c is not b)):
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", b_id)
        finally:
            for c in clients:
                c.close()
        self.wait_ok()
        return moved

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["RedisCluster"]
