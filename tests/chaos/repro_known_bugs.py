"""Deterministic reproductions of the crash bugs the chaos campaign was written against (issue 14).

    python tests/chaos/repro_known_bugs.py a|b|c|d [--backend search|vectorset]

Each prints what it found and exits 1 when the bug shows, 0 when it does not. Run them on an older
tree with ``PYTHONPATH=DIR`` (``git archive <commit> tierstore | tar -x -C DIR``); on a6d0a29 all
four show, and none on the commit that fixed them (6a09366).

- a: reopen a store with 20k hot vectors right after kill -9 of the writer and its redis-server
  (Redis replays its AOF): ``open()`` must not fail with "Redis is loading the dataset in memory";
- b: kill -9 the embedded redis-server ``--delay`` s after ``open()`` started it: ``open()`` must
  not raise (at 0 s it dies before it is ready: still raises on 6a09366, see benchmarks/RESULTS.md);
- c: update hot vectors in place (acknowledged), kill -9 and restart an external Redis: each id's
  acknowledged vector must find it first in a hot-only query (vector sets lost the update);
- d: die between the Redis write and the catalog commit of an update of hot ids (never
  acknowledged): each id's catalog vector must find it first in a hot-only query (RediSearch kept
  the unacknowledged vector).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np


def vec(s: int) -> np.ndarray:
    v = np.random.default_rng(s).standard_normal(32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def hot_misses(st, ids, seeds) -> list:
    bad = []
    for i, s in zip(ids, seeds, strict=True):
        for _ in range(50):  # a hot tier still verifying may answer partial: ask again
            h = st.query(vec(s), k=1, tiers=["hot"])
            if not h.partial:
                break
            time.sleep(0.1)
        if h.ids() != [i] or h[0].distance > 1e-4:
            bad.append((i, h.ids(), [round(float(x.distance), 4) for x in h]))
    return bad


def bug_a(backend: str) -> bool:
    import tierstore

    n, d = 20_000, tempfile.mkdtemp()
    kw = dict(path=d + "/s", dim=32, env={}, hot={"backend": backend, "capacity": n}, cold={"enabled": False},
              policy={"half_life": "1h"})
    child = textwrap.dedent(f"""
        import numpy as np, tierstore, time
        st = tierstore.open(**{kw!r})
        v = np.random.default_rng(0).standard_normal(({n}, 32)).astype(np.float32)
        for i in range(0, {n}, 5000):
            st.upsert(list(range(i, i + 5000)), v[i:i + 5000], tier="hot")
        print(st._server.pid, flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    os.kill(int(p.stdout.readline()), signal.SIGKILL)
    p.kill()
    p.wait()
    t = time.time()
    try:
        st = tierstore.open(**kw)
    except Exception as exc:  # noqa: BLE001
        print(f"a: reopen FAILED after {time.time() - t:.1f} s: {type(exc).__name__}: {str(exc)[:200]}")
        return True
    print(f"a: reopened in {time.time() - t:.1f} s, {len(st)} vectors")
    st.close()
    return False


def bug_b(backend: str, delay: float = 0.0) -> bool:
    import tierstore

    d = tempfile.mkdtemp()
    kw = dict(path=d + "/s", dim=32, env={}, hot={"backend": backend}, cold={"enabled": False},
              policy={"half_life": "1h"})
    with tierstore.open(**kw) as st:
        st.upsert(list(range(100)), np.stack([vec(i) for i in range(100)]), tier="hot")
    pidfile = os.path.join(d, "s", "redis", "redis-server.pid")
    stop = threading.Event()

    def killer() -> None:  # kill the first redis-server the open starts, once, as soon as its pid shows
        while not stop.is_set():
            try:
                with open(pidfile) as f:
                    pid = int(f.read())
            except (OSError, ValueError):
                time.sleep(0.001)
                continue
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return

    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
    th = threading.Thread(target=killer)
    th.start()
    try:
        st = tierstore.open(**kw)
    except Exception as exc:  # noqa: BLE001
        print(f"b: open FAILED with the embedded redis-server killed during it: {type(exc).__name__}: {str(exc)[:200]}")
        return True
    finally:
        stop.set()
        th.join()
    bad = hot_misses(st, list(range(100)), list(range(100)))
    print(f"b: opened; {len(bad)} hot ids not found by their vector")
    st.close()
    return bool(bad)


def _external(backend: str):
    from tierstore.services import RedisServer

    d = tempfile.mkdtemp()
    srv = RedisServer(d + "/redis", port=0, search=backend == "search").start()
    kw = dict(path=d + "/s", dim=32, env={}, hot={"redis_url": srv.url, "backend": backend, "socket_timeout": "2s"},
              cold={"enabled": False}, policy={"half_life": "1h"})
    return srv, kw


def bug_c(backend: str) -> bool:
    import tierstore

    srv, kw = _external(backend)
    st = tierstore.open(**kw)
    st.upsert(list(range(50)), np.stack([vec(i) for i in range(50)]), tier="hot")
    st.upsert(list(range(10)), np.stack([vec(1000 + i) for i in range(10)]), tier="hot")  # in place, acknowledged
    srv.kill()
    srv.start()
    bad = hot_misses(st, list(range(10)), [1000 + i for i in range(10)])
    print(f"c ({backend}): {len(bad)} of 10 acknowledged in-place updates not found by their vector in a hot-only "
          f"query after a Redis restart {bad[:2]}; verify ok: {st.verify()['ok']}")
    st.close()
    srv.stop()
    return bool(bad)


def bug_d(backend: str) -> bool:
    import tierstore

    srv, kw = _external(backend)
    child = textwrap.dedent(f"""
        import os, signal, numpy as np, tierstore
        from tierstore.catalog import Catalog
        def vec(s):
            v = np.random.default_rng(s).standard_normal(32); return (v / np.linalg.norm(v)).astype(np.float32)
        st = tierstore.open(**{kw!r})
        st.upsert(list(range(50)), np.stack([vec(i) for i in range(50)]), tier="hot")
        st.flush()
        Catalog.write = lambda self, *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # die at the catalog commit
        st.upsert(list(range(10)), np.stack([vec(1000 + i) for i in range(10)]), tier="hot")  # never acknowledged
    """)
    subprocess.run([sys.executable, "-c", child], check=False)
    st = tierstore.open(**kw)
    for i in range(10):
        assert np.array_equal(st.get([i])[0].vector, vec(i)), "the catalog holds the unacknowledged vector"
    bad = hot_misses(st, list(range(10)), list(range(10)))
    print(f"d ({backend}): {len(bad)} of 10 ids not found by their (acknowledged) vector in a hot-only query after "
          f"a kill between the Redis write and the catalog commit {bad[:2]}; verify ok: {st.verify()['ok']}")
    st.close()
    srv.stop()
    return bool(bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bug", choices="abcd")
    ap.add_argument("--delay", type=float, default=0.0,
                    help="b: seconds after the new redis-server's pid shows before it is killed")
    ap.add_argument("--backend", choices=["search", "vectorset"], default=None,
                    help="default: search for a, b, d; vectorset for c")
    a = ap.parse_args()
    backend = a.backend or ("vectorset" if a.bug == "c" else "search")
    if a.bug == "b":
        return int(bug_b(backend, a.delay))
    return int({"a": bug_a, "c": bug_c, "d": bug_d}[a.bug](backend))


if __name__ == "__main__":
    sys.exit(main())
