"""The policy cycle: plan every vector's tier from its decayed access count and carry out the
moves (on demand, or on a background thread), plus promote on access between cycles.

The planning itself is pure (:mod:`tierstore.policy`: access statistics, placement, admission);
this module, part of the engine, gathers its inputs from the catalog and the access statistics,
explains the moves, and hands the plan to :func:`tierstore.engine.moves.execute`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import filters, tiers
from ..catalog import FLAG_PINNED, TIER_CODES, TIER_NAMES
from ..errors import ClosedError
from ..policy.admission import Admission, admit, defended
from ..policy.hits import HitWindow
from ..policy.plan import DIRECTIONS, HOT, directions, limit_moves, place
from ..results import Move, PolicyReport
from . import moves

log = logging.getLogger("tierstore")


class PolicyEngine:
    """Plans and runs policy cycles for a store (on demand, or on a background thread)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine  # tierstore.engine.core.Engine
        self.cfg = engine.config.policy
        self.hits = HitWindow(self.cfg.hit_window)
        self.moves_total = dict.fromkeys(DIRECTIONS, 0)
        self.cycles = 0
        self.compactions = 0  # cold compactions run by the cycle (see _maybe_compact)
        self.last: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.interrupted: dict[str, Any] | None = None
        self._run_lock = threading.Lock()  # one cycle at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._promoter: threading.Thread | None = None
        # promote on access: from the last cycle (or arm()), the hot slots it may evict (not
        # pinned, not young in hot) and hot's free room; candidates are checked against the
        # placement index as it is when they are promoted
        self._evictable = np.zeros(0, np.int64)
        self._evict_iid = np.zeros(0, np.uint64)  # who held each evictable slot then (slots are reused)
        self._room = 0
        self.admission = Admission()  # the promote-on-access budget (follows what promotions earn)
        # (the first budget counts the traffic since open, not since the store was created)
        self._last_total = int(getattr(engine.access, "total_accesses", 0) or 0)
        self.promoted = 0
        self._pins = []
        for code, name in enumerate(("pin_hot", "pin_warm", "pin_cold")):
            spec = getattr(self.cfg, name)
            if spec is not None:
                self._pins.append((code, filters.compile_filter(spec, engine.schema)))

    # --- background ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.cfg.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tierstore-policy", daemon=True)
            self._thread.start()
            if self.cfg.promote_interval > 0:
                self._promoter = threading.Thread(target=self._promote_loop, name="tierstore-promote", daemon=True)
                self._promoter.start()

    def _promote_loop(self) -> None:
        wait = self.cfg.promote_interval
        while not self._stop.wait(wait):
            try:
                with self.engine.operation():
                    self.promote()
                wait = self.cfg.promote_interval
            except ClosedError:
                return
            except Exception as exc:  # noqa: BLE001 -- statistics-driven: the next try comes soon
                if self._stop.is_set():
                    return
                # (a tier down: back off, up to 30 s, rather than fail and log 10 times a second)
                wait = min(max(2 * wait, 1.0), 30.0)
                log.warning("promote on access failed (next try in %.0fs): %s: %s", wait, type(exc).__name__, exc)

    def promote(self) -> int:
        """Promote on access (between cycles): the vectors whose accesses since the last cycle
        lifted them past its hot threshold go to hot now, each in place of the lowest-scored
        evictable hot vector it beats (with the hysteresis margin), within what is left of
        ``max_moves_per_cycle``. Batched: one call moves all current candidates. Returns #promoted."""
        st = self.engine
        if not self._run_lock.acquire(blocking=False):
            return 0  # a cycle is running: it places everything anyway
        try:
            cand = st.access.take_candidates()
            if not len(cand) or not st.placement.built:
                return 0
            # hot's free room as it is now (ingest may have filled what the last cycle left)
            self._room = min(self._room, st.capacity("hot") - st.catalog.counts()["hot"])
            if self.admission.budget <= 0 and self._room <= 0:
                return 0
            # as the placement index has them now (vectors written since the last cycle included):
            # live, not hot, not pinned (pin(), policy.pin_*), not held where a move() put them
            now = time.time()
            col = st.placement.lookup(cand)
            _, hold = st.access.grace(cand, now, self.cfg.grace_period)
            ok = (col["tier"] > HOT) & ((col["flags"] & FLAG_PINNED) == 0) & (col["pin"] < 0) & (hold < 0)
            cand, cand_iid = cand[ok], col["iid"][ok]
            if not len(cand):
                return 0
            # the hot vectors it may evict: still the ones the cycle saw in those slots (a freed
            # slot may hold a new vector now), still hot, and not pinned, held or young in hot
            ev = st.placement.lookup(self._evictable)
            floor, hold = st.access.grace(self._evictable, now, self.cfg.grace_period)
            keep = ((ev["iid"] == self._evict_iid) & (ev["tier"] == HOT) & ((ev["flags"] & FLAG_PINNED) == 0)
                    & (ev["pin"] < 0) & (hold < 0) & (floor != HOT))
            self._evictable, self._evict_iid = self._evictable[keep], self._evict_iid[keep]
            counts = st.access.counts
            margin = st.access.scaled(self.cfg.min_gain, now)  # (the counts are epoch-scaled)
            up, down = admit(counts, cand, self._evictable, self._room, self.admission.budget, self.cfg.hysteresis,
                             margin)
            if not len(up):
                return 0
            iid_of = dict(zip(cand.tolist(), cand_iid.tolist(), strict=True))
            iid_of.update(zip(self._evictable.tolist(), self._evict_iid.tolist(), strict=True))
            plan: dict[str, list[tuple[int, int]]] = {}
            with st.catalog.read() as txn:
                for slots, dst in ((down, "warm"), (up, "hot")):
                    for s in slots.tolist():
                        e = st.catalog.entry(txn, int(iid_of[s]))
                        if e is None or e.slot != s or e.flags & FLAG_PINNED:
                            continue
                        src = TIER_NAMES[e.tier]
                        if src != dst:
                            plan.setdefault(f"{src}->{dst}", []).append((e.iid, e.version))
            if not plan:
                return 0
            arrays = {d: (np.array([i for i, _ in v], np.uint64), np.array([x for _, x in v], np.int64))
                      for d, v in plan.items()}
            moved, _ = moves.execute(st, arrays, stop=self._stop.is_set)
            for d, n in moved.items():
                self.moves_total[d] += n
            n_up = sum(n for d, n in moved.items() if d.endswith("->hot"))
            self.promoted += n_up
            fill = min(max(self._room, 0), len(up))
            self.admission.promoted(st.access, up, down, fill)
            # the hot set as now believed (a skipped move is put right by the next cycle)
            st.access.believe_hot(up, down)
            self._room -= fill
            gone = np.isin(self._evictable, down)
            self._evictable = np.concatenate([self._evictable[~gone], up])
            self._evict_iid = np.concatenate([self._evict_iid[~gone],
                                              np.array([iid_of[s] for s in up.tolist()], np.uint64)])
            return n_up
        finally:
            self._run_lock.release()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the thread (a running cycle stops after its current batch)."""
        self._stop.set()
        if self._promoter is not None:
            self._promoter.join(timeout)
            if not self._promoter.is_alive():
                self._promoter = None
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None
        if self._thread is None and self._promoter is None:
            # Only the threads were to stop: a later run_policy() (or start()) must run whole,
            # not return before its first batch because the event is still set.
            self._stop.clear()

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.interval):
            try:
                with self.engine.operation():  # counted: close() waits for it to finish
                    self.run()
            except Exception as exc:  # noqa: BLE001 -- the thread must survive a bad cycle
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("policy cycle failed (next try in %.0fs): %s", self.cfg.interval, self.last_error)

    # --- one cycle ----------------------------------------------------------------------------

    def run(self, dry_run: bool = False, examples: int = 20,
            progress: Callable[[str, int], None] | None = None) -> PolicyReport:
        """Plan (and unless ``dry_run``, carry out) one cycle; see TierStore.run_policy."""
        t0 = time.perf_counter()
        try:
            report = self._run(dry_run, examples, progress)
        except Exception as exc:
            if not dry_run:
                self.engine.metrics.policy_cycle(time.perf_counter() - t0, exc)
            raise
        if not dry_run:
            self.engine.metrics.policy_cycle(report.seconds, None)
        return report

    def _run(self, dry_run: bool, examples: int, progress: Callable[[str, int], None] | None) -> PolicyReport:
        with self._run_lock:
            report, plan = self.plan(dry_run, examples)
            watch = getattr(self, "_watch", None)
            if not dry_run and report.total_planned:
                moved, report.skipped = moves.execute(self.engine, plan, stop=self._stop.is_set, progress=progress)
                report.moved = {d: n for d, n in moved.items() if n}
                for d, n in moved.items():
                    self.moves_total[d] += n
                report.after = self.engine.catalog.counts()
            if not dry_run and not self._stop.is_set() and (self._maybe_compact()
                                                             or sum(report.moved.values()) >= 1000):
                self.engine.release_memory()
            report.seconds = time.time() - report.started
            if not dry_run and watch is not None:
                self._arm(*watch)
            if not dry_run:
                self.cycles += 1
                self.last = {"at": report.started, "seconds": report.seconds, "planned": report.total_planned,
                             "moved": report.moved, "skipped": report.skipped, "deferred": report.deferred}
                self.last_error = None
                self.engine.checkpoint()
            return report

    def _maybe_compact(self) -> bool:
        """Merge cold's small segments if enough have piled up (engine.maintenance: its thread
        does it too; the cycle's own demotions write one segment each, so it checks at its end)."""
        if not self.engine.maintenance.merge_if_due():
            return False
        self.compactions += 1
        return True

    @property
    def has_pins(self) -> bool:
        """Whether ``policy.pin_*`` filters are configured."""
        return bool(self._pins)

    def pin_of(self, meta: dict[str, Any]) -> int:
        """The tier the ``policy.pin_*`` filters pin a vector with this metadata to (-1: none);
        pin_hot wins over pin_warm over pin_cold."""
        for code, node in self._pins:
            if filters.matches(node, meta):
                return code
        return -1

    def placement(self) -> dict[str, Any]:
        """The live entries as columns, from the engine's placement index (built from the
        catalog on first use; rebuilt if its per-tier counts ever disagree with the catalog's).
        Taken under the write lock: a consistent snapshot, like one catalog read."""
        st = self.engine
        idx = st.placement
        with st.write_lock:
            if not idx.built or idx.stale or not idx.agrees(st.catalog.counts(), tiers.NAMES):
                if idx.built:
                    idx.rebuilds += 1
                    log.warning("policy: placement index disagreed with the catalog; rebuilt")
                idx.build(st.catalog)
            return idx.snapshot()

    def plan(self, dry_run: bool, examples: int = 20) -> tuple[PolicyReport, dict[str, tuple[np.ndarray, np.ndarray]]]:
        st = self.engine
        now = time.time()
        report = PolicyReport(dry_run=dry_run, started=now)
        snap = self.placement()
        n = len(snap["iid"])
        report.vectors = n
        cur = snap["tier"]
        st.drain_shared_accesses()  # what read-only processes recorded since the last cycle
        cold = st.cold is not None
        caps = {"hot": st.capacity("hot"), "warm": st.capacity("warm") if cold else n}
        if not dry_run:  # half_life = "auto": score the shadows, maybe switch (the counts follow)
            st.access.tune(snap["slot"], caps["hot"])
        report.half_life = self.half_life_info()
        counts, _ = st.access.columns(snap["slot"], now, self.cfg.grace_period)
        # grace protects placement, not the policy's own promotions: an ingested row may not
        # fall below the tier ingest put it in, a row the user moved stays where it was put
        floor, hold = st.access.grace(snap["slot"], now, self.cfg.grace_period)
        pin = np.full(n, -1, np.int8)
        if self._pins:  # (the index keeps each slot's pin_* verdict, computed when it was written)
            pin[:] = snap["pin"]
        flagged = (snap["flags"] & FLAG_PINNED) != 0  # store.pin(): stays in its current tier
        pin[flagged] = cur[flagged]
        held = (hold >= 0) & (pin < 0)
        pin[held] = hold[held]
        report.budgets = dict(caps)
        report.before = {t: int((cur == c).sum()) for c, t in enumerate(TIER_NAMES) if t in st.tiers}
        report.pinned, report.in_grace = int((pin >= 0).sum() - held.sum()), int(((floor >= 0) | held).sum())
        scale = st.access.scale(now)  # epoch-scaled counts -> decayed accesses
        margin = st.access.scaled(self.cfg.min_gain, now)
        full = place(counts, cur, pin, floor, caps["hot"], caps["warm"], self.cfg.hysteresis, cold, margin)
        target = limit_moves(full, cur, counts, caps["hot"], caps["warm"], self.cfg.max_moves_per_cycle, cold)
        report.deferred = int((full != cur).sum() - (target != cur).sum())
        for spec in tiers.ORDER:  # each bounded tier's entry threshold
            if not spec.bounded or spec.name not in caps:
                continue
            c, t = spec.code, spec.name
            free = (full == c) & (pin < 0) & (floor != c)
            if free.any():
                report.thresholds[t] = float(counts[free].min() * scale)
        report.after = {t: int((target == c).sum()) for c, t in enumerate(TIER_NAMES) if t in st.tiers}
        # promote on access until the next cycle: against this plan's hot set and threshold
        hot_rows = target == HOT
        evict = hot_rows & (pin < 0) & (floor != HOT)
        room = caps["hot"] - int(hot_rows.sum())
        low = float(counts[evict].min()) if evict.any() else np.inf
        thr = 0.0 if room > 0 else defended(low, self.cfg.hysteresis, margin)
        self._watch = (snap["slot"], snap["iid"], hot_rows, evict, room, thr)
        hot_over = int((pin == HOT).sum()) - caps["hot"]
        if hot_over > 0:
            report.warnings.append(f"{hot_over} vectors pinned to hot (policy.pin_hot / pin) do not fit hot.capacity "
                                   f"= {caps['hot']}; those not already hot stay where they are")
        plan: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for d, rows in directions(cur, target).items():
            if not len(rows):
                continue
            dst = TIER_CODES[d.split("->")[1]]
            order = np.argsort(-counts[rows] if dst < cur[rows[0]] else counts[rows], kind="stable")
            rows = rows[order]  # promotions best first, demotions least used first
            plan[d] = (snap["iid"][rows], snap["version"][rows])
            report.planned[d] = len(rows)
            if examples:
                report.moves += self._explain(d, rows[:examples], snap, counts * scale, pin, report.thresholds)
        return report, plan

    def _arm(self, slots: np.ndarray, iids: np.ndarray, hot_rows: np.ndarray, evict: np.ndarray, room: int,
             thr: float) -> None:
        """After a cycle: what promote-on-access works against until the next one."""
        if self.cfg.promote_interval <= 0:
            return
        self._evict_iid = iids[evict].astype(np.uint64)
        self._evictable = slots[evict].astype(np.int64)
        self._room = room
        a = self.engine.access
        self.admission.cycle(a, a.total_accesses - self._last_total, self.cfg.max_moves_per_cycle)
        self._last_total = a.total_accesses
        self.engine.access.watch(slots[hot_rows].astype(np.int64), thr)

    def half_life_info(self) -> dict[str, Any]:
        """The half-life in use and, with ``half_life = "auto"``, the shadow hit ratios of the
        last cycles that chose it."""
        a = self.engine.access
        if not hasattr(a, "auto"):  # a read-only process records accesses for the writer's policy
            return {"mode": "writer's"}
        if not a.auto:
            return {"mode": "fixed", "seconds": a.half_life}
        last = a.tuning[-1] if a.tuning else {}
        return {"mode": "auto", "accesses": None if a.grid is None else a.half_life,
                "candidates": None if a.grid is None else [float(h) for h in a.grid],
                "shadow_hit_ratios": last.get("shadows"), "smoothed": last.get("smoothed"),
                "history": [{"half_life": t["half_life"], "traffic": t["traffic"]} for t in a.tuning[-10:]]}

    def _explain(self, d: str, rows: np.ndarray, snap: dict, decayed: np.ndarray, pin: np.ndarray,
                 thr: dict[str, float]) -> list[Move]:
        src, dst = d.split("->")
        uids = self.engine.catalog.user_ids(snap["iid"][rows].tolist())
        out = []
        h, g = self.cfg.hysteresis, self.cfg.min_gain
        for r, uid in zip(rows.tolist(), uids, strict=True):
            c = float(decayed[r])
            if pin[r] == TIER_CODES[dst]:
                why = f"pinned to {dst}"
            elif TIER_CODES[dst] < TIER_CODES[src]:
                why = f"{c:.3g} accesses >= {dst} threshold {thr.get(dst, 0):.3g}"
                if dst == "hot" or src == "cold":
                    why += f" (incumbents get x{1 + h:g} + {g:g} if ever accessed)"
            else:
                plus = f" + {g:g}" if c > 0 else ""
                why = f"{c:.3g} accesses x{1 + h:g}{plus} < {src} threshold {thr.get(src, float('inf')):.3g}"
                if src not in thr:
                    why = f"{src} is over its budget"
            out.append(Move(uid, src, dst, c, why))
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "interval_s": self.cfg.interval, "running": self._thread is not None and self._thread.is_alive(),
            "cycles": self.cycles, "last_cycle": self.last, "last_error": self.last_error,
            "moves_total": dict(self.moves_total), "hit_ratio": self.hits.ratios(),
            "interrupted_at_open": self.interrupted, "cold_compactions": self.compactions,
            "half_life": self.half_life_info(), "promoted_on_access": self.promoted,
            "promote_budget": self.admission.info(),
        }
