"""Hot tier on a Redis 8 vector set (``hot.backend = "vectorset"``): VADD / VSIM / VREM.

Redis 8 has HNSW vector sets built in, so this backend needs no module. The store's hot vectors
are the elements of one vector set, ``<prefix>vset``, each named by its internal id (16 hex
digits); the connection, verification, reconcile/rebuild and move bookkeeping are shared with
the RediSearch backend (:class:`tierstore.tiers.hot.base.HotTier`).

What differs from RediSearch, and how this module deals with it:

- **Cosine only.** Vector sets normalise every vector at insert, so only cosine similarity is
  exact; :func:`tierstore.tiers.hot.make_hot_tier` refuses other metrics.
- **Quantisation** (``hot.quantization``: q8 by default, noquant, bin) makes VSIM's scores
  approximate. Every candidate is therefore re-scored on its exact float32 vector from the
  catalog, so the hot tier's distances are exact (``1 - cos``) like RediSearch's and the other
  tiers', and the merged query ranks across tiers correctly.
- **Filters** are VSIM ``FILTER`` expressions over a JSON attribute per element
  (:func:`attributes`, :func:`render_filter`). The expression language has quirks this module
  designs around (Redis ``modules/vector-sets/expr.c``):

  * a missing attribute makes the *whole* expression false (not just its term), so every
    ``[schema]`` field is written for every element: a tag as a list (``[]`` when absent), a
    numeric as a number plus a presence flag ``__<field>`` (1/0) that guards its comparisons;
  * strings are tag values hex-encoded like the RediSearch backend's (``x`` + hex of UTF-8),
    so no value ever needs escaping;
  * number literals cannot carry an exponent sign (``1e-5``, ``1e+5`` are syntax errors):
    :func:`number` writes every float exactly without one.

- **Selective filters.** A filtered graph walk gives up after ``FILTER-EF`` visited nodes and
  then returns fewer than k elements although more match. A short answer is asked again with
  ``TRUTH`` (an exact linear scan with the same filter), so a filter matching few vectors
  returns all of them, exactly, never a silently truncated list; that filter's next queries go
  straight to the scan for a while (:data:`_SCAN_FIRST_QUERIES`).
- **No "no such index" error.** VSIM on a flushed server answers an empty list. The short-answer
  path checks that our meta key and the vector set still exist, and otherwise re-verifies
  (which rebuilds from the catalog) and retries, like the RediSearch backend on its error.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import redis

from ... import distance, filters
from ...catalog import TIER_HOT
from ..protocol import TierAnswer
from .base import HotTier
from .common import CHUNK, Stale, as_str

# hot.quantization -> (VADD option, VINFO quant-type, candidates fetched per result wanted): a
# quantised walk ranks by approximate scores, so a true neighbour may come back just past k;
# fetching more and keeping the best k after the exact rerank recovers it.
_QUANT = {"q8": ("Q8", "int8", 2), "noquant": ("NOQUANT", "f32", 1), "bin": ("BIN", "bin", 4)}
_ALL = 2**40  # VRANDMEMBER count larger than any set: "return every element"
# After a filter's graph walk fell short, its next queries go straight to the exact scan (the walk
# would visit FILTER-EF nodes for nothing), for this many queries; then it walks again, in case
# the hot set changed. Remembered for this many distinct filters.
_SCAN_FIRST_QUERIES = 100
_SCAN_FIRST_FILTERS = 1024


# --- attributes and filter expressions -----------------------------------------------------------


def attributes(meta: Mapping[str, Any], schema: Mapping[str, str]) -> str:
    """The JSON attribute of one element: every ``[schema]`` field, present or not (see the
    module docstring for why), in the form :func:`render_filter` expects.

    >>> attributes({"kind": "a", "year": 2021}, {"kind": "tag", "year": "numeric", "n": "numeric"})
    '{"kind":["x61"],"year":2021.0,"__year":1,"n":0,"__n":0}'
    """
    doc: dict[str, Any] = {}
    for field, kind in schema.items():
        value = meta.get(field)
        if kind == "tag":
            doc[field] = [] if value is None else [filters.encode_tag(v) for v in filters.tag_values(value, field)]
        else:
            doc[field] = 0 if value is None else float(value)
            doc[f"__{field}"] = 0 if value is None else 1  # no schema field starts with "__"
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def number(x: float) -> str:
    """``x`` as a FILTER literal that parses back to exactly ``x``. The tokenizer reads digits,
    '.', 'e' and a leading '-' (no exponent sign): ``1e+20`` -> ``1e20``, ``1e-05`` ->
    ``0.00001``, and magnitudes too small for a short positional form become an exact product
    ``(m * 2 ** e)`` (an integer below 2**53 times a power of two: both exact, and so is their
    product, which is ``x``).

    >>> number(3.5), number(-2.0), number(1e20), number(1e-5), number(5e-324)
    ('3.5', '-2.0', '1e20', '0.00001', '(1 * 2 ** -1074)')
    """
    text = repr(float(x))
    if "e" not in text:
        return text
    mantissa, exp = text.split("e")
    if exp[0] == "+":
        return f"{mantissa}e{exp[1:]}"
    fixed = format(Decimal(text), "f")  # the exact value of the shortest repr
    if len(fixed) < 200:  # number tokens are limited to 255 characters
        return fixed
    e = max(math.frexp(x)[1] - 53, -1074)
    return f"({int(math.ldexp(x, -e))} * 2 ** {e})"


def render_filter(node: filters.Node) -> str:
    """The VSIM FILTER expression of a filter (same semantics as :func:`filters.matches` over
    elements written with :func:`attributes`).

    >>> f = filters.compile_filter({"kind": {"$ne": "a"}, "year": {"$gte": 2020}}, {"kind": "tag", "year": "numeric"})
    >>> render_filter(f)
    '(not ("x61" in .kind) and (.__year and .year >= 2020.0))'
    """
    if isinstance(node, filters.Const):
        return "1" if node.value else "0"
    if isinstance(node, filters.And | filters.Or):
        joiner = " and " if isinstance(node, filters.And) else " or "
        return "(" + joiner.join(render_filter(c) for c in node.children) + ")"
    f = node.field
    if node.kind == "tag":
        # an element's tags are a list: "in" tests membership (on two strings it would test
        # substrings, which is why absent tags are [] rather than "")
        text = " or ".join(f'"{filters.encode_tag(v)}" in .{f}' for v in node.values)
    elif node.op == "$exists":
        return f"(.__{f})" if node.values[0] else f"not (.__{f})"
    else:
        literals = [number(v) for v in node.values]
        if node.op in ("$eq", "$ne"):
            cond = f".{f} == {literals[0]}"
        elif node.op in ("$in", "$nin"):
            if all(not lit.startswith("(") for lit in literals):
                cond = f".{f} in [{', '.join(literals)}]"
            else:  # a tuple holds plain literals only
                cond = "(" + " or ".join(f".{f} == {lit}" for lit in literals) + ")"
        else:
            op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[node.op]
            cond = f".{f} {op} {literals[0]}"
        text = f".__{f} and {cond}"  # an absent number is stored as 0: never compare it
    return f"not ({text})" if node.op in filters.NEGATED else f"({text})"


# --- the backend ----------------------------------------------------------------------------------


class VectorSetHotTier(HotTier):
    """Vector-set-backed hot tier (``hot.backend = "vectorset"``)."""

    backend = "vectorset"

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, **kw)
        if self.metric != "cosine":  # make_hot_tier says so first, with the config's words
            raise ValueError("vector sets only support the cosine metric")
        self.vset_key = f"{self.prefix}vset"
        self.quant, self._quant_name, self._overfetch = _QUANT[self.cfg.quantization]
        self._vadd_opts = [self.quant, "EF", str(self.cfg.ef_construction), "M", str(self.cfg.m)]
        self._scan_first: OrderedDict[str, int] = OrderedDict()  # FILTER expression -> scans left
        self._scan_lock = threading.Lock()

    @staticmethod
    def element(iid: int) -> str:
        return f"{iid:016x}"

    # --- index -----------------------------------------------------------------------------------

    def _meta_fields(self) -> dict[str, str]:
        # the [schema] the attributes were written for: a field added later must be written into
        # every element (an element without it fails every filter that names it)
        return {"schema": json.dumps(self.schema, sort_keys=True)}

    def _check_index(self) -> None:
        info = self.r.execute_command("VINFO", self.vset_key)
        info = {as_str(k): as_str(v) for k, v in (info or {}).items()}
        written_for = self.r.hget(self.meta_key, "schema")
        if info and (info.get("vector-dim") != str(self.dim) or info.get("quant-type") != self._quant_name
                     or info.get("hnsw-m") != str(self.cfg.m) or as_str(written_for or b"") != self._meta_fields()["schema"]):
            # hot.m / hot.quantization changed (they are fixed when a set is created), or the
            # schema did: drop the set; verify's count check then finds it empty and reconcile
            # re-adds every vector (with attributes for the current schema).
            self.r.unlink(self.vset_key)
            self.stats["index_recreated"] += 1
        self.r.hset(self.meta_key, mapping=self._meta_fields())

    def _reset_index(self) -> None:
        self.r.unlink(self.vset_key)

    # --- writes ----------------------------------------------------------------------------------

    def _put(self, pipe: redis.client.Pipeline, iid: int, vec: bytes, meta: dict[str, Any], version: int) -> None:
        # VREM first: a VADD of an existing element changes it in memory, but Redis 8.2's AOF
        # replays the old vector (seen on the bundled 8.2.3), so an update is remove + add.
        # SETATTR always rewrites every field, and the catalog version the copy was written from.
        name = self.element(iid)
        # MULTI/EXEC: a query between the two would miss the element altogether.
        attrs = json.loads(attributes(meta, self.schema)) if self.schema else {}
        attrs["__ver"] = version
        pipe.execute_command("MULTI")
        pipe.execute_command("VREM", self.vset_key, name)
        pipe.execute_command("VADD", self.vset_key, "FP32", vec, name, *self._vadd_opts,
                             "SETATTR", json.dumps(attrs, separators=(",", ":"), allow_nan=False))
        pipe.execute_command("EXEC")

    def _vectors(self, iids: Sequence[int]) -> list[np.ndarray | None]:
        replies = self._pipelined([["VEMB", self.vset_key, self.element(i)] for i in iids])
        return [np.asarray([float(x) for x in r], np.float64) if r else None for r in replies]

    def _same(self, want: np.ndarray, got: np.ndarray) -> bool:
        # VEMB returns the set's own (normalised, quantised) copy: compare directions within
        # the quantisation's error (1-bit codes keep only signs: not comparable)
        if self.cfg.quantization == "bin" or got.shape != want.shape:
            return got.shape == want.shape
        w = want.astype(np.float64)
        cos = float(w @ got) / (float(np.linalg.norm(w) * np.linalg.norm(got)) or 1.0)
        return cos >= (0.999999 if self.cfg.quantization == "noquant" else 0.99)

    def _versions(self, iids: Sequence[int]) -> list[int | None]:
        replies = self._pipelined([["VGETATTR", self.vset_key, self.element(i)] for i in iids])
        out: list[int | None] = []
        for raw in replies:
            try:
                out.append(int(json.loads(raw)["__ver"]) if raw else None)
            except (ValueError, KeyError, TypeError):
                out.append(None)
        return out

    def _remove(self, pipe: redis.client.Pipeline, iid: int) -> None:
        pipe.execute_command("VREM", self.vset_key, self.element(iid))

    # --- reads -----------------------------------------------------------------------------------

    def _vsim(self, q: np.ndarray, k: int, ef: int, expr: str | None, truth: bool = False) -> list:
        args = ["VSIM", self.vset_key, "FP32", q.tobytes(), "WITHSCORES", "COUNT", k, "EF", ef]
        if expr is not None:
            # FILTER-EF bounds the nodes a filtered walk visits (Redis default: 100 * COUNT); a
            # walk that runs out of it answers short, and a short answer is redone with TRUTH.
            args += ["FILTER", expr, "FILTER-EF", max(100 * k, 10 * ef)]
        if truth:
            args.append("TRUTH")
        return args

    def _search_many(self, qs: np.ndarray, k: int, node: filters.Node, ef: int | None = None) -> list[TierAnswer]:
        """Batch KNN in pipelined round trips, re-scored on the exact vectors."""
        if node == filters.FALSE:
            return [TierAnswer([], []) for _ in qs]
        expr = None if node == filters.TRUE else render_filter(node)
        ef = ef or self.cfg.ef_runtime
        # filtered: at least 2k, so a filter with fewer than 2k matches always ends in the exact scan
        fetch = (self._overfetch if expr is None else max(self._overfetch, 2)) * k

        def run() -> list[dict]:
            scan = expr is not None and self._scan_next(expr, len(qs))
            # a scan answers short whenever the filter matches fewer than `fetch`: check Redis
            # still holds our data in the same round trip (see below)
            checks = [["EXISTS", self.meta_key], ["VCARD", self.vset_key]] if scan else []
            replies = self._pipelined([*checks, *(self._vsim(q, fetch, ef, expr, truth=scan) for q in qs)])
            if scan:
                self._check_present(replies[0], replies[1])
                return replies[2:]
            # Unfiltered, fewer than k means the set is that small (or Redis lost our data: VSIM
            # answers [] then). Filtered, fewer than asked may also mean the walk gave up before
            # finding them all: check, and scan exactly.
            enough = k if expr is None else fetch
            short = [i for i, rep in enumerate(replies) if len(rep) < enough]
            if short:
                again = self._pipelined([["EXISTS", self.meta_key], ["VCARD", self.vset_key],
                                         *(self._vsim(qs[i], fetch, ef, expr, truth=True) for i in short)])
                self._check_present(again[0], again[1])
                for i, rep in zip(short, again[2:], strict=True):
                    replies[i] = rep
                if expr is not None:
                    self._scan_first_from_now(expr)
            return replies

        return [self._rerank(q, rep, k) for q, rep in zip(qs, self.call(run), strict=True)]

    def _check_present(self, meta_exists: int, vcard: int) -> None:
        if not meta_exists or (not vcard and self.catalog.count(TIER_HOT)):
            self._verified = False
            raise Stale("hot tier: the vector set or the store's meta key is gone")

    def _scan_next(self, expr: str, n: int) -> bool:
        """Should queries with this filter skip the graph walk (it fell short recently)?"""
        with self._scan_lock:
            left = self._scan_first.get(expr, 0)
            if left <= 0:
                return False
            self._scan_first[expr] = left - n
            return True

    def _scan_first_from_now(self, expr: str) -> None:
        with self._scan_lock:
            self._scan_first[expr] = _SCAN_FIRST_QUERIES
            self._scan_first.move_to_end(expr)
            while len(self._scan_first) > _SCAN_FIRST_FILTERS:
                self._scan_first.popitem(last=False)

    def _pipelined(self, commands: list[list]) -> list:
        if len(commands) == 1:  # the common single-query path: no pipeline object
            return [self.r.execute_command(*commands[0])]
        out = []
        for start in range(0, len(commands), CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for args in commands[start : start + CHUNK]:
                pipe.execute_command(*args)
            out.extend(pipe.execute())
        return out

    def _rerank(self, q: np.ndarray, reply: dict, k: int) -> TierAnswer:
        """The best ``k`` (ids, exact cosine distances ascending) of a WITHSCORES reply
        {element: score}.
        A vector the catalog no longer holds keeps VSIM's own estimate (score s = (1 + cos) / 2,
        so 1 - cos = 2 - 2s): the query's catalog check drops it anyway, and must see it to ask
        for a larger page."""
        if not reply:
            return TierAnswer([], [])
        iids = [int(e, 16) for e in reply]
        dists = [2.0 - 2.0 * float(s) for s in reply.values()]
        return TierAnswer(*distance.rerank_on_catalog(self.catalog, "cosine", q, iids, dists, k))

    # --- inspection ----------------------------------------------------------------------------

    def keys(self) -> set[int]:
        # VRANDMEMBER with a count above the set's size returns every element (8.2 has no VRANGE)
        return {int(e, 16) for e in self.r.execute_command("VRANDMEMBER", self.vset_key, _ALL)}

    def count(self) -> int:
        return int(self.r.execute_command("VCARD", self.vset_key))

    def bytes_per_vector(self) -> int:
        # Fitted to MEMORY USAGE on Redis 8.2 (dim 64 and 384, m 8 to 32, every quantisation):
        # the element's code, ~19 B per unit of m (2m level-0 links plus the upper levels) and
        # ~400 B of node, element name and per-thread visit marks; plus the attribute JSON.
        code = {"q8": self.dim, "noquant": 4 * self.dim, "bin": (self.dim + 7) // 8}[self.cfg.quantization]
        attrs = 16 + 24 * len(self.schema) if self.schema else 0
        return code + 19 * self.cfg.m + 400 + attrs

    def info(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            info = self.r.execute_command("VINFO", self.vset_key) or {}
            mem = self.r.info("memory")
            return {
                "backend": "vectorset",
                "key": self.vset_key,
                "quantization": self.cfg.quantization,
                "num_docs": int(info.get(b"size", 0)),
                "vector_index_bytes": int(self.r.memory_usage(self.vset_key, samples=0) or 0),
                "redis_used_memory": int(mem.get("used_memory", 0)),
                "redis_used_memory_human": as_str(mem.get("used_memory_human", "")),
                **self.stats,
            }

        return self.call(run)


__all__ = ["VectorSetHotTier", "attributes", "number", "render_filter"]
