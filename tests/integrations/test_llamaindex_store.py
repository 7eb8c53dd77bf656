"""The LlamaIndex vector store on real Redis + S3, on hot, warm and cold placements.

llama-index-core ships no reusable vector-store test suite (its tests are not in the wheel), so
these mirror what its own stores' tests check (llama_index tests/vector_stores/test_simple.py and
the integrations' suites): queries sorted by similarity, top-k, metadata filters (exact, several,
AND/OR, nested, contradictory, node ids), delete by ref_doc_id, delete_nodes, get_nodes, clear,
each sync and async -- plus a VectorStoreIndex end to end."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import numpy as np
import pytest
from adapters_support import IDLE_POLICY, PLACEMENTS, empty
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import tierstore
from tierstore import InvalidInputError, SchemaError
from tierstore.integrations.llamaindex import TierStoreVectorStore

SCHEMA = {"author": "tag", "mark": "numeric", "tags": "tag", "ref_doc_id": "tag"}


def _vec(*xs: float) -> list[float]:
    return [*map(float, xs), *([0.0] * (6 - len(xs)))]


def _nodes() -> list[TextNode]:
    """Like llama_index's test_simple fixture: three nodes of two source documents."""
    return [
        TextNode(text="lorem ipsum", id_="AF3BE6C4", embedding=_vec(1, 0, 0),
                 metadata={"author": "Marie Curie", "mark": 3, "tags": ["physics", "chemistry"]},
                 relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-0")}),
        TextNode(text="lorem ipsum", id_="7D9CD555", embedding=_vec(0, 1, 0),
                 metadata={"author": "Albert Einstein", "mark": 4, "tags": ["physics"]},
                 relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-0")}),
        TextNode(text="dolor sit amet", id_="452D24AB", embedding=_vec(0, 0, 1),
                 metadata={"author": "Charlotte Bronte", "mark": 5, "tags": ["novels"], "year": None},
                 relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-1")}),
    ]


@pytest.fixture(scope="module", params=PLACEMENTS)
def li_store(request, open_kwargs) -> Iterator[tuple[str, tierstore.TierStore]]:
    store = tierstore.open(**open_kwargs(schema=SCHEMA, policy=IDLE_POLICY))
    yield request.param, store
    store.close()


@pytest.fixture
def vs(li_store) -> Iterator[TierStoreVectorStore]:
    """An adapter over an empty shared store that writes to one tier, holding the three nodes."""
    tier, store = li_store
    adapter = TierStoreVectorStore(store, tier=tier)
    try:
        assert adapter.add(_nodes()) == ["AF3BE6C4", "7D9CD555", "452D24AB"]
        assert {r.tier for b in store.scan() for r in b} == {tier}
        yield adapter
    finally:
        empty(store)


def _q(k: int = 3, filters: MetadataFilters | None = None, **kw) -> VectorStoreQuery:
    return VectorStoreQuery(query_embedding=_vec(1, 0.5, 0.1), similarity_top_k=k, filters=filters, **kw)


def _f(*leaves: tuple, condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=k, value=v, operator=op) for k, op, v in leaves],
                           condition=FilterCondition(condition))


def _run(vs: TierStoreVectorStore, mode: str, name: str, *args, **kwargs):
    """Call ``name`` or its async twin, by ``mode``."""
    if mode == "sync":
        return getattr(vs, name)(*args, **kwargs)
    twin = {"add": "async_add", "query": "aquery"}.get(name, "a" + name)
    return asyncio.run(getattr(vs, twin)(*args, **kwargs))


MODES = ["sync", "async"]


@pytest.mark.parametrize("mode", MODES)
def test_query_sorted_by_similarity_with_top_k(vs, mode):
    res = _run(vs, mode, "query", _q())
    assert res.ids == ["AF3BE6C4", "7D9CD555", "452D24AB"]
    assert res.similarities == sorted(res.similarities, reverse=True)
    cos = [1 / np.sqrt(1.26), 0.5 / np.sqrt(1.26), 0.1 / np.sqrt(1.26)]
    assert res.similarities == pytest.approx(cos, abs=1e-5)  # cosine similarity, like SimpleVectorStore
    assert [n.node_id for n in res.nodes] == res.ids
    assert _run(vs, mode, "query", _q(k=1)).ids == ["AF3BE6C4"]


@pytest.mark.parametrize("mode", MODES)
def test_query_with_filters(vs, mode):
    def ids(filters, **kw):
        return sorted(_run(vs, mode, "query", _q(filters=filters, **kw)).ids)

    EQ, NE, GT, GTE, LT, LTE, IN, NIN = (FilterOperator.EQ, FilterOperator.NE, FilterOperator.GT, FilterOperator.GTE,
                                         FilterOperator.LT, FilterOperator.LTE, FilterOperator.IN, FilterOperator.NIN)
    assert ids(_f(("author", EQ, "Marie Curie"))) == ["AF3BE6C4"]
    assert ids(_f(("author", NE, "Marie Curie"))) == ["452D24AB", "7D9CD555"]
    assert ids(_f(("mark", GT, 3))) == ["452D24AB", "7D9CD555"]
    assert ids(_f(("mark", GTE, 4), ("mark", LTE, 4))) == ["7D9CD555"]
    assert ids(_f(("mark", LT, 4))) == ["AF3BE6C4"]
    assert ids(_f(("author", IN, ["Marie Curie", "Charlotte Bronte"]))) == ["452D24AB", "AF3BE6C4"]
    assert ids(_f(("author", NIN, ["Marie Curie", "Charlotte Bronte"]))) == ["7D9CD555"]
    assert ids(_f(("mark", IN, [3, 5]))) == ["452D24AB", "AF3BE6C4"]
    assert ids(_f(("tags", FilterOperator.CONTAINS, "physics"))) == ["7D9CD555", "AF3BE6C4"]
    assert ids(_f(("tags", FilterOperator.ANY, ["novels", "chemistry"]))) == ["452D24AB", "AF3BE6C4"]
    assert ids(_f(("tags", FilterOperator.ALL, ["physics", "chemistry"]))) == ["AF3BE6C4"]
    assert ids(_f(("author", EQ, "Marie Curie"), ("mark", EQ, 5), condition="or")) == ["452D24AB", "AF3BE6C4"]
    assert ids(_f(("author", EQ, "Marie Curie"), ("mark", EQ, 5))) == []  # contradictory
    nested = MetadataFilters(filters=[_f(("mark", GTE, 4)), _f(("author", EQ, "Marie Curie"), ("mark", EQ, 5),
                                                                 condition="or")])
    assert ids(nested) == ["452D24AB"]
    assert ids(_f(("mark", GT, 3)), k=1) == ["7D9CD555"]  # top-k applies after the filter
    assert ids(_f(("mark", GT, 3)), node_ids=["452D24AB", "AF3BE6C4"]) == ["452D24AB"]
    assert ids(None, doc_ids=["test-1"]) == ["452D24AB"]


def test_unsupported_filters_are_refused(vs):
    with pytest.raises(SchemaError, match="not declared"):
        vs.query(_q(filters=_f(("year", FilterOperator.EQ, 2020))))  # LlamaIndex would return nothing
    with pytest.raises(SchemaError, match="text_match"):
        vs.query(_q(filters=_f(("author", FilterOperator.TEXT_MATCH, "Marie"))))
    with pytest.raises(SchemaError, match="tag fields only"):
        vs.query(_q(filters=_f(("mark", FilterOperator.CONTAINS, 3))))
    with pytest.raises(SchemaError, match="not"):
        vs.query(_q(filters=_f(("mark", FilterOperator.EQ, 3), condition="not")))
    with pytest.raises(InvalidInputError, match="mode"):
        vs.query(_q(mode=VectorStoreQueryMode.HYBRID))
    with pytest.raises(InvalidInputError, match="query_embedding"):
        vs.query(VectorStoreQuery(query_str="lorem", similarity_top_k=1))


@pytest.mark.parametrize("mode", MODES)
def test_nodes_round_trip(vs, mode):
    back = _run(vs, mode, "get_nodes", ["452D24AB", "missing", "AF3BE6C4"])
    want = {n.node_id: n for n in _nodes()}
    assert [n.node_id for n in back] == ["452D24AB", "AF3BE6C4"]
    for n in back:
        orig = want[n.node_id]
        assert (n.text, n.metadata, n.ref_doc_id) == (orig.text, orig.metadata, orig.ref_doc_id)
        assert n.relationships == orig.relationships
        assert n.hash == orig.hash
    hit = _run(vs, mode, "query", _q(k=1)).nodes[0]
    assert (hit.text, hit.metadata, hit.ref_doc_id) == ("lorem ipsum", want["AF3BE6C4"].metadata, "test-0")
    got = _run(vs, mode, "get_nodes", None, _f(("mark", FilterOperator.LTE, 4)))
    assert sorted(n.node_id for n in got) == ["7D9CD555", "AF3BE6C4"]
    got = _run(vs, mode, "get_nodes", ["AF3BE6C4", "452D24AB"], _f(("mark", FilterOperator.LTE, 4)))
    assert [n.node_id for n in got] == ["AF3BE6C4"]
    assert len(_run(vs, mode, "get_nodes")) == 3


@pytest.mark.parametrize("mode", MODES)
def test_delete_by_ref_doc_id(vs, mode):
    _run(vs, mode, "delete", "test-0")
    assert _run(vs, mode, "query", _q()).ids == ["452D24AB"]
    _run(vs, mode, "delete", "no-such-document")
    assert vs.client.count() == 1


@pytest.mark.parametrize("mode", MODES)
def test_delete_nodes_and_clear(vs, mode):
    _run(vs, mode, "delete_nodes", ["AF3BE6C4", "missing"])
    assert sorted(_run(vs, mode, "query", _q()).ids) == ["452D24AB", "7D9CD555"]
    _run(vs, mode, "delete_nodes", None, _f(("mark", FilterOperator.EQ, 5)))
    assert _run(vs, mode, "query", _q()).ids == ["7D9CD555"]
    _run(vs, mode, "delete_nodes", ["7D9CD555"], _f(("mark", FilterOperator.EQ, 5)))  # named but not matching
    assert _run(vs, mode, "query", _q()).ids == ["7D9CD555"]
    with pytest.raises(InvalidInputError, match="clear"):
        _run(vs, mode, "delete_nodes")
    vs.add(_nodes())
    _run(vs, mode, "clear")
    assert vs.client.count() == 0
    assert _run(vs, mode, "query", _q()).ids == []


@pytest.mark.parametrize("mode", MODES)
def test_mmr(vs, mode):
    vs.add([TextNode(text="close to the first", id_="NEAR", embedding=_vec(1, -0.1, 0))])
    plain = _run(vs, mode, "query", _q(k=2))
    assert plain.ids == ["AF3BE6C4", "NEAR"]
    mmr = _run(vs, mode, "query", _q(k=2, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.3))
    assert mmr.ids == ["AF3BE6C4", "7D9CD555"]  # the near-duplicate gives way


def test_delete_without_declared_ref_doc_id_scans(open_store):
    """Without ref_doc_id in [schema] delete(ref_doc_id) still works (a pass over every record);
    doc_ids queries need the declared field."""
    store = open_store(schema={"author": "tag"})
    vs = TierStoreVectorStore(store)
    vs.add(_nodes()[:2], tier="warm")
    vs.add(_nodes()[2:], tier="cold")
    vs.delete("test-1")
    assert sorted(r.id for b in store.scan() for r in b) == ["7D9CD555", "AF3BE6C4"]
    asyncio.run(vs.adelete("test-0"))
    assert store.count() == 0
    with pytest.raises(SchemaError, match="ref_doc_id"):
        vs.query(_q(doc_ids=["test-0"]))


def test_add_checks(open_store):
    vs = TierStoreVectorStore(open_store())
    with pytest.raises(InvalidInputError, match="embedding"):
        vs.add([TextNode(text="no vector")])
    with pytest.raises(InvalidInputError, match="tier"):
        vs.add(_nodes(), tier="tepid")
    with pytest.raises(InvalidInputError, match="store"):
        TierStoreVectorStore("not a store")
    assert vs.add([]) == [] and vs.client.count() == 0


class WordHashEmbedding(BaseEmbedding):
    """Deterministic bag-of-words embedding: each word adds a signed hash bucket (offline, no model)."""

    dim: int = 32

    @classmethod
    def class_name(cls) -> str:
        return "WordHashEmbedding"

    def _embed(self, text: str) -> list[float]:
        v = np.zeros(self.dim)
        for word in text.lower().split():
            h = int.from_bytes(hashlib.blake2b(word.strip(".,").encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        v[0] += 1e-3  # never all zeros
        return (v / np.linalg.norm(v)).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)


def test_vector_store_index_end_to_end(open_store):
    store = open_store(dim=32, schema={"ref_doc_id": "tag", "topic": "tag"})
    vs = TierStoreVectorStore(store)
    docs = [Document(text="Redis keeps the hot vectors in memory.", id_="doc-redis", metadata={"topic": "hot"}),
            Document(text="Warm segments live on local disk.", id_="doc-disk", metadata={"topic": "warm"}),
            Document(text="Cold partitions are objects in S3 buckets.", id_="doc-s3", metadata={"topic": "cold"})]
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=vs),
                                            embed_model=WordHashEmbedding())
    assert store.count() == 3
    hits = index.as_retriever(similarity_top_k=1).retrieve("which objects are in S3 buckets")
    assert hits[0].node.ref_doc_id == "doc-s3" and hits[0].node.metadata == {"topic": "cold"}
    flt = MetadataFilters(filters=[MetadataFilter(key="topic", value="warm")])
    hits = asyncio.run(index.as_retriever(similarity_top_k=3, filters=flt).aretrieve("vectors"))
    assert [h.node.ref_doc_id for h in hits] == ["doc-disk"]
    index.delete_ref_doc("doc-redis")
    assert store.count() == 2
    asyncio.run(index.adelete_ref_doc("doc-disk"))
    assert [r.metadata["ref_doc_id"] for b in store.scan() for r in b] == ["doc-s3"]
