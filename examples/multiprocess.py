"""Several processes, one store: one writer, N read-only query workers.

    .venv/bin/python examples/multiprocess.py [--workers 4] [--path ./mp-data]

The main process opens the store for writing (it owns the embedded redis-server and runs the
policy) and keeps ingesting; each worker process opens the same path with ``read_only=True`` and
answers queries. Workers see every batch the writer has acknowledged without reopening, and
their accesses reach the writer's policy. A gunicorn/uvicorn service is the same shape: open the
writer in one place (a dedicated process or the master), ``read_only=True`` in every worker's
post-fork hook, and send writes to the writer (a queue, an internal endpoint).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time

import numpy as np

import tierstore

DIM = 64


def vectors(ids: range) -> np.ndarray:
    return np.stack([np.random.default_rng(i).standard_normal(DIM).astype(np.float32) for i in ids])


def worker(path: str, stop: mp.Event, published: mp.Value, out: mp.Queue) -> None:
    # the same config as the writer (here: the path and dim; Redis is the writer's embedded one)
    store = tierstore.open(path=path, dim=DIM, cold={"enabled": False}, read_only=True)
    found = queries = 0
    rng = np.random.default_rng()
    with store:
        while not stop.is_set():
            n = published.value  # ids [0, n) are acknowledged by the writer
            if not n:
                continue
            i = int(rng.integers(n))
            hits = store.query(vectors(range(i, i + 1))[0], k=3)
            queries += 1
            found += hits.ids()[:1] == [i]
            try:
                store.upsert([i], vectors(range(i, i + 1)))
            except tierstore.ReadOnlyError:
                pass  # writes belong to the writer
    out.put((queries, found))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--path", default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    path = args.path or tempfile.mkdtemp(prefix="tierstore-mp-")
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: never fork an open store
    writer = tierstore.open(path=path, dim=DIM, cold={"enabled": False},
                            hot={"capacity": 2_000}, warm={"segment_size": 2_000}, policy={"interval": "2s"})
    with writer:
        writer.upsert(range(1000), vectors(range(1000)))
        stop, published, out = ctx.Event(), ctx.Value("q", 1000), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(path, stop, published, out)) for _ in range(args.workers)]
        for p in procs:
            p.start()
        t0, n = time.time(), 1000
        while time.time() - t0 < args.seconds:  # ingest while the workers query
            writer.upsert(range(n, n + 500), vectors(range(n, n + 500)))  # spills to warm past hot.capacity
            n += 500
            published.value = n
            time.sleep(0.5)
        stop.set()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        q = sum(r[0] for r in results)
        print(f"{len(procs)} workers: {q} queries, {sum(r[1] for r in results)} found their id first; "
              f"store holds {len(writer)} vectors {writer.stats()['tiers']['warm']['segments']} warm segments; "
              f"accesses from the workers: {writer.stats()['access']['from_readers']}")


if __name__ == "__main__":
    main()
