"""A chaos worker: ``python tests/chaos/chaos_worker.py ARGS.json``.

Opens the store, checks it against the model the harness handed over (``args["model"]``, see
chaos_model.check_store), writes the resolved model (``args["model_out"]``), then runs a seeded
random sequence of operations until it is killed or has run ``args["max_ops"]`` (then it closes
the store cleanly). Every event goes to ``args["log"]`` as one JSON line, fsync'd:

- ``opening`` / ``opened`` / ``open_error``: around ``tierstore.open``;
- ``checked``: the check's violations and stats (after ``model_out`` is durable);
- ``op``: an operation's intent, written *before* the call (ids, seeds of the new vectors, tier);
- ``ack``: written *after* the call returned; ``err``: it raised (type, ``durable``, message).

An ``op`` without ``ack``/``err`` is the call the worker died in.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_model as cm  # noqa: E402

OPS = ("upsert_new", "upsert_existing", "delete", "move", "policy", "compact", "flush")


def store_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """The chaos store: small tiers so every op moves things between all three."""
    size = int(args["size"])
    hot: dict[str, Any] = {"backend": args["backend"], "capacity": max(20, size // 4), "socket_timeout": "3s",
                           "index_wait": "60s"}
    if args.get("redis_url"):
        hot["redis_url"] = args["redis_url"]
    cold = {"url": args["cold_url"], "endpoint_url": args["endpoint_url"], "max_attempts": 2, "timeout": "3s",
            "segment_size": max(50, size // 3), "auto_compact_segments": 4, "compact_threshold": 0.2}
    return {"path": args["path"], "dim": cm.DIM, "metric": "cosine", "schema": dict(cm.SCHEMA), "env": {},
            "repeat_cache": 1000, "hot": hot, "cold": cold,
            "warm": {"capacity": max(20, size // 3), "segment_size": max(40, size // 6), "compact_threshold": 0.2},
            "policy": {"interval": 0, "grace_period": 0, "batch_size": max(10, size // 20),
                       "max_moves_per_cycle": max(50, size // 2), "half_life": "1h"}}


class Log:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def __call__(self, ev: str, **kw: Any) -> None:
        self.f.write(json.dumps({"ev": ev, "t": time.time(), **kw}) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())


def pick(rng: random.Random, ids: list[int], lo: int, hi: int) -> list[int]:
    return rng.sample(ids, min(len(ids), rng.randint(lo, hi))) if ids else []


def plan_op(rng: random.Random, model: dict[str, Any], size: int, weights: dict[str, float]) -> dict[str, Any] | None:
    live = cm.live_ids(model)
    kinds = list(weights)
    w = [weights[k] for k in kinds]
    if len(live) < 0.9 * size:  # keep the store near its size
        w = [x * (4 if k == "upsert_new" else 0.5 if k == "delete" else 1) for k, x in zip(kinds, w, strict=True)]
    elif len(live) > 1.1 * size:
        w = [x * (4 if k == "delete" else 0.2 if k == "upsert_new" else 1) for k, x in zip(kinds, w, strict=True)]
    kind = rng.choices(kinds, w)[0]
    tier = rng.choice([None, None, "hot", "warm", "cold"])
    if kind == "upsert_new":
        n = rng.randint(1, max(2, size // 10))
        ids = list(range(model["next_id"], model["next_id"] + n))
        seeds = list(range(model["next_seed"], model["next_seed"] + n))
        return {"op": "upsert", "ids": ids, "seeds": seeds, "tier": tier, "new": True}
    if not live:
        return None
    if kind == "upsert_existing":
        ids = pick(rng, live, 1, max(2, size // 15))
        seeds = list(range(model["next_seed"], model["next_seed"] + len(ids)))
        # in place (hot -> hot included) as often as elsewhere: tier=None keeps ingest_tier (hot)
        return {"op": "upsert", "ids": ids, "seeds": seeds, "tier": rng.choice([None, None, "hot", tier])}
    if kind == "delete":
        return {"op": "delete", "ids": pick(rng, live, 1, max(2, size // 20))}
    if kind == "move":
        dst = rng.choice(cm.TIERS)
        op = {"op": "move", "ids": pick(rng, live, 1, max(2, size // (20 if dst == "hot" else 8))), "tier": dst}
        if dst == "cold" and rng.random() < 0.2:
            op["defer"] = True
        return op
    if kind == "policy":
        touched = pick(rng, live, 1, max(2, size // 4))
        return {"op": "policy", "touch": touched, "repeat": rng.randint(1, 4)}
    if kind == "compact":
        return {"op": "compact", "threshold": rng.choice([None, 0.0])}
    return {"op": "flush"}


def run_op(store: Any, op: dict[str, Any]) -> Any:
    kind = op["op"]
    if kind == "upsert":
        return store.upsert(op["ids"], cm.vectors(op["seeds"]), [cm.metadata(s) for s in op["seeds"]],
                            tier=op.get("tier"))
    if kind == "delete":
        return store.delete(op["ids"])
    if kind == "move":
        r = store.move(op["ids"], op["tier"], defer=bool(op.get("defer")))
        return {"moved": r.moved, "already": r.already, "missing": r.missing, "queued": r.queued}
    if kind == "policy":
        for _ in range(op["repeat"]):
            store.touch(op["touch"])
        r = store.run_policy()
        return {"moved": getattr(r, "moved", None), "planned": getattr(r, "planned", None)}
    if kind == "compact":
        return store.compact(op["threshold"])
    if kind == "flush":
        return store.flush()
    raise ValueError(kind)


def jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except (TypeError, ValueError):
        return repr(x)[:200]


def main() -> int:
    args = json.loads(Path(sys.argv[1]).read_text())
    log = Log(args["log"])
    log("start", pid=os.getpid())
    import numpy as np

    import tierstore
    from tierstore.errors import TierUnavailableError

    model = cm.load_model(Path(args["model"]))
    t0 = time.time()
    log("opening")
    try:
        store = tierstore.open(**store_kwargs(args))
    except Exception as exc:  # noqa: BLE001 - reported to the harness
        log("open_error", type=type(exc).__name__, msg=str(exc)[:2000], tb=traceback.format_exc()[-3000:])
        return 3
    log("opened", dt=time.time() - t0)
    go = args.get("go")
    while go and not os.path.exists(go):  # the harness is restarting a server it killed during open
        time.sleep(0.02)
    if args.get("check", True):
        try:
            viol, model, stats = cm.check_store(store, model, rng=np.random.default_rng(args["seed"]),
                                                 deep_verify=bool(args.get("deep_verify", True)))
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a finding
            log("check_error", type=type(exc).__name__, msg=str(exc)[:2000], tb=traceback.format_exc()[-3000:])
            return 4
        cm.save_model(model, Path(args["model_out"]))
        log("checked", violations=viol.total(), kinds=dict(viol.count), items=viol.items, stats=stats)
        if viol.total():
            # repair what the store did not (so later trials test fresh damage, not this one again)
            try:
                store.rebuild_hot()
                log("repaired")
            except Exception as exc:  # noqa: BLE001
                log("repair_error", type=type(exc).__name__, msg=str(exc)[:500])
    else:
        cm.save_model(model, Path(args["model_out"]))
    rng = random.Random(args["seed"])
    weights = args.get("weights") or dict.fromkeys(OPS, 1.0)
    for j in range(int(args.get("max_ops", 0))):
        if j == 0 and not model["state"]:  # a new store: fill it (spills hot -> warm -> cold)
            n = int(args["size"])
            op = {"op": "upsert", "ids": list(range(n)), "seeds": list(range(model["next_seed"], model["next_seed"] + n)),
                  "tier": None, "new": True}
        else:
            op = plan_op(rng, model, int(args["size"]), weights)
        if op is None:
            continue
        log("op", n=j, **op)
        t = time.time()
        try:
            res = run_op(store, op)
        except Exception as exc:  # noqa: BLE001 - an error is an outcome
            durable = isinstance(exc, TierUnavailableError) and bool(exc.durable)
            out = {"ev": "err", "type": type(exc).__name__, "durable": durable}
            log("err", n=j, dt=time.time() - t, type=out["type"], durable=durable, msg=str(exc)[:300])
        else:
            out = {"ev": "ack"}
            log("ack", n=j, dt=time.time() - t, result=jsonable(res))
        cm.apply(model, op, out, f"pid{os.getpid()}/op{j}")
    store.close()
    log("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
