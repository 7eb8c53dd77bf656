"""The crash campaign: kill -9 a writer (and its servers) at random points of every operation,
then check every acknowledged write by content.

A :class:`Campaign` owns one store directory, an S3 server (``weed mini``, killed and restarted by
the campaign) and -- with ``redis="external"`` -- a redis-server it may kill too (with
``redis="embedded"`` the store owns its redis-server, which the campaign kills by its pid file).
Each :meth:`Campaign.trial` starts ``chaos_worker.py``, which opens the store, checks it against the
model of everything acknowledged so far (chaos_model.check_store: the check of the *previous*
trial's crash), then runs seeded random operations; the campaign SIGKILLs it at a planned point:

- ``open``: inside ``tierstore.open`` (a random fraction of the time opens take), sometimes with
  the redis-server and/or S3 killed in the same instant; or a server killed while the store
  opens and the worker left running (``server-in-open``);
- ``op``: inside an operation of a chosen kind (upsert new/existing, delete, move, policy,
  compact, flush), a random fraction of that kind's typical duration after it began; sometimes
  a server is killed first and the worker killed a moment later (it sees the outage), or both
  in the same instant;
- ``none`` (a few trials): the worker runs a few operations and closes cleanly.

Killed servers are restarted before the next trial (an embedded redis-server is the store's to
restart). The worker's log (intents before each call, acks after) is folded into the model: what
returned is acknowledged, what the worker died in is in doubt (either outcome is legal).
``Campaign.final_check()`` opens once more without killing, to check the last crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_model as cm  # noqa: E402

from tierstore.services import RedisServer, S3Server, pid_alive  # noqa: E402

WORKER = Path(__file__).resolve().with_name("chaos_worker.py")
REPO = Path(__file__).resolve().parents[2]
OP_KINDS = ("upsert_new", "upsert_existing", "delete", "move", "policy", "compact", "flush")


def _die_with_parent() -> None:
    """In the worker, before exec: SIGKILL when the campaign process dies (never an orphan that
    goes on writing)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def op_kind(op: dict[str, Any]) -> str:
    if op["op"] == "upsert":
        return "upsert_new" if op.get("new") else "upsert_existing"
    return op["op"]


class Campaign:
    def __init__(self, root: Path, *, backend: str, redis: str = "embedded", seed: int = 0, size: int = 300,
                 verbose: bool = False, src: str | os.PathLike[str] | None = None) -> None:
        """``src``: a directory holding the ``tierstore`` package the workers run (e.g. an older
        commit: ``git archive <commit> tierstore | tar -x -C DIR``); default: this checkout
        (or ``$TIERSTORE_CHAOS_SRC``). The campaign's own servers always come from this checkout."""
        assert backend in ("search", "vectorset") and redis in ("embedded", "external")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.backend, self.redis_mode, self.seed, self.size = backend, redis, seed, size
        self.verbose = verbose
        src = src or os.environ.get("TIERSTORE_CHAOS_SRC") or REPO
        self.src = Path(src).resolve()
        if not (self.src / "tierstore" / "__init__.py").is_file():
            raise ValueError(f"src: {str(self.src)!r} holds no tierstore package")
        self.rng = random.Random(f"{seed}-{backend}-{redis}")
        self.store_path = self.root / "store"
        self.model = cm.new_model()
        self.model_path = self.root / "model.json"
        self.redis: RedisServer | None = None
        if redis == "external":
            self.redis = RedisServer(self.root / "redis", port=0, search=backend == "search").start()
        self.s3 = S3Server(self.root / "s3").start()
        self.cold_url = f"s3://tierstore/chaos-{uuid.uuid4().hex[:10]}"
        self.durations: dict[str, list[float]] = {"open": []}
        self.pending_kills: list[dict[str, Any]] = []  # kills since the last check
        self.trials: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.checks: list[dict[str, Any]] = []
        self.t = 0

    # --- servers ----------------------------------------------------------------------------

    def _embedded_redis_pid(self) -> int | None:
        try:
            pid = int((self.store_path / "redis" / "redis-server.pid").read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        return pid if comm.startswith("redis") and pid_alive(pid) else None

    def kill_redis(self) -> bool:
        if self.redis is not None:
            self.redis.kill()
            return True
        pid = self._embedded_redis_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def kill_server(self, which: str) -> bool:
        if which == "redis":
            return self.kill_redis()
        self.s3.kill()
        return True

    def restart_servers(self) -> None:
        if self.redis is not None and not self.redis.alive():
            self.redis.start()
        if not self.s3.alive():
            self.s3.start()
            self._s3_serving()

    def _s3_serving(self, timeout: float = 60.0) -> None:
        """After a restart ``weed mini`` answers ListBuckets before it serves object data again
        (GETs answer InternalError for a few seconds): wait until a probe object round-trips and
        the store's newest manifest reads, so an open right after is not failed by the harness."""
        bucket, prefix = self.cold_url[len("s3://"):].split("/", 1)
        c = self.s3.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                c.put_object(Bucket=bucket, Key="chaos-probe", Body=b"x")
                assert c.get_object(Bucket=bucket, Key="chaos-probe")["Body"].read() == b"x"
                keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/manifest/")
                        .get("Contents", [])]
                if keys:
                    c.get_object(Bucket=bucket, Key=max(keys))["Body"].read()
                return
            except Exception as exc:  # noqa: BLE001 - not serving yet
                if time.monotonic() > deadline:
                    self.notes.append(f"t{self.t - 1}: S3 not serving {timeout:.0f} s after its restart: {exc}")
                    return
                time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            pid = self._embedded_redis_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
        if self.redis is not None:
            self.redis.stop()
        self.s3.stop()

    # --- planning ----------------------------------------------------------------------------

    def est(self, what: str, default: float) -> float:
        xs = self.durations.get(what) or []
        return statistics.median(xs[-20:]) if xs else default

    def plan(self) -> dict[str, Any]:
        r = self.rng
        if not self.model["state"]:  # the first trial: kill while the store is being filled
            return {"phase": "op", "kind": "upsert_new", "victims": [], "mode": "together"}
        x = r.random()
        if x < 0.06:
            return {"phase": "none", "victims": []}
        victims: list[str] = []
        y = r.random()
        if y < 0.25:
            victims = ["redis"]
        elif y < 0.37:
            victims = ["s3"]
        elif y < 0.45:
            victims = ["redis", "s3"]
        if x < 0.30:
            mode = "server-in-open" if victims and r.random() < 0.35 else "together"
            return {"phase": "open", "victims": victims, "mode": mode}
        kinds = list(OP_KINDS)
        kind = kinds[self.t % len(kinds)] if r.random() < 0.7 else r.choice(kinds)
        mode = r.choice(["together", "server-first"]) if victims else "together"
        return {"phase": "op", "kind": kind, "nth": r.randint(1, 2), "victims": victims, "mode": mode}

    # --- one trial ---------------------------------------------------------------------------

    def trial(self, plan: dict[str, Any] | None = None, *, check_only: bool = False) -> dict[str, Any]:
        t = self.t
        self.t += 1
        plan = plan or ({"phase": "none", "victims": []} if check_only else self.plan())
        wseed = self.rng.randrange(2**31)
        log_path = self.root / "logs" / f"t{t:04d}.log"
        args = {"path": str(self.store_path), "backend": self.backend,
                "redis_url": self.redis.url if self.redis else None,
                "cold_url": self.cold_url, "endpoint_url": self.s3.endpoint_url, "size": self.size,
                "model": str(self.model_path), "model_out": str(self.root / "model-out.json"),
                "log": str(log_path), "seed": wseed, "check": True, "go": str(self.root / "go"),
                # verify(deep=True) downloads every cold object: every 4th trial and the last check
                "deep_verify": check_only or t % 4 == 0,
                "max_ops": 0 if check_only else (8 if plan["phase"] == "none" else 10_000)}
        cm.save_model(self.model, self.model_path)
        # the worker checks once this exists: at once, except while a server restarts under an open
        (self.root / "go").touch()
        if plan.get("mode") == "server-in-open":
            (self.root / "go").unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.root / "model-out.json").unlink()
        (self.root / f"args-{t:04d}.json").write_text(json.dumps(args))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
               "PYTHONPATH": os.pathsep.join([str(self.src), str(REPO), os.environ.get("PYTHONPATH", "")])}
        out = open(self.root / "logs" / f"t{t:04d}.out", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, str(WORKER), str(self.root / f"args-{t:04d}.json")],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                preexec_fn=_die_with_parent)
        out.close()
        rec: dict[str, Any] = {"trial": t, "seed": wseed, "plan": plan, "killed": False, "killed_servers": []}
        try:
            self._drive(proc, log_path, plan, rec)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            rec["rc"] = proc.returncode
        self.restart_servers()
        self._fold(log_path, rec)
        self.trials.append(rec)
        if self.verbose:
            c = rec.get("check")
            print(f"[{self.backend}/{self.redis_mode}] trial {t}: {plan['phase']}/{plan.get('kind', plan.get('mode'))} "
                  f"victims={rec['killed_servers']} hit={rec.get('hit')} "
                  f"check={'-' if c is None else c['violations']} live={len(cm.live_ids(self.model))} "
                  f"doubt={cm.in_doubt(self.model)}", flush=True)
        return rec

    def final_check(self) -> dict[str, Any]:
        return self.trial(check_only=True)

    def _lines(self, path: Path) -> list[dict[str, Any]]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def _wait(self, proc: subprocess.Popen, log_path: Path, pred: Any, timeout: float) -> dict[str, Any] | None:
        """Poll the worker's log until a line satisfies ``pred`` (returns it), the worker exits or
        ``timeout`` passes (None)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = self._lines(log_path)
            for ln in lines[seen:]:
                if pred(ln):
                    return ln
            seen = len(lines)
            if proc.poll() is not None:
                return None
            time.sleep(0.005)
        return None

    def _kill(self, proc: subprocess.Popen, plan: dict[str, Any], rec: dict[str, Any]) -> None:
        """Kill the planned servers and the worker (server first: a crash of both at once)."""
        if plan["mode"] == "server-first" and plan["victims"]:
            for s in plan["victims"]:
                if self.kill_server(s):
                    rec["killed_servers"].append(s)
            time.sleep(self.rng.uniform(0.1, 0.8))  # the worker meets the outage
        else:
            for s in plan["victims"]:
                if self.kill_server(s):
                    rec["killed_servers"].append(s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            rec["killed"] = True
        rec["kill_t"] = time.time()

    def _drive(self, proc: subprocess.Popen, log_path: Path, plan: dict[str, Any], rec: dict[str, Any]) -> None:
        phase = plan["phase"]
        if phase == "none":
            if self._wait(proc, log_path, lambda ln: ln["ev"] in ("closed",), 300) is None and proc.poll() is None:
                rec["hang"] = "no clean close within 300 s"
            return
        opening = self._wait(proc, log_path, lambda ln: ln["ev"] == "opening", 120)
        if opening is None:
            rec["hang"] = "worker never started opening"
            return
        if phase == "open":
            delay = self.rng.uniform(0.0, 1.1 * self.est("open", 1.5))
            time.sleep(max(0.0, opening["t"] + delay - time.time()))
            if plan["mode"] == "server-in-open":
                for s in plan["victims"]:
                    if self.kill_server(s):
                        rec["killed_servers"].append(s)
                time.sleep(self.rng.uniform(0.1, 0.5))
                self.restart_servers()  # external ones; the embedded one is the store's to restart
                (self.root / "go").touch()  # the check starts when the servers are back
                # and then a kill in some operation, like an "op" trial
                plan = {**plan, "phase2": "op", "kind": self.rng.choice(OP_KINDS), "nth": 1, "victims": [],
                        "mode": "together"}
                self._kill_in_op(proc, log_path, plan, rec)
                return
            self._kill(proc, plan, rec)
            return
        self._kill_in_op(proc, log_path, plan, rec)

    def _kill_in_op(self, proc: subprocess.Popen, log_path: Path, plan: dict[str, Any], rec: dict[str, Any]) -> None:
        checked = self._wait(proc, log_path, lambda ln: ln["ev"] in ("checked", "open_error", "check_error"), 300)
        if checked is None:
            if proc.poll() is None:
                rec["hang"] = "no check within 300 s of opening"
            return
        if checked["ev"] != "checked":
            return
        kind = plan["kind"]
        count = [0]

        def want(ln: dict[str, Any]) -> bool:
            if ln["ev"] == "op" and op_kind(ln) == kind:
                count[0] += 1
                return count[0] >= plan.get("nth", 1)
            return False

        intent = self._wait(proc, log_path, want, 30)
        if intent is None:  # that kind did not come up: kill wherever the worker is now
            if proc.poll() is not None:
                return
            rec["fallback"] = True
            time.sleep(self.rng.uniform(0, 0.5))
        else:
            delay = self.rng.uniform(0.0, 1.2 * self.est(kind, 0.3))
            time.sleep(max(0.0, intent["t"] + delay - time.time()))
        self._kill(proc, plan, rec)

    # --- folding the log into the model --------------------------------------------------------

    def _fold(self, log_path: Path, rec: dict[str, Any]) -> None:
        lines = self._lines(log_path)
        evs = {ln["ev"] for ln in lines}
        legit_open_error = bool(rec["killed_servers"]) and (self.redis is not None or "s3" in rec["killed_servers"])
        check: dict[str, Any] | None = None
        for ln in lines:
            if ln["ev"] == "opened":
                self.durations["open"].append(ln["dt"])
            elif ln["ev"] == "checked":
                check = {"violations": ln["violations"], "kinds": ln["kinds"], "items": ln["items"],
                         "stats": ln["stats"]}
                self.model = cm.load_model(self.root / "model-out.json")
            elif ln["ev"] in ("open_error", "check_error"):
                legit = ln["ev"] == "open_error" and legit_open_error and ln["type"] == "TierUnavailableError"
                if not legit:
                    check = {"violations": 1, "kinds": {ln["ev"]: 1},
                             "items": [{"kind": ln["ev"], "type": ln["type"], "msg": ln["msg"][:600]}], "stats": {}}
                rec["open_error"] = {"type": ln["type"], "msg": ln["msg"][:300], "legit": legit}
        if rec.get("hang"):
            check = {"violations": 1, "kinds": {"hang": 1}, "items": [{"kind": "hang", "what": rec["hang"]}],
                     "stats": {}}
        if check is not None:
            check["after_kills"] = list(self.pending_kills)
            check["trial"] = rec["trial"]
            rec["check"] = check
            self.checks.append(check)
            if "checked" in evs:
                self.pending_kills = []
        # operations: intents and outcomes in order
        outcomes = {ln["n"]: ln for ln in lines if ln["ev"] in ("ack", "err")}
        in_flight = None
        for ln in lines:
            if ln["ev"] != "op":
                continue
            outcome = outcomes.get(ln["n"])
            cm.apply(self.model, ln, outcome, f"t{rec['trial']}/op{ln['n']}")
            if outcome is None:
                in_flight = ln
            elif outcome["ev"] == "ack":
                self.durations.setdefault(op_kind(ln), []).append(outcome["dt"])
        rec["ops"] = sum(ln["ev"] == "op" for ln in lines)
        rec["errors"] = dict(Counter(o.get("type") for o in outcomes.values() if o["ev"] == "err"))
        if rec["killed"]:
            if in_flight is not None:
                hit = {"phase": "op", "op": op_kind(in_flight), "in_op_s": round(rec["kill_t"] - in_flight["t"], 3),
                       "typical_s": round(self.est(op_kind(in_flight), 0.0), 3), "ids": len(in_flight.get("ids", []))}
            elif "opened" not in evs:
                hit = {"phase": "open" if "opening" in evs else "start"}
            elif "checked" not in evs:
                hit = {"phase": "check"}
            else:
                hit = {"phase": "between-ops"}
            hit["servers"] = rec["killed_servers"]
            rec["hit"] = hit
            self.pending_kills.append({"trial": rec["trial"], "seed": rec["seed"], **hit})

    # --- summary -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        kills = [r for r in self.trials if r["killed"]]
        hits = Counter()
        for r in kills:
            h = r["hit"]
            hits[h["phase"] if h["phase"] != "op" else "op:" + h["op"]] += 1
        viol = [c for c in self.checks if c["violations"]]
        kinds: Counter[str] = Counter()
        for c in viol:
            kinds.update(c["kinds"])
        return {"backend": self.backend, "redis": self.redis_mode, "seed": self.seed, "size": self.size,
                "trials": len(self.trials), "kills": len(kills),
                "server_kills": dict(Counter(s for r in self.trials for s in r["killed_servers"])),
                "kill_points": dict(sorted(hits.items())), "checks": len(self.checks),
                "checks_with_violations": len(viol), "violations": sum(c["violations"] for c in viol),
                "violation_kinds": dict(kinds), "failures": viol, "notes": self.notes}
