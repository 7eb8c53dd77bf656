"""What a chaos worker may have written, and the check that the store holds exactly that.

Shared by the worker subprocess (``chaos_worker.py``), the harness (``chaos_harness.py``) and
``benchmarks/chaos.py``. No servers here: vectors, the acknowledged-state model, applying one
logged operation to it, and :func:`check_store`.

The model maps each id ever written to its **candidates**: the states the store may legally hold
for it. A definite id has one candidate -- the seed of the vector of its last acknowledged write,
or ``None`` (deleted). An operation whose call did not return (the worker was killed in it) or
raised an error other than ``TierUnavailableError(durable=True)`` leaves its ids *in doubt*: the
old candidates plus the new state. A check resolves every in-doubt id to what the store holds (when
that is one of its candidates), so later checks are strict again.

Every vector is a random unit float32 vector drawn from its seed, and every write uses a fresh
seed: no two stored vectors are equal, so "the id's own vector finds the id first" has no ties.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DIM = 32
SCHEMA = {"g": "tag", "s": "numeric"}
TIERS = ("hot", "warm", "cold")
ANY = "*"  # candidate: unknown content (a violation we could not attribute); skip content checks
MAX_REPORTED = 40  # violations kept per check (the count is exact)
ALL_TIERS_SAMPLE = 100  # live ids per check also queried over all tiers


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def vectors(seeds: list[int]) -> np.ndarray:
    return np.stack([vector(s) for s in seeds]) if seeds else np.zeros((0, DIM), np.float32)


def metadata(seed: int) -> dict[str, Any]:
    return {"g": f"g{seed % 7}", "s": seed}


# --- the model ------------------------------------------------------------------------------------


def new_model() -> dict[str, Any]:
    """``state``: id -> candidates; ``tier``: id -> the tier it must be in (when known);
    ``hist``: id -> every seed ever written for it (to name a stale version); ``last``: id ->
    which trial/op last wrote it."""
    return {"next_id": 0, "next_seed": 1, "state": {}, "tier": {}, "hist": {}, "last": {}}


def load_model(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def save_model(model: dict[str, Any], path: Path) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        json.dump(model, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def live_ids(model: dict[str, Any], definite: bool = False) -> list[int]:
    """Ids that exist (or, unless ``definite``, may exist)."""
    out = []
    for k, c in model["state"].items():
        if definite and (len(c) != 1 or c[0] is None):
            continue
        if any(x is not None for x in c):
            out.append(int(k))
    return out


def apply(model: dict[str, Any], op: dict[str, Any], outcome: dict[str, Any] | None, where: str) -> None:
    """Fold one logged operation into the model. ``outcome``: its "ack" line, its "err" line,
    or None when the worker died inside the call."""
    kind = op["op"]
    ok = outcome is not None and (outcome["ev"] == "ack" or (outcome["ev"] == "err" and outcome.get("durable")))
    st, tiers, hist, last = model["state"], model["tier"], model["hist"], model["last"]
    ids = [str(i) for i in op.get("ids", [])]
    if kind == "upsert":
        for i, s in zip(ids, op["seeds"], strict=True):
            model["next_seed"] = max(model["next_seed"], s + 1)
            hist.setdefault(i, []).append(s)
            last[i] = where
            if ok:
                st[i] = [s]
            else:
                st[i] = sorted(set(st.get(i, [None])) | {s}, key=_order)
            if ok and op.get("tier"):  # (a durable error: committed there, indexed later)
                tiers[i] = op["tier"]
            else:
                tiers.pop(i, None)
        model["next_id"] = max(model["next_id"], max((int(i) + 1 for i in ids), default=0))
    elif kind == "delete":
        for i in ids:
            if i not in st:
                continue
            last[i] = where
            st[i] = [None] if ok else sorted(set(st[i]) | {None}, key=_order)
            tiers.pop(i, None)
    elif kind == "move":
        for i in ids:
            c = st.get(i)
            if ok and c is not None and None not in c and not op.get("defer"):
                tiers[i] = op["tier"]
            else:
                tiers.pop(i, None)
    elif kind == "policy":
        tiers.clear()  # the policy may have moved anything (content never changes)
    elif kind in ("compact", "flush", "touch", "load"):
        pass  # content and placement unchanged ("load" is a batch of upserts logged one by one)
    else:
        raise ValueError(f"unknown op {kind!r}")


def _order(x: Any) -> tuple[int, Any]:
    return (0, 0) if x is None else (1, x) if isinstance(x, int) else (2, 0)


def in_doubt(model: dict[str, Any]) -> int:
    return sum(len(c) > 1 for c in model["state"].values())


# --- the check ------------------------------------------------------------------------------------


class Violations:
    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.items: list[dict[str, Any]] = []

    def add(self, kind: str, **info: Any) -> None:
        self.count[kind] += 1
        if len(self.items) < MAX_REPORTED:
            self.items.append({"kind": kind, **info})

    def total(self) -> int:
        return sum(self.count.values())


def _match(rec: Any, cands: list[Any]) -> Any:
    """The candidate seed whose vector and metadata the record holds exactly (or False)."""
    for s in cands:
        if s is None or s == ANY:
            continue
        if np.array_equal(np.asarray(rec.vector, np.float32), vector(s)) and dict(rec.metadata or {}) == metadata(s):
            return s
    return False


def _redis_copy_ok(store: Any, iid: int, seed: int) -> bool | None:
    """Whether Redis's own copy of a hot vector is the acknowledged one (None: cannot tell).
    Best effort, through the hot tier's internals: RediSearch's hash field ``__v`` holds the
    float32 bytes; a vector set's element is quantised, so VEMB is compared by cosine."""
    hot = store.hot
    try:
        if getattr(hot, "backend", None) == "search" and hasattr(hot, "key") and not hasattr(hot, "shards"):
            raw = hot.r.hget(hot.key(iid), "__v")
            if raw is None:
                return False
            if len(raw) != DIM * 4:
                return None  # float16 or another layout: not ours to judge
            return np.array_equal(np.frombuffer(raw, np.float32), vector(seed))
        if getattr(hot, "backend", None) == "vectorset" and hasattr(hot, "vset_key"):
            emb = hot.r.execute_command("VEMB", hot.vset_key, hot.element(iid))
            if not emb:
                return False
            e = np.asarray([float(x) for x in emb], np.float64)
            cos = float(e @ vector(seed)) / (np.linalg.norm(e) or 1.0)
            return cos > 0.98
    except Exception:  # noqa: BLE001 - internals moved, or Redis down: the queries still check
        return None
    return None


def check_store(store: Any, model: dict[str, Any], *, rng: np.random.Generator | None = None,
                deep_verify: bool = True) -> tuple[Violations, dict[str, Any], dict[str, Any]]:
    """Check an open store against the model. Returns (violations, resolved model, stats).

    - ``get`` of every id ever written: an acknowledged live id returns exactly its acknowledged
      vector (float32 equality) and metadata, or one of its in-doubt candidates; a deleted id
      returns None; a known tier (explicit tier= or move, nothing since) is the record's tier;
    - ``scan``: every live record once, no id the model does not know, and ``len()`` agrees;
    - every live id's own vector, queried with ``tiers=[its tier]`` (k = 1..3), finds the id first
      at distance ~0, and so does a query over all tiers; no deleted or unknown id is ever returned;
    - Redis's own copy of each hot vector is the acknowledged one (best effort, see _redis_copy_ok);
    - ``verify()`` reports ok.
    """
    rng = rng or np.random.default_rng(0)
    v = Violations()
    out = json.loads(json.dumps(model))
    st, last = out["state"], out["last"]
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.perf_counter() - t0 - sum(phases.values()), 3)

    # scan: exactly once, nothing unknown
    scanned: dict[int, Any] = {}
    for batch in store.scan(batch_size=500):
        for r in batch:
            if r.id in scanned:
                v.add("scan-duplicate", id=r.id)
            scanned[r.id] = r
    n = len(store)
    if n != len(scanned):
        v.add("len-mismatch", len=n, scanned=len(scanned))
    for i in scanned:
        if str(i) not in st:
            v.add("unknown-id", id=i, tier=scanned[i].tier)

    lap("scan")
    # get: content of every id ever written
    keys = sorted(st, key=int)
    recs = store.get([int(k) for k in keys]) if keys else []
    live: dict[int, tuple[int, str]] = {}  # id -> (seed, tier)
    for k, rec in zip(keys, recs, strict=True):
        cands = st[k]
        i = int(k)
        if rec is None:
            if None in cands or ANY in cands:
                st[k] = [None]
            else:
                v.add("acked-missing", id=i, expected=cands, last=last.get(k))
                st[k] = [None]
            if i in scanned:
                v.add("scan-get-disagree", id=i)
            continue
        if i not in scanned:
            v.add("scan-get-disagree", id=i)
        if ANY in cands:
            s = _match(rec, out["hist"].get(k, []))
            st[k] = [s] if s is not False else [ANY]
            if s is not False:
                live[i] = (s, rec.tier)
            continue
        s = _match(rec, cands)
        if s is False:
            stale = _match(rec, out["hist"].get(k, []))
            v.add("deleted-present" if cands == [None] else "wrong-content", id=i, tier=rec.tier,
                  expected=cands, found=(f"seed {stale}" if stale is not False else "a vector never written"),
                  last=last.get(k))
            st[k] = [stale] if stale is not False else [ANY]
            if stale is not False:
                live[i] = (stale, rec.tier)
            continue
        st[k] = [s]
        live[i] = (s, rec.tier)
        want = out["tier"].get(k)
        if want is not None and want != rec.tier:
            v.add("wrong-tier", id=i, expected=want, found=rec.tier, last=last.get(k))
    out["tier"] = {k: t for k, t in out["tier"].items() if st.get(k) not in ([None], [ANY])}
    gone = {int(k) for k, c in st.items() if c == [None]}

    lap("get")
    # queries: own tier, then all tiers
    nq = 0
    by_tier: dict[str, list[int]] = {}
    for i, (_s, t) in live.items():
        by_tier.setdefault(t, []).append(i)
    # (one query() each: query_batch's warm kernel is compiled anew in each process, ~4 s)
    for t, ids in sorted(by_tier.items()):
        for i in ids:
            h = store.query(vector(live[i][0]), k=int(rng.integers(1, 4)), tiers=[t], ef=256, nprobe=100_000)
            nq += 1
            _check_hits(v, h, i, t, gone, st, scope=f"{t}-only")
    sample = list(live) if len(live) <= ALL_TIERS_SAMPLE else \
        [int(x) for x in rng.choice(list(live), ALL_TIERS_SAMPLE, replace=False)]
    for i in sample:  # over all tiers: a sample (every id was just checked in its own tier)
        h = store.query(vector(live[i][0]), k=3, ef=256, nprobe=100_000)
        nq += 1
        _check_hits(v, h, i, live[i][1], gone, st, scope="all-tiers")

    lap("query")
    # Redis's own copies of hot vectors
    redis_checked = 0
    for i, (s, t) in live.items():
        if t != "hot":
            continue
        ok = _redis_copy_ok(store, store.catalog.iid(i), s)
        if ok is None:
            continue
        redis_checked += 1
        if not ok:
            v.add("redis-copy-stale", id=i, last=last.get(str(i)))

    lap("redis")
    rep = store.verify(deep=deep_verify)
    if not rep.get("ok"):
        v.add("verify", problems=rep.get("problems", [])[:10])
    lap("verify")
    counts = Counter(t for _s, t in live.values())
    stats = {"live": len(live), "deleted": len(gone), "queries": nq, "redis_checked": redis_checked,
             "tiers": dict(counts), "seconds": round(time.perf_counter() - t0, 3), "phases": phases,
             "deep_verify": deep_verify}
    return v, out, stats


def _check_hits(v: Violations, h: Any, i: int, tier: str, gone: set[int], st: dict, *, scope: str) -> None:
    got = [x.id for x in h]
    if h.partial:
        v.add("partial-answer", id=i, scope=scope, tiers={n: getattr(r, "error", None) for n, r in h.tiers.items()})
    if not got or got[0] != i:
        v.add("own-vector-not-first", id=i, tier=tier, scope=scope, got=got[:3],
              dist=[round(float(x.distance), 6) for x in h][:3])
    elif float(h[0].distance) > 1e-4:
        v.add("own-vector-distance", id=i, tier=tier, scope=scope, dist=float(h[0].distance))
    if len(got) != len(set(got)):
        v.add("duplicate-hit", id=i, scope=scope, got=got)
    for x in got:
        if x in gone:
            v.add("deleted-returned", id=x, scope=scope)
        elif str(x) not in st:
            v.add("unknown-returned", id=x, scope=scope)
