"""LangChain ``VectorStore`` over a tierstore store (``pip install tierstore[langchain]``).

>>> from langchain_core.embeddings import DeterministicFakeEmbedding            # doctest: +SKIP
>>> vs = TierStoreVectorStore.from_texts(["tiers", "policy"], DeterministicFakeEmbedding(size=8),
...                                      config={"store": {"path": "/tmp/lc"}})  # doctest: +SKIP
>>> vs.similarity_search("tiers", k=1)[0].page_content                          # doctest: +SKIP
'tiers'

A Document's text is the record's text (``texts=`` of ``upsert``), its metadata the record's
metadata unchanged (any JSON value; only ``[schema]`` fields are filterable) and its id the record's
id. Scores: ``similarity_search_with_score`` gives the store's distance (lower is closer: cosine
1 - cos, ip 1 - dot, l2 squared); ``similarity_search_with_relevance_scores`` gives a relevance in
[0, 1] (see :data:`tierstore.integrations.common.RELEVANCE`). Filters are MongoDB-style dicts
(see :mod:`tierstore.integrations.translate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..aio import AsyncTierStore
from ..errors import InvalidInputError
from ..results import Hit
from ..store import TierStore
from . import common, translate

_UNSET: Any = object()
SCAN_BATCH = 2_000


class TierStoreVectorStore(VectorStore):
    """A LangChain vector store backed by a :class:`~tierstore.TierStore`.

    ``store``: an open store -- a :class:`~tierstore.TierStore`, or a
    :class:`~tierstore.aio.AsyncTierStore` for an asyncio service -- whose ``dim`` is the embedding
    model's; the adapter does not close it. Or use :meth:`open` / :meth:`from_texts` /
    :meth:`afrom_texts` to open one from a config, which the adapter then owns and closes in
    :meth:`close` / :meth:`aclose`. The ``a*`` methods await the store's async twin
    (tierstore.aio: a worker pool, so the event loop never blocks on Redis, S3 or disk).

    ``tier``: where writes go -- ``None`` (default) lets the store's policy place them
    (``policy.ingest_tier``, spilling past a full tier, then moving each vector by its accesses),
    or ``"hot"``/``"warm"``/``"cold"`` for every write of this adapter (``add_texts(..., tier=)``
    overrides it per call).
    """

    def __init__(self, store: TierStore | AsyncTierStore, embedding: Embeddings, *, tier: str | None = None,
                 owns_store: bool = False) -> None:
        self._stores = common.Stores(store, owns_store)
        self._store = self._stores.sync
        self._embedding = embedding
        self.tier = common.check_tier(tier)

    @classmethod
    def open(cls, embedding: Embeddings, config: Any = None, *, tier: str | None = None,
             **open_kwargs: Any) -> TierStoreVectorStore:
        """Open (or create) a store from ``config`` (a TOML path, a dict, a Config) and
        ``tierstore.open`` keywords (``path=``, ``dim=``, ``schema=``, ``hot={...}``, ...); a
        missing ``dim`` is taken from the embedding model. The adapter owns the store."""
        store = common.open_for(config, _dim_probe(embedding), open_kwargs)
        return cls(store, embedding, tier=tier, owns_store=True)

    @property
    def store(self) -> TierStore:
        return self._store

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def close(self) -> None:
        """Close the store if this adapter opened it (:meth:`open`, :meth:`from_texts`)."""
        self._stores.close()

    async def aclose(self) -> None:
        """:meth:`close` for asyncio (waits for the adapter's async calls in flight)."""
        await self._stores.aclose()

    def __enter__(self) -> TierStoreVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes --------------------------------------------------------------------------------------

    def _prepare(self, texts: Iterable[str], metadatas: Sequence[dict[str, Any] | None] | None,
                 ids: Sequence[str | None] | None, kwargs: dict[str, Any]) -> tuple[list[str], list | None, list[str], Any]:
        return _check_write(texts, metadatas, ids, kwargs, self.tier)

    @staticmethod
    def _upsert_args(texts: list[str], metadatas: list | None, ids: list[str], vectors: Any,
                     tier: str | None) -> tuple[tuple, dict[str, Any]]:
        return (ids, np.asarray(vectors, dtype=np.float32)), {"metadata": metadatas, "texts": texts, "tier": tier}

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed and upsert ``texts``: a record per text, ``ids`` kept (a uuid4 where an id is
        ``None`` or none are given), existing ids replaced. One atomic write per call: a rejected
        batch (bad metadata for a ``[schema]`` field, ...) writes nothing. ``tier=`` overrides the
        adapter's placement for this call."""
        texts, metadatas, ids, tier = self._prepare(texts, metadatas, ids, kwargs)
        if texts:
            args, kw = self._upsert_args(texts, metadatas, ids, self._embedding.embed_documents(texts), tier)
            self._store.upsert(*args, **kw)
        return ids

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        texts, metadatas, ids, tier = self._prepare(texts, metadatas, ids, kwargs)
        if texts:
            args, kw = self._upsert_args(texts, metadatas, ids, await self._embedding.aembed_documents(texts), tier)
            await self._stores.aio.upsert(*args, **kw)
        return ids

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """:meth:`add_texts` of the documents' text, metadata and ids (``ids=`` wins over
        ``Document.id``). The documents are not modified."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return self.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids=ids, **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return await self.aadd_texts([d.page_content for d in documents], [d.metadata for d in documents],
                                     ids=ids, **kwargs)

    @staticmethod
    def _delete_plan(ids: list[str] | None, kwargs: dict[str, Any]) -> tuple[list[str] | None, Any]:
        """(ids, None) to delete ids, or (None, filter) to delete what a scan with the filter finds."""
        flt = kwargs.pop("filter", _UNSET)
        if kwargs:
            raise InvalidInputError(f"delete: unknown keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
        if ids is not None:
            if flt is not _UNSET:
                raise InvalidInputError("delete: pass ids or filter=, not both")
            return list(ids), None
        if flt is _UNSET:
            raise InvalidInputError("delete: ids is None; pass the ids to delete, or filter={} to delete every record")
        return None, translate.from_mongo(flt) or {}

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete ``ids`` (unknown ids are ignored), or every record matching ``filter=`` (a pass
        over the catalog's metadata, batch by batch). ``ids=None`` without a filter is an error
        rather than LangChain's "delete everything": ``delete(filter={})`` means that."""
        ids, spec = self._delete_plan(ids, kwargs)
        if ids is not None:
            if ids:
                self._store.delete(ids)
            return True
        for batch in self._store.scan(batch_size=SCAN_BATCH, filter=spec or None):
            self._store.delete([r.id for r in batch])
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        ids, spec = self._delete_plan(ids, kwargs)
        aio = self._stores.aio
        if ids is not None:
            if ids:
                await aio.delete(ids)
            return True
        async for batch in aio.scan(batch_size=SCAN_BATCH, filter=spec or None):
            await aio.delete([r.id for r in batch])
        return True

    # --- reads -------------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents of ``ids`` that exist, in the order asked (missing ids are left out)."""
        ids = list(ids)
        return _records_to_documents(self._store.get(ids) if ids else [])

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        ids = list(ids)
        return _records_to_documents(await self._stores.aio.get(ids) if ids else [])

    @staticmethod
    def _query_args(vector: Any, k: int, flt: Any, kwargs: dict[str, Any],
                    include_vectors: bool = False) -> tuple[tuple, dict[str, Any]]:
        opts = common.query_options(kwargs, "search")
        return (np.asarray(vector, dtype=np.float32),), {"k": k, "filter": translate.from_mongo(flt),
                                                          "include_vectors": include_vectors, **opts}

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, filter: Any = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` nearest documents and their distances (lower is closer). ``filter``: a
        MongoDB-style dict over ``[schema]`` fields; ``tiers``, ``ef``, ``nprobe``, ``strict``
        pass through to ``TierStore.query``."""
        args, kw = self._query_args(embedding, k, filter, kwargs)
        return _scored(self._store.query(*args, **kw))

    async def asimilarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, filter: Any = None,
                                                      **kwargs: Any) -> list[tuple[Document, float]]:
        args, kw = self._query_args(embedding, k, filter, kwargs)
        return _scored(await self._stores.aio.query(*args, **kw))

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Any = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k, filter, **kwargs)

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: Any = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        vector = await self._embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Any = None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Any = None,
                                           **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def similarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Distance -> relevance in [0, 1] by the store's metric: cosine ``1 - d/2`` (= (1 + cos) / 2),
        ip the same clamped to [0, 1] (exact for unit vectors), l2 ``1 / (1 + d)`` (d squared)."""
        return common.relevance_fn(self._store.metric)

    # --- maximal marginal relevance -------------------------------------------------------------

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: Any = None,
                                                **kwargs: Any) -> list[Document]:
        """MMR over the ``max(fetch_k, k)`` nearest records (their vectors come with the hits,
        from whichever tier holds them; MMR's diversity term is cosine whatever the metric)."""
        args, kw = self._query_args(embedding, max(fetch_k, k), filter, kwargs, include_vectors=True)
        return _mmr(embedding, self._store.query(*args, **kw), k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5, filter: Any = None,
                                                       **kwargs: Any) -> list[Document]:
        args, kw = self._query_args(embedding, max(fetch_k, k), filter, kwargs, include_vectors=True)
        return _mmr(embedding, await self._stores.aio.query(*args, **kw), k, lambda_mult)

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: Any = None, **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(self._embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter, **kwargs)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: Any = None,
                                             **kwargs: Any) -> list[Document]:
        vector = await self._embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter, **kwargs)

    # --- constructors ----------------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, store: TierStore | AsyncTierStore | None = None, config: Any = None,
                   tier: str | None = None, **open_kwargs: Any) -> TierStoreVectorStore:
        """A store holding ``texts``: ``store=`` an open one (not closed by the adapter), or one
        opened from ``config=`` and ``tierstore.open`` keywords (owned: :meth:`close` closes it;
        ``dim`` defaults to the embedding model's). ``tier``: see the class."""
        texts, metadatas, ids, tier_ = _check_write(texts, metadatas, ids, {}, common.check_tier(tier))
        vectors = embedding.embed_documents(texts) if texts else []
        if store is not None:
            vs = cls(_given(store, config, open_kwargs), embedding, tier=tier)
        else:
            dim = len(vectors[0]) if vectors else _dim_probe(embedding)
            vs = cls(common.open_for(config, dim, open_kwargs), embedding, tier=tier, owns_store=True)
        try:
            if texts:
                args, kw = vs._upsert_args(texts, metadatas, ids, vectors, tier_)
                vs.store.upsert(*args, **kw)
        except BaseException:
            vs.close()
            raise
        return vs

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None,
                          *, ids: list[str] | None = None, store: TierStore | AsyncTierStore | None = None,
                          config: Any = None, tier: str | None = None, **open_kwargs: Any) -> TierStoreVectorStore:
        """:meth:`from_texts` for asyncio: the store is opened as a :class:`~tierstore.aio.AsyncTierStore`
        (``max_workers=`` sizes its pool) off the event loop."""
        texts, metadatas, ids, tier_ = _check_write(texts, metadatas, ids, {}, common.check_tier(tier))
        vectors = await embedding.aembed_documents(texts) if texts else []
        if store is not None:
            vs = cls(_given(store, config, open_kwargs), embedding, tier=tier)
        else:
            dim = len(vectors[0]) if vectors else _dim_probe(embedding)
            vs = cls(await common.aopen_for(config, dim, open_kwargs), embedding, tier=tier, owns_store=True)
        try:
            if texts:
                args, kw = vs._upsert_args(texts, metadatas, ids, vectors, tier_)
                await vs._stores.aio.upsert(*args, **kw)
        except BaseException:
            await vs.aclose()
            raise
        return vs


def _check_write(texts: Iterable[str], metadatas: Sequence[dict[str, Any] | None] | None,
                 ids: Sequence[str | None] | None, kwargs: dict[str, Any],
                 default_tier: str | None) -> tuple[list[str], list | None, list[str], Any]:
    """Validate a write before anything is embedded: lengths, ids, the tier, no stray keywords."""
    texts = list(texts)
    tier = common.check_tier(kwargs.pop("tier", default_tier))
    if kwargs:
        raise InvalidInputError(f"add_texts: unknown keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}]: expected a str, got {type(t).__name__}")
    if metadatas is not None:
        metadatas = list(metadatas)
        if len(metadatas) != len(texts):
            raise InvalidInputError(f"metadatas: {len(metadatas)} metadatas for {len(texts)} texts")
    return texts, metadatas, common.new_ids(ids, len(texts)), tier


def _given(store: Any, config: Any, open_kwargs: dict[str, Any]) -> Any:
    if config is not None or open_kwargs:
        raise InvalidInputError("store: pass an open store or config=/open keywords, not both")
    return store


def _dim_probe(embedding: Embeddings) -> Callable[[], int]:
    """Asks the embedding model its dimension, only if the config does not say (one embed call)."""
    return lambda: len(embedding.embed_query("dimension probe"))


def _document(uid: str | int, text: str | None, metadata: dict[str, Any]) -> Document:
    return Document(id=common.as_id(uid), page_content=text or "", metadata=metadata)


def _records_to_documents(records: Sequence[Any]) -> list[Document]:
    return [_document(r.id, r.text, r.metadata) for r in records if r is not None]


def _scored(hits: Sequence[Hit]) -> list[tuple[Document, float]]:
    return [(_document(h.id, h.text, h.metadata), float(h.distance)) for h in hits]


def _mmr(embedding: Any, hits: Sequence[Hit], k: int, lambda_mult: float) -> list[Document]:
    if not hits:
        return []
    picked = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), [h.vector for h in hits],
                                        lambda_mult=lambda_mult, k=k)
    return [_document(hits[i].id, hits[i].text, hits[i].metadata) for i in picked]


__all__ = ["TierStoreVectorStore"]
