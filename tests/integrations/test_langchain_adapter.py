"""The LangChain adapter beyond the standard suite: scores per metric, filters, MMR on every tier,
the constructors, deletes by filter, placement, an AsyncTierStore, retrievers. Real Redis + S3."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from adapters_support import IDLE_POLICY, empty
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

import tierstore
import tierstore.aio
from tierstore import DimensionError, InvalidInputError, SchemaError
from tierstore.integrations.langchain import TierStoreVectorStore

AXES = {"x": [1, 0, 0, 0, 0, 0], "-x": [-1, 0, 0, 0, 0, 0], "y": [0, 1, 0, 0, 0, 0],
        "xy": [0.6, 0.8, 0, 0, 0, 0], "z": [0, 0, 1, 0, 0, 0]}


class AxisEmbeddings(Embeddings):
    """Unit vectors named by their text (known distances under every metric)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, AXES[t])) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.mark.parametrize("metric, distances, relevance", [
    ("cosine", [0.0, 1.0, 2.0], [1.0, 0.5, 0.0]),
    ("ip", [0.0, 1.0, 2.0], [1.0, 0.5, 0.0]),
    ("l2", [0.0, 2.0, 4.0], [1.0, 1 / 3, 0.2]),
])
def test_scores_per_metric(open_store, metric, distances, relevance):
    vs = TierStoreVectorStore(open_store(metric=metric), AxisEmbeddings())
    vs.add_texts(["x", "y", "-x"], ids=["x", "y", "-x"])
    scored = vs.similarity_search_with_score("x", k=3)
    assert [d.id for d, _ in scored] == ["x", "y", "-x"]
    assert [s for _, s in scored] == pytest.approx(distances, abs=1e-5)  # the store's distance
    rel = vs.similarity_search_with_relevance_scores("x", k=3)
    assert [s for _, s in rel] == pytest.approx(relevance, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for _, s in rel)
    above = vs.similarity_search_with_relevance_scores("x", k=3, score_threshold=0.3)
    assert [d.id for d, _ in above] == ["x", "y"]


def test_relevance_stays_in_range_for_unnormalised_vectors(open_store):
    """DeterministicFakeEmbedding is not unit length: ip and l2 relevances still fall in [0, 1]."""
    for metric in ("ip", "l2"):
        vs = TierStoreVectorStore(open_store(metric=metric), DeterministicFakeEmbedding(size=6))
        vs.add_texts(["a", "b", "c", "d"])
        rel = vs.similarity_search_with_relevance_scores("a", k=4)
        assert len(rel) == 4 and all(0.0 <= s <= 1.0 for _, s in rel), rel


DOCS = [
    Document(id="1", page_content="x", metadata={"kind": "a", "year": 1999, "extra": {"nested": [1, 2]}}),
    Document(id="2", page_content="y", metadata={"kind": "b", "year": 2005}),
    Document(id="3", page_content="xy", metadata={"kind": ["a", "b"], "year": 2010}),
    Document(id="4", page_content="z", metadata={"kind": "c"}),
]


def _ids(docs):
    return sorted(d.id for d in docs)


def test_filters(open_store):
    vs = TierStoreVectorStore(open_store(schema={"kind": "tag", "year": "numeric"}), AxisEmbeddings())
    vs.add_documents(DOCS)

    def found(flt):
        return _ids(vs.similarity_search("x", k=10, filter=flt))

    assert found(None) == ["1", "2", "3", "4"]
    assert found({"kind": "a"}) == ["1", "3"]  # a tag field: the record's tag set contains "a"
    assert found({"kind": {"$in": ["b", "c"]}}) == ["2", "3", "4"]
    assert found({"kind": {"$nin": ["a"]}}) == ["2", "4"]
    assert found({"year": {"$between": [2000, 2010]}}) == ["2", "3"]
    assert found({"year": {"$gte": 2000, "$lt": 2010}}) == ["2"]
    assert found({"year": {"$exists": False}}) == ["4"]
    assert found({"$or": [{"kind": "c"}, {"year": 1999}]}) == ["1", "4"]
    assert found({"$and": [{"kind": "a"}, {"year": {"$ne": 1999}}]}) == ["3"]
    assert _ids(vs.max_marginal_relevance_search("x", k=10, filter={"kind": "b"})) == ["2", "3"]
    assert _ids(asyncio.run(vs.asimilarity_search("x", k=10, filter={"kind": "a"}))) == ["1", "3"]
    # what cannot be expressed exactly is refused, naming it
    with pytest.raises(SchemaError, match=r"\$like"):
        found({"kind": {"$like": "a%"}})
    with pytest.raises(SchemaError, match=r"\$not"):
        found({"$not": {"kind": "a"}})
    with pytest.raises(SchemaError, match="callable"):
        found(lambda doc: True)
    with pytest.raises(SchemaError, match="extra"):  # not declared in [schema]
        found({"extra": 1})
    with pytest.raises(SchemaError, match=r"\$between"):
        found({"year": {"$between": [1]}})
    with pytest.raises(InvalidInputError, match="filtre"):  # a misspelt keyword is not ignored
        vs.similarity_search("x", k=10, filtre={"kind": "a"})


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_mmr_on_every_tier(placed_store, run_async):
    """MMR needs the hits' vectors: they come with the hits from hot, warm and cold alike."""
    tier, store = placed_store
    try:
        vs = TierStoreVectorStore(store, AxisEmbeddings(), tier=tier)
        vs.add_texts(["x", "xy", "y"], ids=["x", "xy", "y"])
        assert {r.tier for b in store.scan() for r in b} == {tier}
        similar = vs.similarity_search("x", k=2)
        assert [d.id for d in similar] == ["x", "xy"]
        if run_async:
            diverse = asyncio.run(vs.amax_marginal_relevance_search("x", k=2, fetch_k=3, lambda_mult=0.3))
        else:
            diverse = vs.max_marginal_relevance_search("x", k=2, fetch_k=3, lambda_mult=0.3)
        # xy: 0.3 * 0.6 (relevance) - 0.7 * 0.6 (redundancy with x) < y: 0.3 * 0 - 0.7 * 0
        assert [d.id for d in diverse] == ["x", "y"]
        assert diverse[0] == Document(id="x", page_content="x", metadata={})
    finally:
        empty(store)


def test_from_texts_opens_and_owns_a_store(open_kwargs):
    kw = open_kwargs()
    del kw["dim"]  # taken from the embedding model
    vs = TierStoreVectorStore.from_texts(["x", "y"], AxisEmbeddings(), [{"n": 1}, {"n": 2}], ids=["a", "b"], **kw)
    assert vs.store.dim == 6
    assert vs.similarity_search("y", k=1) == [Document(id="b", page_content="y", metadata={"n": 2})]
    vs.close()
    assert vs.store.closed

    with tierstore.open(**open_kwargs()) as store:  # a store passed in stays open
        vs = TierStoreVectorStore.from_documents(DOCS[:2], AxisEmbeddings(), store=store, tier="warm")
        assert [r.tier for r in store.get(["1", "2"])] == ["warm", "warm"]
        vs.close()
        assert not store.closed
        with pytest.raises(InvalidInputError, match="not both"):
            TierStoreVectorStore.from_texts(["x"], AxisEmbeddings(), store=store, path="/nowhere")

    with pytest.raises(DimensionError, match="6-dimensional"):
        TierStoreVectorStore.from_texts(["x"], AxisEmbeddings(), **open_kwargs(dim=8))


def test_afrom_texts_opens_an_async_store(open_kwargs):
    async def main():
        kw = open_kwargs()
        del kw["dim"]
        vs = await TierStoreVectorStore.afrom_texts(["x", "y", "z"], AxisEmbeddings(), ids=["a", "b", "c"],
                                                    max_workers=2, **kw)
        try:
            assert [d.id for d in await vs.asimilarity_search("z", k=3)][0] == "c"
            assert [d.id for d in vs.similarity_search("z", k=1)] == ["c"]  # the sync side works too
            assert await vs.aget_by_ids(["b", "nope"]) == [Document(id="b", page_content="y")]
        finally:
            await vs.aclose()
        assert vs.store.closed

    asyncio.run(main())


def test_an_async_store_passed_in(open_kwargs):
    async def main():
        async with tierstore.aio.open(**open_kwargs()) as astore:
            vs = TierStoreVectorStore(astore, AxisEmbeddings(), tier="cold")
            ids = await vs.aadd_documents([Document(page_content="x", metadata={"k": [1.5, None]})])
            assert uuid.UUID(ids[0]).version == 4  # generated
            assert (await astore.get(ids))[0].tier == "cold"
            found = await vs.asimilarity_search_with_score("x", k=1)
            assert found[0][0] == Document(id=ids[0], page_content="x", metadata={"k": [1.5, None]})
            assert found[0][1] == pytest.approx(0.0, abs=1e-6)
            await vs.aclose()  # not owned: a no-op
            assert not astore.closed
            await vs.adelete(ids)
            assert await astore.count() == 0

    asyncio.run(main())


def test_aclose_stops_the_adapters_pool_not_a_store_it_was_given(open_store, open_kwargs):
    store = open_store()

    async def main():
        vs = TierStoreVectorStore(store, AxisEmbeddings())
        await vs.aadd_texts(["x"], ids=["x"])
        await vs.aclose()
        assert not store.closed
        assert [d.id for d in await vs.asimilarity_search("x", k=1)] == ["x"]  # a new pool
        await vs.aclose()
        owned = TierStoreVectorStore.open(AxisEmbeddings(), **open_kwargs())
        await owned.aadd_texts(["y"])
        await owned.aclose()
        assert owned.store.closed

    asyncio.run(main())


def test_delete_by_ids_and_filter(open_store):
    store = open_store(schema={"kind": "tag", "year": "numeric"})
    vs = TierStoreVectorStore(store, AxisEmbeddings())
    vs.add_documents(DOCS)
    assert vs.delete(["1", "missing"]) is True
    assert vs.delete(filter={"kind": "b"}) is True
    assert _ids(vs.get_by_ids(["1", "2", "3", "4"])) == ["4"]
    with pytest.raises(InvalidInputError, match="filter"):
        vs.delete()  # not LangChain's "delete everything" by accident
    with pytest.raises(InvalidInputError, match="not both"):
        vs.delete(["4"], filter={})
    asyncio.run(vs.adelete(filter={}))  # everything, on purpose
    assert len(store) == 0


def test_writes_are_checked_before_embedding(open_store):
    class Counting(AxisEmbeddings):
        calls = 0

        def embed_documents(self, texts):
            Counting.calls += 1
            return super().embed_documents(texts)

    store = open_store(schema={"year": "numeric"})
    vs = TierStoreVectorStore(store, Counting())
    with pytest.raises(InvalidInputError, match="metadatas"):
        vs.add_texts(["x", "y"], [{}])
    with pytest.raises(InvalidInputError, match="ids"):
        vs.add_texts(["x", "y"], ids=["a"])
    with pytest.raises(InvalidInputError, match="tier"):
        vs.add_texts(["x"], tier="lukewarm")
    with pytest.raises(InvalidInputError, match="bogus"):
        vs.add_texts(["x"], bogus=1)
    assert Counting.calls == 0
    with pytest.raises(SchemaError, match="year"):  # the store's own check: nothing written
        vs.add_texts(["x", "y"], [{"year": 1}, {"year": "new"}])
    assert len(store) == 0 and vs.add_texts([]) == []


def test_retrievers(open_store):
    vs = TierStoreVectorStore(open_store(schema={"kind": "tag"}), AxisEmbeddings())
    vs.add_documents(DOCS)
    assert [d.id for d in vs.as_retriever(search_kwargs={"k": 2}).invoke("x")] == ["1", "3"]
    mmr = vs.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4, "lambda_mult": 0.3,
                                                            "filter": {"kind": {"$in": ["a", "b"]}}})
    assert [d.id for d in mmr.invoke("x")] == ["1", "2"]
    thresh = vs.as_retriever(search_type="similarity_score_threshold",
                             search_kwargs={"score_threshold": 0.7, "filter": {"kind": "b"}})
    assert [d.id for d in asyncio.run(thresh.ainvoke("x"))] == ["3"]  # xy: (1 + 0.6) / 2 = 0.8


def test_vectors_stay_float32_and_ids_strings(open_store):
    store = open_store(policy=IDLE_POLICY)
    store.upsert([7], np.eye(6, dtype=np.float32)[:1], texts=["int id"])  # written by other code
    vs = TierStoreVectorStore(store, AxisEmbeddings())
    assert vs.similarity_search("x", k=1) == [Document(id="7", page_content="int id")]
