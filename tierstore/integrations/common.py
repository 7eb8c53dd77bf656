"""What the LangChain and LlamaIndex adapters share: opening a store for a framework's
``from_texts``-style constructors, the placement argument, relevance scores per metric, ids, and
running the blocking store from ``async`` code.

Neither framework is imported here, so this module loads without the optional extras.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import tierstore

from .. import aio
from ..aio import AsyncTierStore
from ..errors import ConfigError, DimensionError, InvalidInputError

T = TypeVar("T")

TIERS = ("hot", "warm", "cold")
# store.query keywords a framework caller may pass through (search_kwargs of a retriever, ...)
QUERY_OPTIONS = ("tiers", "ef", "nprobe", "strict")


def check_tier(tier: str | None) -> str | None:
    """``None`` (the store's policy places every write) or one of the tier names."""
    if tier is not None and tier not in TIERS:
        raise InvalidInputError(f"tier: {tier!r} is not a tier; use None (the policy places), 'hot', 'warm' or 'cold'")
    return tier


def query_options(kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The store.query options among a framework call's extra keywords; anything else is an error
    (silently ignoring a misspelt ``filter=`` would return unfiltered results)."""
    unknown = sorted(k for k in kwargs if k not in QUERY_OPTIONS)
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"tierstore accepts filter= and {', '.join(QUERY_OPTIONS)}")
    return dict(kwargs)


def new_ids(ids: Sequence[str | None] | None, n: int, what: str = "ids") -> list[str]:
    """One string id per item: the caller's, or a fresh uuid4 where it gave none (``None``)."""
    if ids is None:
        return [str(uuid.uuid4()) for _ in range(n)]
    ids = list(ids)
    if len(ids) != n:
        raise InvalidInputError(f"{what}: {len(ids)} ids for {n} items")
    out = []
    for i, x in enumerate(ids):
        if x is None or x == "":
            out.append(str(uuid.uuid4()))
        elif isinstance(x, str):
            out.append(x)
        else:
            raise InvalidInputError(f"{what}[{i}]: {x!r} is not a str (framework ids are strings)")
    return out


def as_id(uid: str | int) -> str:
    """A stored id as the frameworks' string id (a store written by other code may hold ints)."""
    return uid if isinstance(uid, str) else str(uid)


# --- scores -----------------------------------------------------------------------------------------


def _cosine_relevance(d: float) -> float:
    # 1 - cos in [0, 2] -> (1 + cos) / 2 in [0, 1]; rounding can leave d a hair outside [0, 2]
    return min(1.0, max(0.0, 1.0 - d / 2.0))


def _l2_relevance(d: float) -> float:
    # squared euclidean in [0, inf) -> (0, 1], strictly decreasing: no assumption on the vectors'
    # norms, so no two distances collapse onto one score the way a clamp would
    return 1.0 / (1.0 + max(0.0, d))


RELEVANCE: dict[str, Callable[[float], float]] = {
    "cosine": _cosine_relevance,
    # 1 - dot: for unit vectors the same (1 + cos) / 2 as cosine, clamped to [0, 1] otherwise
    "ip": _cosine_relevance,
    "l2": _l2_relevance,
}

# LlamaIndex's similarities: higher is closer, no [0, 1] promise; cosine and ip give the
# similarity itself (cos / dot, what SimpleVectorStore returns), l2 the relevance above.
SIMILARITY: dict[str, Callable[[float], float]] = {
    "cosine": lambda d: 1.0 - d,
    "ip": lambda d: 1.0 - d,
    "l2": _l2_relevance,
}


def relevance_fn(metric: str) -> Callable[[float], float]:
    """Distance -> relevance in [0, 1] (1 = identical direction / point) for ``metric``.

    >>> [relevance_fn("cosine")(d) for d in (0.0, 1.0, 2.0)], relevance_fn("ip")(3.5), relevance_fn("l2")(1.0)
    ([1.0, 0.5, 0.0], 0.0, 0.5)
    """
    return RELEVANCE[metric]


def similarity_fn(metric: str) -> Callable[[float], float]:
    return SIMILARITY[metric]


def distances(metric: str, query: Any, vectors: Any) -> list[float]:
    """The store's distance from ``query`` to each row of ``vectors`` (for the few records a
    caller names by id, which are scored here rather than searched)."""
    import numpy as np

    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(vectors, dtype=np.float64).reshape(-1, q.shape[0])
    if metric == "l2":
        return [float(x) for x in ((m - q) ** 2).sum(axis=1)]
    if metric == "cosine":
        q = q / (np.linalg.norm(q) or 1.0)
        norms = np.linalg.norm(m, axis=1)
        m = m / np.where(norms == 0, 1.0, norms)[:, None]
    return [float(1.0 - x) for x in m @ q]


# --- opening -----------------------------------------------------------------------------------------


def resolve_config(config: Any, dim: int | Callable[[], int] | None, open_kwargs: dict[str, Any]) -> tuple[Any, dict]:
    """The validated config a ``from_texts``-style constructor asked for, and the keywords
    ``tierstore.open`` / ``tierstore.aio.open`` take beside it.

    ``dim`` is the embedding model's dimension (or a callable that asks the model, called only
    when needed): it fills in a config that names none (a dict, or keyword arguments only), and
    must match one that does. ``config=None`` reads ``$TIERSTORE_CONFIG`` like ``tierstore.open``."""
    kw = dict(open_kwargs)
    extra = {name: kw.pop(name) for name in ("registry", "read_only", "max_workers") if name in kw}
    if "env" in kw:
        extra["env"] = kw["env"]
    if config is None and "TIERSTORE_CONFIG" in os.environ:
        config = os.environ["TIERSTORE_CONFIG"]
    try:
        cfg = tierstore.load_config(config, **kw)
    except ConfigError:
        if dim is None or "dim" in kw:
            raise
        dim = dim() if callable(dim) else dim
        cfg = tierstore.load_config(config, **kw, dim=dim)  # a failure other than the missing dim raises again
    if isinstance(dim, int) and cfg.store.dim != dim:
        raise DimensionError(
            f"embedding: the embedding model gives {dim}-dimensional vectors but the store's dim is "
            f"{cfg.store.dim} (store.dim in the config)")
    return cfg, extra


def open_for(config: Any, dim: int | Callable[[], int] | None, open_kwargs: dict[str, Any]) -> tierstore.TierStore:
    """Open (or create) the store a ``from_texts``-style constructor asked for (see
    :func:`resolve_config`)."""
    cfg, extra = resolve_config(config, dim, open_kwargs)
    extra.pop("max_workers", None)
    return tierstore.open(cfg, **extra)


async def aopen_for(config: Any, dim: int | Callable[[], int] | None, open_kwargs: dict[str, Any]) -> AsyncTierStore:
    """:func:`open_for` for asyncio: a :class:`tierstore.aio.AsyncTierStore` (``max_workers=``
    sizes its pool), opened off the event loop."""
    cfg, extra = await in_thread(resolve_config, config, dim, open_kwargs)
    return await aio.open(cfg, **extra)


# --- async ----------------------------------------------------------------------------------------------


class Stores:
    """An adapter's store, sync and async: what it was given (a :class:`TierStore` or an
    :class:`AsyncTierStore`), the sync store (``sync``) its sync methods call, and the async twin
    (``aio``) its ``a*`` methods await -- around a sync store, made on first use with its own
    worker pool and ``close_store=False`` (closing the twin stops its pool, never the store)."""

    def __init__(self, store: Any, owns: bool) -> None:
        if isinstance(store, AsyncTierStore):
            self.sync, self._aio, self._made = store.sync, store, False
        elif isinstance(store, tierstore.TierStore):
            self.sync, self._aio, self._made = store, None, False
        else:
            raise InvalidInputError(f"store: expected an open tierstore.TierStore or tierstore.aio.AsyncTierStore, "
                                    f"got {type(store).__name__}")
        self.owns = owns
        self._lock = threading.Lock()

    @property
    def aio(self) -> AsyncTierStore:
        with self._lock:
            if self._aio is None:
                self._aio, self._made = AsyncTierStore(self.sync, close_store=False), True
            return self._aio

    def close(self) -> None:
        """Close the store if the adapter owns it. (A sync close cannot await the twin's pool:
        its idle workers end when it is garbage collected; :meth:`aclose` stops them.)"""
        if self.owns:
            self.sync.close()

    async def aclose(self) -> None:
        """Stop the twin's pool if the adapter made it, and close the store if it owns it
        (after the async calls in flight)."""
        twin, made = self._aio, self._made
        if twin is not None and (made or self.owns):
            await twin.close()  # a made twin leaves the store open; a given one closes it (owned)
        if made:
            with self._lock:  # a later a* call makes a new twin
                if self._aio is twin:
                    self._aio, self._made = None, False
        if self.owns and not self.sync.closed:
            await in_thread(self.sync.close)


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking store call on the event loop's default executor: the store is thread-safe,
    and its calls block on Redis, S3 and disk, so the loop keeps serving other tasks meanwhile.
    (``asyncio.to_thread`` also carries the caller's contextvars, e.g. tracing callbacks.)"""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


__all__ = ["QUERY_OPTIONS", "TIERS", "Stores", "aopen_for", "as_id", "check_tier", "distances", "in_thread",
           "new_ids", "open_for", "query_options", "relevance_fn", "resolve_config", "similarity_fn"]
