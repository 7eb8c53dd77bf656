"""Prometheus metrics of a store: ``store.metrics`` (a :class:`StoreMetrics`).

Most numbers already exist as plain counters on the store and its tiers (queries, upserts, S3
GETs, cache hits, vectors per tier, the policy's hit window...): they are read when Prometheus
scrapes, by a custom collector, so the hot path keeps no second copy of them. What needs an
observation per event -- latency histograms, per-tier search counts, moves per direction, errors
by type, policy cycle durations -- is kept here in plain Python lists under one lock (a query
costs a couple of microseconds, see README "Metrics").

Every sample carries a ``store`` label (``store.name``, else the store's path), so several stores
can be exported through one registry::

    store = tierstore.open("a.toml")
    store.metrics.registry                      # this store's own CollectorRegistry
    store.metrics.register(prometheus_client.REGISTRY)   # or tierstore.open(..., registry=REGISTRY)
    prometheus_client.generate_latest(store.metrics.registry)

Stores sharing a registry are exported by one collector per registry (a metric family appears
once, with one sample per store), as the text format requires. A closed store leaves every
registry it joined. ``[metrics] port`` serves ``store.metrics.registry`` over HTTP while the store
is open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from . import tiers
from .catalog import TIER_NAMES
from .errors import ConfigError, TierStoreError

if TYPE_CHECKING:
    from .engine.core import Engine
    from .results import Hits

log = logging.getLogger("tierstore")

# Query latencies run from ~100 us (a warm or hot hit) to seconds (a cache-cold S3 read).
QUERY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0)
# A policy cycle: milliseconds (nothing to move) to minutes (a large rebalance).
CYCLE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
TIERS = TIER_NAMES  # ("hot", "warm", "cold")


class Histogram:
    """A fixed-bucket histogram without locking of its own (the owner holds one lock for all)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """Count ``n`` observations of ``value`` (a batch of n queries timed together)."""
        self.counts[bisect_left(self.bounds, value)] += n  # le: value <= bound
        self.sum += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, ending with ``+Inf``."""
        out, acc = [], 0
        for b, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += c
            out.append(("+Inf" if b == float("inf") else repr(b), acc))
        return out

    def copy(self) -> Histogram:
        h = Histogram.__new__(Histogram)
        h.bounds, h.counts, h.sum = self.bounds, list(self.counts), self.sum
        return h


class StoreMetrics:
    """The Prometheus side of one store: counters it keeps itself (latency histograms, tier
    searches, moves, errors, policy cycles), a collector that reads the store's own counters at
    scrape time, the store's :attr:`registry`, and the optional HTTP exporter."""

    def __init__(self, engine: Engine, name: str, registry: CollectorRegistry | None = None) -> None:
        self.engine = engine
        self.name = name
        self._lock = threading.Lock()
        self.query = Histogram(QUERY_BUCKETS)
        self.tier = {t: Histogram(QUERY_BUCKETS) for t in TIERS}
        self.tier_errors = dict.fromkeys(TIERS, 0)
        self.results = dict.fromkeys(TIERS, 0)
        self.errors: Counter[tuple[str, str]] = Counter()  # (op, exception type)
        self.moves: Counter[tuple[str, str]] = Counter()  # (direction, trigger)
        self.cycle = Histogram(CYCLE_BUCKETS)
        self.cycles = {"ok": 0, "error": 0}
        self.registry = CollectorRegistry(auto_describe=True)
        self._joined: list[_Hub] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.addr: str | None = None
        self.port: int | None = None
        self.register(self.registry)
        if registry is not None:
            self.register(registry)

    # --- registries ----------------------------------------------------------------------------

    def register(self, registry: CollectorRegistry) -> None:
        """Export this store through ``registry`` too (e.g. ``prometheus_client.REGISTRY``).
        Stores sharing a registry need distinct names (``store.name``)."""
        hub = _hub(registry)
        hub.add(self)
        with self._lock:
            if hub not in self._joined:
                self._joined.append(hub)

    def unregister(self, registry: CollectorRegistry) -> None:
        hub = _hubs.get(registry)
        if hub is not None:
            hub.remove(self)
            with self._lock, contextlib.suppress(ValueError):
                self._joined.remove(hub)

    # --- observations (called by the store) ----------------------------------------------------

    def observe_queries(self, out: list[Hits], seconds: float) -> None:
        """One call per query or query batch: ``seconds`` per query. The tiers of a batch are
        searched together, so each tier's time is likewise divided among its queries.
        (Inlined histogram updates: this runs on every query, ~1-2 us.)"""
        m = len(out)
        bounds = self.query.bounds
        results = self.results
        with self._lock:
            h = self.query
            h.counts[bisect_left(bounds, seconds)] += m
            h.sum += seconds * m
            for name, rep in out[0].tiers.items():
                if rep.searched:
                    v = rep.latency_ms / (1000.0 * m)
                    h = self.tier[name]
                    h.counts[bisect_left(bounds, v)] += m
                    h.sum += v * m
                    if not rep.ok:
                        self.tier_errors[name] += m
                    if m == 1:
                        results[name] += rep.returned
            if m > 1:
                for hits in out:
                    for name, rep in hits.tiers.items():
                        results[name] += rep.returned

    def error(self, op: str, exc: BaseException) -> None:
        with self._lock:
            self.errors[(op, type(exc).__name__)] += 1

    def moved(self, entries: Sequence[Any], dst: str, trigger: str) -> None:
        """``entries`` (catalog entries as they were before the move) went to ``dst``."""
        n = Counter(TIER_NAMES[e.tier] for e in entries)
        with self._lock:
            for src, k in n.items():
                self.moves[(f"{src}->{dst}", trigger)] += k

    def policy_cycle(self, seconds: float, exc: BaseException | None) -> None:
        with self._lock:
            self.cycle.observe(seconds)
            self.cycles["error" if exc is not None else "ok"] += 1
            if exc is not None:
                self.errors[("policy", type(exc).__name__)] += 1

    # --- HTTP exporter ---------------------------------------------------------------------------

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve :attr:`registry` on ``http://addr:port/metrics`` (any path answers) from a
        daemon thread until :meth:`stop` (the store's close()). ``port=0``: a free port. Returns
        the port."""
        from prometheus_client import start_http_server

        if self._server is not None:
            raise ConfigError(f"metrics: already serving on {self.addr}:{self.port}")
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics.port: cannot serve metrics on {addr}:{port}: "
                              f"{exc.strerror or exc}") from None
        self.addr, self.port = addr, int(self._server.server_address[1])
        log.info("metrics of store %r on http://%s:%d/metrics", self.name, addr, self.port)
        return self.port

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        host = f"[{self.addr}]" if self.addr and ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop the exporter (if any) and leave every registry this store joined."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join(5)
        with self._lock:
            joined, self._joined = self._joined, []
        for hub in joined:
            hub.remove(self)

    # --- collection --------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"query": self.query.copy(), "tier": {t: h.copy() for t, h in self.tier.items()},
                    "tier_errors": dict(self.tier_errors), "results": dict(self.results),
                    "errors": dict(self.errors), "moves": dict(self.moves), "cycle": self.cycle.copy(),
                    "cycles": dict(self.cycles)}

    def collect_into(self, f: _Families) -> None:
        """Add this store's samples to the families of one scrape."""
        st, s = self.engine, [self.name]
        snap = self._snapshot()
        c = st.counters.snapshot()
        f.info("tierstore_store", "The store: path, vector space, embedded servers", s,
               {"path": str(st.path), "dim": str(st.dim), "metric": st.metric})
        f.counter("tierstore_queries", "Queries answered (query_batch counts each vector)").add_metric(
            s, c["queries"])
        f.counter("tierstore_partial_queries", "Queries answered partially: a tier failed or answered "
                  "incompletely").add_metric(s, c["partial"])
        h = snap["query"]
        f.histogram("tierstore_query_duration_seconds", "Query latency, all tiers merged").add_metric(
            s, h.buckets(), h.sum)
        searches = f.counter("tierstore_tier_searches", "Queries that searched the tier", ["tier"])
        tier_errors = f.counter("tierstore_tier_errors", "Queries the tier failed (answer partial or error)",
                                ["tier"])
        results = f.counter("tierstore_results", "Results returned from the tier", ["tier"])
        lat = f.histogram("tierstore_tier_search_duration_seconds", "Search time per query in the tier",
                          ["tier"])
        for t in st.tiers:
            th = snap["tier"][t]
            searches.add_metric([*s, t], th.count)
            tier_errors.add_metric([*s, t], snap["tier_errors"][t])
            results.add_metric([*s, t], snap["results"][t])
            lat.add_metric([*s, t], th.buckets(), th.sum)
        f.counter("tierstore_upserted_vectors", "Vectors written by upsert").add_metric(s, c["upserted"])
        f.counter("tierstore_deleted_vectors", "Vectors deleted").add_metric(s, c["deleted"])
        f.counter("tierstore_touched_vectors", "Accesses recorded by touch()").add_metric(s, c["touched"])
        f.counter("tierstore_spilled_vectors", "Ingested vectors that went to a lower tier because the "
                  "target was full").add_metric(s, c["spilled"])
        errors = f.counter("tierstore_errors", "Errors raised by store operations, by operation and "
                           "exception type", ["op", "type"])
        for (op, typ), n in sorted(snap["errors"].items()):
            errors.add_metric([*s, op, typ], n)
        moves = f.counter("tierstore_moves", "Vectors moved between tiers, by direction and trigger "
                          "(policy, or explicit: move/migrate/flush)", ["direction", "trigger"])
        for (d, trig), n in sorted(snap["moves"].items()):
            moves.add_metric([*s, d, trig], n)
        cycles = f.counter("tierstore_policy_cycles", "Policy cycles run (dry runs excluded)", ["outcome"])
        for outcome, n in snap["cycles"].items():
            cycles.add_metric([*s, outcome], n)
        ch = snap["cycle"]
        f.histogram("tierstore_policy_cycle_duration_seconds", "Policy cycle time: plan and moves").add_metric(
            s, ch.buckets(), ch.sum)
        try:
            with st.operation():  # close() waits for a scrape in flight; a closed store has no gauges
                self._collect_state(f, s)
        except TierStoreError as exc:
            log.debug("metrics: store state not collected: %s", exc)

    def _collect_state(self, f: _Families, s: list[str]) -> None:
        """What is read from the store's components: gauges and the tiers' own counters."""
        st = self.engine
        counts = st.catalog.counts()
        vectors = f.gauge("tierstore_vectors", "Vectors whose home is the tier", ["tier"])
        cap = f.gauge("tierstore_tier_capacity_vectors", "The tier's vector budget (hot: a hard limit)", ["tier"])
        for t in st.tiers:
            vectors.add_metric([*s, t], counts[t])
            if tiers.BY_NAME[t].bounded:
                cap.add_metric([*s, t], st.capacity(t))
        f.gauge("tierstore_catalog_disk_bytes", "Size of the LMDB catalog").add_metric(s, st.catalog.disk_bytes())
        f.counter("tierstore_accesses", "Accesses recorded for the policy (query results and touch)").add_metric(
            s, st.access.total_accesses)
        pol = st.policy
        ratios = pol.hits.ratios()
        f.gauge("tierstore_hit_window_queries", "Queries in the hit window (policy.hit_window)").add_metric(
            s, ratios["queries"])
        share = f.gauge("tierstore_hit_ratio", "Share of returned results served by the tier over the last "
                        "policy.hit_window queries (tier=hot: the hot hit ratio)", ["tier"])
        top1 = f.gauge("tierstore_top1_hit_ratio", "Share of queries whose best result came from the tier, "
                       "over the hit window", ["tier"])
        for t in st.tiers:
            if ratios["results"][t] is not None:
                share.add_metric([*s, t], ratios["results"][t])
            if ratios["top1"][t] is not None:
                top1.add_metric([*s, t], ratios["top1"][t])
        if pol.last is not None:
            f.gauge("tierstore_policy_last_cycle_timestamp_seconds", "When the last successful policy "
                    "cycle ended (Unix time)").add_metric(s, pol.last["at"] + pol.last["seconds"])
        hot_events = f.counter("tierstore_hot_events", "Hot tier (Redis) maintenance: verifications, "
                               "rebuilds, reconciled keys, server restarts", ["event"])
        for ev, n in sorted(getattr(st.hot, "stats", {}).items()):
            if isinstance(n, int):
                hot_events.add_metric([*s, ev], n)
        w = st.warm.info()
        f.gauge("tierstore_warm_segments", "Sealed warm segments on disk").add_metric(s, w["segments"])
        f.gauge("tierstore_warm_disk_bytes", "Bytes of the sealed warm segments").add_metric(s, w["disk_bytes"])
        f.gauge("tierstore_warm_dead_rows", "Dead rows in sealed warm segments (compact reclaims them)").add_metric(
            s, w["sealed_dead"])
        f.counter("tierstore_warm_seals", "Growing warm segments sealed to disk").add_metric(s, w.get("sealed", 0))
        f.counter("tierstore_warm_merges", "Merges of small sealed warm segments into one").add_metric(
            s, w.get("merges", 0))
        cold = st.cold
        if cold is None:
            return
        cc = cold.counter_snapshot()
        segs = cold.segments()
        cache = cold.cache
        f.counter("tierstore_s3_gets", "Ranged GETs of cold segment data (queries and cold reads)").add_metric(
            s, cc.get("gets", 0))
        f.counter("tierstore_s3_get_bytes", "Bytes received by those GETs").add_metric(s, cc.get("get_bytes", 0))
        f.counter("tierstore_s3_puts", "PUTs of segments and manifests").add_metric(s, cc.get("puts", 0))
        f.counter("tierstore_s3_put_bytes", "Bytes of segment objects uploaded (manifests not counted)").add_metric(
            s, cc.get("bytes_written", 0))
        f.counter("tierstore_cold_segments_written", "Cold segments written (ingest, demotion, compaction)"
                  ).add_metric(s, cc.get("segments_written", 0))
        f.counter("tierstore_block_cache_hits", "Cold partitions read from the local block cache").add_metric(
            s, cc.get("cache_hits", 0))
        f.counter("tierstore_block_cache_misses", "Cold partitions not in the block cache (fetched from S3)"
                  ).add_metric(s, cc.get("cache_misses", 0))
        f.gauge("tierstore_block_cache_bytes", "Bytes in the local block cache").add_metric(s, cache.bytes)
        f.gauge("tierstore_block_cache_capacity_bytes", "cold.cache_size").add_metric(s, cache.capacity)
        f.gauge("tierstore_block_cache_blocks", "Partitions in the local block cache").add_metric(s, len(cache))
        f.gauge("tierstore_cold_segments", "Live cold segments").add_metric(s, len(segs))
        f.gauge("tierstore_cold_stored_bytes", "Bytes of the live cold segments in S3").add_metric(
            s, sum(g.info["bytes"] for g in segs))


class _Families:
    """The metric families of one scrape, each created once whatever the number of stores."""

    def __init__(self) -> None:
        self.fams: dict[str, Any] = {}

    def _get(self, cls: type, name: str, doc: str, labels: Sequence[str], **kw: Any) -> Any:
        fam = self.fams.get(name)
        if fam is None:
            fam = self.fams[name] = cls(name, doc, labels=["store", *labels], **kw)
        return fam

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
        return self._get(CounterMetricFamily, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return self._get(GaugeMetricFamily, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = ()) -> HistogramMetricFamily:
        return self._get(HistogramMetricFamily, name, doc, labels)

    def info(self, name: str, doc: str, s: list[str], values: dict[str, str]) -> None:
        fam = self._get(GaugeMetricFamily, f"{name}_info", doc, list(values))
        fam.add_metric([*s, *values.values()], 1)


class _Hub(Collector):
    """The collector of every store exported through one registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, StoreMetrics] = {}

    def add(self, m: StoreMetrics) -> None:
        with self._lock:
            other = self._members.get(m.name)
            if other is not None and other is not m:
                raise ConfigError(f"store.name: {m.name!r} is not allowed: another open store with that name is "
                                  "already exported through this metrics registry (give each store its own name)")
            self._members[m.name] = m

    def remove(self, m: StoreMetrics) -> None:
        with self._lock:
            if self._members.get(m.name) is m:
                del self._members[m.name]

    def collect(self) -> Iterator[Any]:
        with self._lock:
            members = list(self._members.values())
        if not members:
            return iter(())
        f = _Families()
        for m in members:
            try:
                m.collect_into(f)
            except Exception:  # noqa: BLE001 -- one store's failure must not break the scrape
                log.exception("metrics: collecting store %r failed", m.name)
        return iter(f.fams.values())


_hubs: weakref.WeakKeyDictionary[CollectorRegistry, _Hub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _hub(registry: CollectorRegistry) -> _Hub:
    with _hubs_lock:
        hub = _hubs.get(registry)
        if hub is None:
            hub = _Hub()
            registry.register(hub)
            _hubs[registry] = hub
        return hub


__all__ = ["CYCLE_BUCKETS", "QUERY_BUCKETS", "Histogram", "StoreMetrics"]
