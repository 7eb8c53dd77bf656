"""The embedded servers' lifecycle across processes sharing a data directory (a writer and
read-only processes of one store may each start, stop or reuse them): the start lock and its
timeout, pid and endpoint files removed only under that lock, weed's own lock on its directory,
the S3 ports a (re)start chooses, the keeper thread surviving a failed round, and a read-only
store following its embedded S3 server to a new port."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tierstore
from tierstore.errors import TierUnavailableError
from tierstore.services import RedisServer, S3Server, ServerKeeper, pid_alive, read_pid


def wait_for(cond, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


class PortHolder:
    """Another program listening on ``port``: no server can bind it, and it hangs up on every
    connection at once (so a client of the server that had the port fails fast)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (the old server's TIME_WAITs)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.close()

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()


def hold_port(port: int) -> PortHolder:
    return PortHolder(port)


def hold_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_start_lock_held_elsewhere_times_out_naming_the_file(tmp_path):
    server = RedisServer(tmp_path / "r")
    fd = hold_lock(server.lockfile)  # another process's start that hangs
    try:
        with pytest.raises(TierUnavailableError, match="redis-server.lock"):
            server.start(timeout=0.3)
        with pytest.raises(TierUnavailableError, match="redis-server.lock"):
            server.start_unless_running(timeout=0.3)
        assert server.proc is None and not server.pidfile.exists()  # nothing was started
    finally:
        os.close(fd)


def test_stop_removes_the_pid_file_only_under_the_start_lock(tmp_path):
    """The race: an owner stops its server while another process starts a new one on the same
    directory. The stopping owner must not remove the starter's fresh pid file (a third process
    would then see no server and start a second one on the directory)."""
    server = RedisServer(tmp_path / "r").start()
    pid = server.pid
    fd = hold_lock(server.lockfile)  # this test is the other process, starting its server
    stopper = threading.Thread(target=server.stop)
    try:
        stopper.start()
        wait_for(lambda: not pid_alive(pid), what="the old server to exit")
        assert read_pid(server.pidfile) == pid  # not removed while the starter holds the lock
        server.pidfile.write_text(str(os.getpid()))  # the starter's new server
    finally:
        os.close(fd)
    stopper.join()
    assert read_pid(server.pidfile) == os.getpid()  # the new server's file stays
    server.pidfile.unlink()
    again = RedisServer(tmp_path / "r").start()  # and an ordinary stop removes its own
    again.stop()
    assert not again.pidfile.exists()


def test_an_s3_restart_whose_port_was_taken_picks_another_and_names_it(tmp_path):
    ep_file = tmp_path / "s3.json"
    server = S3Server(tmp_path / "s3", endpoint_file=ep_file).start()
    first = server.ports["s3"]
    assert json.loads(ep_file.read_text())["endpoint_url"] == server.endpoint_url
    server.stop()
    assert not ep_file.exists()
    holder = hold_port(first)  # taken meanwhile by another program
    try:
        server.start()  # the same object (a keeper's): its port and the saved one are both busy
        try:
            assert server.ports["s3"] != first
            assert json.loads(ep_file.read_text())["endpoint_url"] == server.endpoint_url
            assert int((tmp_path / "s3" / "weed.port").read_text()) == server.ports["s3"]
            server.client().head_bucket(Bucket="tierstore")
        finally:
            server.stop()
    finally:
        holder.close()


def test_a_saved_s3_port_never_collides_with_another_weed_port(tmp_path):
    server = S3Server(tmp_path / "s3")
    saved = server.ports["master"]  # the directory's last S3 port, now one of this start's others
    (tmp_path / "s3" / "weed.port").write_text(str(saved))
    server.prepare()
    assert server.ports["s3"] == saved
    assert len(set(server.ports.values())) == len(server.ports)  # all distinct (and free)


def test_the_endpoint_file_of_another_server_is_left_alone(tmp_path):
    """A writer's S3 server that stops removes s3.json only while it names that server."""
    ep_file = tmp_path / "s3.json"
    server = S3Server(tmp_path / "s3", endpoint_file=ep_file).start()
    other = {"endpoint_url": "http://127.0.0.1:1", "pid": 1, "access_key": "a", "secret_key": "b"}
    ep_file.write_text(json.dumps(other))  # a server started since by another process
    server.stop()
    assert json.loads(ep_file.read_text()) == other


def test_a_weed_whose_pid_file_is_gone_still_holds_its_directory(tmp_path):
    """weed holds a flock on its filer's leveldb LOCK files while it runs: a starter that finds
    no pid file (removed by mistake) does not start a second weed on the directory."""
    first = S3Server(tmp_path / "s3").start()
    try:
        first.pidfile.unlink()
        second = S3Server(tmp_path / "s3")
        assert second.dir_in_use()
        assert not second.start_unless_running(timeout=5)
        assert second.proc is None
    finally:
        first.stop()
    assert not S3Server(tmp_path / "s3").dir_in_use()


class FlakyServer:
    """A stand-in server whose checks raise something that is neither OSError nor tierstore's."""

    def __init__(self) -> None:
        self.calls = 0

    def alive(self) -> bool:
        self.calls += 1
        raise RuntimeError("boom")

    def stop(self) -> None:
        pass


def test_the_keeper_thread_survives_an_unexpected_error(caplog):
    srv = FlakyServer()
    keeper = ServerKeeper(srv, wanted=lambda: True, interval=0.01)
    keeper.start()
    try:
        wait_for(lambda: srv.calls >= 3, what="three rounds")  # still going after the first failure
    finally:
        keeper.stop()
    assert sum("boom" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_a_reader_follows_its_embedded_s3_server_to_a_new_port(tmp_path, redis_server):
    """A read-only store runs the embedded S3 server itself (no writer). The server dies and its
    port is taken before the keeper starts it again: the keeper picks another port and says so
    in s3.json, and the reader's cold tier follows it on its next failed request."""
    path = Path(tmp_path / "store")
    kw = {"path": str(path), "dim": 8, "hot": {"redis_url": redis_server.url}, "env": {},
          "policy": {"interval": 0}}
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    ep_file = path / "cold" / "s3.json"
    with tierstore.open(**kw) as writer:
        writer.upsert(list(range(50)), vectors, tier="cold")
    assert not ep_file.exists()
    for blk in (path / "cold" / "cache").glob("*.blk"):  # written through: the query below must need S3
        blk.unlink()
    with tierstore.open(read_only=True, **kw) as reader:
        # (no query yet: it would fill the local block cache, and the one below need no S3)
        assert reader.cold.connected
        old = json.loads(ep_file.read_text())
        port = int(old["endpoint_url"].rsplit(":", 1)[1])
        holder = None
        while holder is None:  # (should the keeper win the race for the port, kill that one too)
            pid = read_pid(path / "cold" / "s3" / "weed.pid")
            os.kill(pid, signal.SIGKILL)  # the reader's server dies
            wait_for(lambda pid=pid: not pid_alive(pid), what="weed to exit")
            try:
                holder = hold_port(port)  # and another program takes its port
            except OSError:
                continue
        try:
            def moved() -> bool:
                try:
                    return json.loads(ep_file.read_text())["endpoint_url"] != old["endpoint_url"]
                except (OSError, ValueError):
                    return False

            wait_for(moved, what="the reader's keeper to start the server on another port")
            hits = reader.query(vectors[7], k=3, nprobe=100_000)
            assert not hits.partial, {n: r.error for n, r in hits.tiers.items()}
            assert hits[0].id == 7 and hits[0].tier == "cold" and hits.tiers["cold"].details["gets"] > 0
        finally:
            holder.close()
    assert not ep_file.exists()
