"""LlamaIndex vector store over a tierstore store (``pip install tierstore[llamaindex]``).

>>> from llama_index.core import StorageContext, VectorStoreIndex               # doctest: +SKIP
>>> vs = TierStoreVectorStore(tierstore.open(path="/tmp/li", dim=384, schema={"ref_doc_id": "tag"}))  # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=vs))  # doctest: +SKIP

A node is one record: its id the node id, its vector the node's embedding, its text the record's
text (``texts=`` of ``upsert``), and its metadata the node's metadata plus what LlamaIndex's own
stores keep beside it (``node_to_metadata_dict``: the node without its text and embedding as JSON
in ``_node_content`` -- relationships, ref_doc_id, excluded keys... -- ``_node_type``, and the
source document's id under ``ref_doc_id``, ``doc_id`` and ``document_id``), so a node comes back
as it went in. Declare ``ref_doc_id = "tag"`` in the store's ``[schema]`` to make
``delete(ref_doc_id)`` and ``doc_ids=`` queries index lookups; without it, ``delete`` scans every
record (O(store), cold vectors fetched from S3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from .. import filters as tsfilters
from ..aio import AsyncTierStore
from ..errors import InvalidInputError, SchemaError
from ..results import Hit, Record
from ..store import TierStore
from . import common, translate

REF_DOC_FIELD = "ref_doc_id"
SCAN_BATCH = 2_000
MMR_OPTIONS = ("mmr_threshold", "mmr_prefetch_k", "mmr_prefetch_factor")


class TierStoreVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a :class:`~tierstore.TierStore` (``stores_text``: the
    index needs no separate docstore for the text).

    ``store``: an open store -- a :class:`~tierstore.TierStore`, or a
    :class:`~tierstore.aio.AsyncTierStore` for an asyncio service; the adapter does not close it
    (:meth:`from_config` opens one it owns). The ``a*`` methods await the store's async twin
    (tierstore.aio). ``tier``: where writes go -- ``None`` (default) lets the store's policy place
    them, or ``"hot"``/``"warm"``/``"cold"``. ``flat_metadata``: refuse nested metadata values like
    the stores that cannot hold them (tierstore can: off by default).
    """

    stores_text: bool = True
    flat_metadata: bool = False
    tier: str | None = None

    _stores: common.Stores = PrivateAttr()

    def __init__(self, store: TierStore | AsyncTierStore, *, tier: str | None = None, flat_metadata: bool = False,
                 owns_store: bool = False, **kwargs: Any) -> None:
        stores = common.Stores(store, owns_store)  # checks the type first
        super().__init__(tier=common.check_tier(tier), flat_metadata=flat_metadata, **kwargs)
        self._stores = stores

    @classmethod
    def from_config(cls, config: Any = None, *, tier: str | None = None, flat_metadata: bool = False,
                    **open_kwargs: Any) -> TierStoreVectorStore:
        """Open (or create) a store from ``config`` and ``tierstore.open`` keywords (``dim`` is
        required: nodes arrive embedded). The adapter owns it: :meth:`close` closes it."""
        return cls(common.open_for(config, None, open_kwargs), tier=tier, flat_metadata=flat_metadata,
                   owns_store=True)

    @classmethod
    def class_name(cls) -> str:
        return "TierStoreVectorStore"

    @property
    def client(self) -> TierStore:
        return self._stores.sync

    def close(self) -> None:
        """Close the store if this adapter opened it (:meth:`from_config`)."""
        self._stores.close()

    async def aclose(self) -> None:
        await self._stores.aclose()

    def _indexed_ref_doc(self) -> bool:
        return self.client.schema.get(REF_DOC_FIELD) == "tag"

    # --- writes --------------------------------------------------------------------------------------

    def _upsert_args(self, nodes: Sequence[BaseNode], kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
        tier = common.check_tier(kwargs.pop("tier", self.tier))
        if kwargs:
            raise InvalidInputError(f"add: unknown keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
        if not nodes:
            return None
        vectors = []
        for i, n in enumerate(nodes):
            if n.embedding is None:
                raise InvalidInputError(f"nodes[{i}] ({n.node_id!r}) has no embedding; embed nodes before adding them")
            vectors.append(n.embedding)
        ids = [n.node_id for n in nodes]
        texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        metadata = [node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata) for n in nodes]
        return (ids, np.asarray(vectors, dtype=np.float32)), {"metadata": metadata, "texts": texts, "tier": tier}

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert ``nodes`` (one atomic write): node id, embedding, text and metadata (see the
        module). ``tier=`` overrides the adapter's placement for this call."""
        nodes = list(nodes)
        call = self._upsert_args(nodes, add_kwargs)
        if call is not None:
            self.client.upsert(*call[0], **call[1])
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        nodes = list(nodes)
        call = self._upsert_args(nodes, kwargs)
        if call is not None:
            await self._stores.aio.upsert(*call[0], **call[1])
        return [n.node_id for n in nodes]

    def _document_scan(self, ref_doc_ids: list[str]) -> tuple[dict[str, Any] | None, Callable[[Record], bool]]:
        """How to find the nodes of source documents: a scan filtered on the catalog's metadata
        when ``ref_doc_id`` is a declared tag field, else a scan of every record and a test here."""
        if self._indexed_ref_doc():
            return {REF_DOC_FIELD: {"$in": ref_doc_ids}}, lambda r: True
        want = set(ref_doc_ids)
        return None, lambda r: r.metadata.get(REF_DOC_FIELD) in want

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id`` (see the module for the cost)."""
        _no_kwargs("delete", delete_kwargs)
        spec, keep = self._document_scan([ref_doc_id])
        for batch in self.client.scan(batch_size=SCAN_BATCH, filter=spec):
            if ids := [r.id for r in batch if keep(r)]:
                self.client.delete(ids)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        _no_kwargs("delete", delete_kwargs)
        spec, keep = self._document_scan([ref_doc_id])
        aio = self._stores.aio
        async for batch in aio.scan(batch_size=SCAN_BATCH, filter=spec):
            if ids := [r.id for r in batch if keep(r)]:
                await aio.delete(ids)

    @staticmethod
    def _check_delete_nodes(node_ids: list[str] | None, filters: MetadataFilters | None, kwargs: dict) -> None:
        _no_kwargs("delete_nodes", kwargs)
        if node_ids is None and (filters is None or not filters.filters):
            raise InvalidInputError("delete_nodes: pass node_ids and/or filters (clear() deletes every node)")

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes named, or matching ``filters``, or both (named and matching). Neither
        is an error, not "delete everything": that is :meth:`clear`."""
        self._check_delete_nodes(node_ids, filters, delete_kwargs)
        if ids := [r.id for r in self._select(node_ids, filters)]:
            self.client.delete(ids)

    async def adelete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                            **delete_kwargs: Any) -> None:
        self._check_delete_nodes(node_ids, filters, delete_kwargs)
        if ids := [r.id for r in await self._aselect(node_ids, filters)]:
            await self._stores.aio.delete(ids)

    def clear(self) -> None:
        """Delete every record of the store, batch by batch (O(store))."""
        for batch in self.client.scan(batch_size=SCAN_BATCH):
            self.client.delete([r.id for r in batch])

    async def aclear(self) -> None:
        aio = self._stores.aio
        async for batch in aio.scan(batch_size=SCAN_BATCH):
            await aio.delete([r.id for r in batch])

    # --- reads -------------------------------------------------------------------------------------

    def _named(self, records: Sequence[Record | None], spec: dict[str, Any] | None) -> list[Record]:
        """The records that exist (and match ``spec``, evaluated here like the store does)."""
        node = tsfilters.compile_filter(spec, self.client.schema)  # also checks the fields are declared
        return [r for r in records if r is not None and tsfilters.matches(node, r.metadata)]

    def _select(self, node_ids: list[str] | None, filters: MetadataFilters | None) -> list[Record]:
        spec = translate.from_llama(filters, self.client.schema)
        if node_ids is None:
            return [r for batch in self.client.scan(batch_size=SCAN_BATCH, filter=spec) for r in batch]
        return self._named(self.client.get(list(node_ids)) if node_ids else [], spec)

    async def _aselect(self, node_ids: list[str] | None, filters: MetadataFilters | None) -> list[Record]:
        spec = translate.from_llama(filters, self.client.schema)
        aio = self._stores.aio
        if node_ids is None:
            return [r async for batch in aio.scan(batch_size=SCAN_BATCH, filter=spec) for r in batch]
        return self._named(await aio.get(list(node_ids)) if node_ids else [], spec)

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The nodes named (those that exist, in that order), matching ``filters``, or both;
        neither: every node (a scan)."""
        return [_node(r.id, r.text, r.metadata) for r in self._select(node_ids, filters)]

    async def aget_nodes(self, node_ids: list[str] | None = None,
                         filters: MetadataFilters | None = None) -> list[BaseNode]:
        return [_node(r.id, r.text, r.metadata) for r in await self._aselect(node_ids, filters)]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nearest nodes to ``query.query_embedding`` (modes DEFAULT and
        MMR), within ``filters``, ``doc_ids`` (needs ``ref_doc_id`` declared) and ``node_ids``
        (those are read and scored here, exactly, not searched; empty restricts nothing). ``similarities``: higher is
        closer (cosine: cos, ip: the dot product, l2: 1 / (1 + squared distance)). ``tiers``,
        ``ef``, ``nprobe`` and ``strict`` keywords pass through to ``TierStore.query``;
        ``mmr_threshold``, ``mmr_prefetch_k``, ``mmr_prefetch_factor`` (default 4) tune MMR."""
        plan = _Plan(self, query, kwargs)
        if plan.node_ids is not None:
            records = self.client.get(plan.node_ids)
            return plan.result(plan.rank(self._named(records, plan.spec)))
        return plan.result(self.client.query(plan.vector, **plan.query_kwargs))

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        plan = _Plan(self, query, kwargs)
        aio = self._stores.aio
        if plan.node_ids is not None:
            records = await aio.get(plan.node_ids)
            return plan.result(plan.rank(self._named(records, plan.spec)))
        return plan.result(await aio.query(plan.vector, **plan.query_kwargs))


class _Plan:
    """One VectorStoreQuery, checked and translated before the store is asked (shared by
    ``query`` and ``aquery``), and the answer turned into a VectorStoreQueryResult."""

    def __init__(self, vs: TierStoreVectorStore, query: VectorStoreQuery, kwargs: dict[str, Any]) -> None:
        store = vs.client
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise InvalidInputError(f"query.mode: {query.mode.value!r} is not supported (default, mmr)")
        if query.query_embedding is None:
            raise InvalidInputError("query.query_embedding: None; tierstore searches by vector (give the index an "
                                    "embed model)")
        mmr = {k: kwargs.pop(k) for k in MMR_OPTIONS if k in kwargs}
        opts = common.query_options(kwargs, "query")
        spec = translate.from_llama(query.filters, store.schema, "query.filters")
        if query.doc_ids:
            if store.schema.get(REF_DOC_FIELD) != "tag":
                raise SchemaError("query.doc_ids: declare ref_doc_id = \"tag\" in the store's [schema] to "
                                  "restrict a query to documents")
            restrict = {REF_DOC_FIELD: {"$in": list(query.doc_ids)}}
            spec = restrict if spec is None else {"$and": [spec, restrict]}
        self.metric, self.spec, self.k = store.metric, spec, query.similarity_top_k
        self.vector = np.asarray(query.query_embedding, dtype=np.float32)
        # an empty list restricts nothing, as in LlamaIndex's other stores: VectorStoreIndex passes
        # its index struct's node ids, which is [] for a store that keeps the text itself
        self.node_ids = list(query.node_ids) if query.node_ids else None
        self.mmr = query.mode == VectorStoreQueryMode.MMR
        self.threshold = query.mmr_threshold if query.mmr_threshold is not None else mmr.get("mmr_threshold")
        fetch = self.k
        if self.mmr:
            fetch = int(mmr.get("mmr_prefetch_k") or self.k * float(mmr.get("mmr_prefetch_factor") or 4))
        self.query_kwargs = {"k": max(fetch, self.k), "filter": spec, "include_vectors": self.mmr, **opts}

    def rank(self, records: list[Record]) -> list[Hit]:
        """Named records as hits, ranked by the store's distance to the query."""
        if not records:
            return []
        ds = common.distances(self.metric, self.vector, np.stack([r.vector for r in records]))
        order = sorted(range(len(records)), key=lambda i: ds[i])
        return [Hit(records[i].id, ds[i], records[i].tier, records[i].metadata, records[i].text, records[i].vector)
                for i in order]

    def result(self, hits: Sequence[Hit]) -> VectorStoreQueryResult:
        if self.mmr and hits:
            scores, order = get_top_k_mmr_embeddings(
                self.vector.tolist(), [np.asarray(h.vector, dtype=np.float64).tolist() for h in hits],
                similarity_top_k=self.k, embedding_ids=list(range(len(hits))), mmr_threshold=self.threshold)
            picked, sims = [hits[i] for i in order], [float(s) for s in scores]
        else:
            picked = list(hits[: self.k])
            sim = common.similarity_fn(self.metric)
            sims = [sim(float(h.distance)) for h in picked]
        return VectorStoreQueryResult(nodes=[_node(h.id, h.text, h.metadata) for h in picked], similarities=sims,
                                      ids=[common.as_id(h.id) for h in picked])


def _no_kwargs(op: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise InvalidInputError(f"{op}: unknown keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")


def _node(uid: str | int, text: str | None, metadata: dict[str, Any]) -> BaseNode:
    """The node a record holds: rebuilt from ``_node_content`` (what ``add`` wrote), or -- for a
    record written by other code -- a TextNode of its text and metadata."""
    if "_node_content" in metadata:
        return metadata_dict_to_node(metadata, text=text)
    return TextNode(id_=common.as_id(uid), text=text or "", metadata=dict(metadata))


__all__ = ["REF_DOC_FIELD", "TierStoreVectorStore"]
