"""Server processes a store (or a test fixture) owns: started with a parent-death signal, ready-
checked, stopped in order, never two on one data directory.

Processes never outlive their owner: each is started with ``PR_SET_PDEATHSIG`` (the kernel sends
SIGTERM when the owner dies, even by SIGKILL), from a dedicated long-lived spawner thread (the
signal fires when the *thread* that forked exits, so it must not be a short-lived worker), and
stopped at interpreter exit. A stale server left by a crashed owner is found by its pid file and
stopped before a new one starts. Starts on one data directory are serialised across processes (a
flock on ``<name>.lock`` there, waited for at most the start timeout); so is the removal of a
stopped server's pid file, so a starter never sees the file of the server it just started removed
by the owner of the previous one (and then starts a second server on the directory).

Recognising a server by its pid file reads ``/proc/<pid>/comm`` and ``/proc/<pid>/cwd`` on Linux.
Elsewhere (no ``/proc``; the servers' pip packages are built for Linux, so this is a fallback) the
program name comes from ``ps`` and the working directory is not checked: a live process of the
same name is taken for ours; without ``ps`` none is, and a stale server is then not stopped. The
parent-death signal is Linux-only too: elsewhere servers are stopped at interpreter exit only.
The servers themselves (redis-server, weed) are tierstore.services'.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import TierUnavailableError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (SO_REUSEADDR, as servers bind:
    connections of a stopped server left in TIME_WAIT do not hold the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


_HAS_PROC = Path("/proc/self/comm").exists()


def _identity(pid: int) -> tuple[str, str | None] | None:
    """(program name, working directory) of ``pid``; None if it cannot be read. Without /proc
    (not Linux) the name comes from ``ps`` and the directory is unknown (None)."""
    if _HAS_PROC:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip(), os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return None
    try:
        out = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (os.path.basename(out), None) if out else None


def running_pid(pidfile: Path, name: str) -> int | None:
    """The pid of the server ``pidfile`` names if it is running and is ours: the same program in
    the pid file's directory (servers are started with cwd = the data dir; redis rewrites its
    argv, so the command line cannot be used to recognise it). Without /proc the directory is
    not checked (see the module docstring)."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    ident = _identity(pid)
    if ident is None:
        return None
    comm, cwd = ident
    # /proc/<pid>/comm is the program name cut to 15 characters: it must equal ours so cut
    if not (comm and (comm == name[:15] or (not _HAS_PROC and comm == name))):
        return None
    if cwd is not None and cwd != str(pidfile.parent.resolve()):
        return None
    return pid if pid_alive(pid) else None


def _kill_stale(pidfile: Path, name: str) -> None:
    """Stop a server left behind by an owner that crashed, or run by a read-only process of the
    store whose writer is starting its own (only if it is really ours: :func:`running_pid`)."""
    pid = running_pid(pidfile, name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            # only if it is still that server: its pid may have been reused since (or a
            # server of another process took its place and rewrote the file)
            if running_pid(pidfile, name) == pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                for _ in range(100):
                    if not pid_alive(pid):
                        break
                    time.sleep(0.05)
    with contextlib.suppress(OSError):
        pidfile.unlink()


class ManagedProcess:
    """A server process we started: ready-check on start, SIGTERM then SIGKILL on stop."""

    name = "server"
    stop_grace = 10.0
    stop_lock_timeout = 60.0  # stop() waits this long for a start on the directory to finish

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / f"{self.name}.log"
        self.pidfile = self.data_dir / f"{self.name}.pid"
        self.lockfile = self.data_dir / f"{self.name}.lock"
        self._lock_mutex = threading.RLock()  # this object's threads; the flock is for processes
        self._lock_depth = 0
        self._lock_fd: int | None = None

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

    @contextlib.contextmanager
    def _start_lock(self, timeout: float = 30.0):
        """Held while a server starts on this data dir (by whichever process starts it) and while
        a stopped one's pid and endpoint files are removed. Re-entrant within this object (a
        failed start stops its server under it); waits at most ``timeout`` seconds, then raises
        TierUnavailableError naming the lock file (a start in another process that hangs must
        not hang this one)."""
        deadline = time.monotonic() + timeout
        if not self._lock_mutex.acquire(timeout=max(timeout, 0.0)):
            raise TierUnavailableError(f"{self.name}: another thread held the start lock {self.lockfile} "
                                       f"for over {timeout:.0f}s")
        try:
            if self._lock_depth == 0:
                fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o644)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            os.close(fd)
                            raise TierUnavailableError(
                                f"{self.name}: another process has held the start lock {self.lockfile} for "
                                f"over {timeout:.0f}s (a server start there hangs; it may be stopped, or "
                                "the file removed if no process of this store runs)") from None
                        time.sleep(0.05)
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None
        finally:
            self._lock_mutex.release()

    def start(self, timeout: float = 30.0) -> ManagedProcess:
        """Start the server (stopping a stale one on the same data dir first)."""
        with self._start_lock(timeout):
            return self._start(timeout)

    def start_unless_running(self, timeout: float = 30.0) -> bool:
        """Start the server unless one (of any process) already runs on this data dir; returns
        whether this call started it. Never stops a running server: for read-only processes,
        which must not take a writer's server away."""
        with self._start_lock(timeout):
            if self.alive() or running_pid(self.pidfile, self.name) is not None or self.dir_in_use():
                return False
            self._start(timeout)
            return True

    def dir_in_use(self) -> bool:
        """Whether a server runs on this data dir that its pid file does not name (a server
        can tell by a lock of its own; none here). Checked under the start lock."""
        return False

    def prepare(self) -> None:
        """Called before each start, once a stale server is gone (e.g. to choose ports)."""

    def started(self) -> None:
        """Called once a start is ready, still under the start lock."""

    def _start(self, timeout: float) -> ManagedProcess:
        _kill_stale(self.pidfile, self.name)
        deadline = time.monotonic() + timeout
        while self.dir_in_use():  # (one we cannot stop, not knowing its pid: it may be exiting)
            if time.monotonic() >= deadline:
                raise TierUnavailableError(f"{self.name}: another server (not named by {self.pidfile}) "
                                           f"runs on {self.data_dir}; stop it first")
            time.sleep(0.05)
        self.prepare()
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
                    self.started()
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
        _live.discard(self)
        # Under the start lock, so a starter's new pid (and endpoint) file is never removed as
        # ours. If it cannot be had, the files stay: they name a dead pid, which no check takes
        # for a running server.
        with contextlib.suppress(TierUnavailableError), self._start_lock(self.stop_lock_timeout):
            if read_pid(self.pidfile) == proc.pid:  # (another process's server may have replaced ours)
                with contextlib.suppress(OSError):
                    self.pidfile.unlink()
            self.stopped(proc.pid)

    def stopped(self, pid: int) -> None:
        """Called when a server this object started (``pid``) was stopped (or found dead), under
        the start lock."""

    def kill(self) -> None:
        """SIGKILL (tests: simulate a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ManagedProcess", "free_port", "pid_alive", "port_free", "read_pid", "running_pid"]
