"""Documents and nodes from the frameworks' own loaders and splitters (offline: LlamaIndex's
SimpleDirectoryReader over a temp folder, SentenceSplitter and MarkdownNodeParser nodes, their
LangChain form) come back unchanged through add -> get / search, from hot, warm and cold.
Their metadata holds file paths, dates as strings, sizes, None, nested values, lists."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest
from adapters_support import empty
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core import SimpleDirectoryReader
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

from tierstore.integrations.langchain import TierStoreVectorStore as LCStore
from tierstore.integrations.llamaindex import TierStoreVectorStore as LIStore

FILES = {
    "notes/tiers.md": "# Tiers\n\nHot vectors live in Redis.\n\n## Warm\n\nWarm segments are on disk.\n\n"
                      "## Cold\n\nCold partitions are in S3, fetched by ranged GETs.\n",
    "notes/policy.txt": "The policy counts accesses. " * 40 + "\n\nA vector moves when its count crosses a threshold.",
    "ünïcode name.txt": "Ünïcode text ✓ — with a dash, quotes \"like these\" and a tab\there.",
}

TRICKY = {"source": "/data/notes/tiers.md", "start_index": 0, "page": None, "created": "2024-05-01T12:30:00Z",
          "size": 18_446_744_073, "score": 0.125, "flag": False, "tags": ["a", "b"], "empty": "", "none_list": [None],
          "nested": {"authors": [{"name": "Ada", "orcid": None}], "versions": [1, 2.5, -3]}, "emptylist": [],
          "emptydict": {}, "unicode": "héllo ✓ \u2028", "big": 2**53 + 1, "neg": -7}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def loaded(folder: Path):
    return SimpleDirectoryReader(str(folder), recursive=True).load_data()


def _embed(text: str, dim: int = 6) -> list[float]:
    h = hashlib.sha256(text.encode()).digest()
    v = np.frombuffer(h[: 4 * dim], dtype=np.uint32).astype(np.float64) / 2**32 - 0.5
    return (v + 1e-3).tolist()


def test_langchain_documents_round_trip(placed_store, loaded):
    tier, store = placed_store
    try:
        vs = LCStore(store, DeterministicFakeEmbedding(size=6), tier=tier)
        docs = [LCDocument(page_content=d.text, metadata=d.metadata) for d in loaded]  # what to_langchain_format does
        docs += [LCDocument(page_content="tricky metadata", metadata=TRICKY, id="tricky"),
                 LCDocument(page_content="", metadata={}, id="empty-text"),
                 LCDocument(page_content="tuple", metadata={"pair": (1, "x")}, id="tuple")]
        assert any("file_path" in d.metadata and "creation_date" in d.metadata for d in docs)
        ids = vs.add_documents(docs)
        assert {r.tier for b in store.scan() for r in b} == {tier}
        want = {i: LCDocument(id=i, page_content=d.page_content, metadata=d.metadata) for i, d in zip(ids, docs, strict=True)}
        want["tuple"] = LCDocument(id="tuple", page_content="tuple", metadata={"pair": [1, "x"]})  # JSON: a list
        assert {d.id: d for d in vs.get_by_ids(ids)} == want
        for i, d in zip(ids, docs, strict=True):
            found = vs.similarity_search(d.page_content, k=len(docs))
            assert want[i] in found
        assert {d.id: d for d in asyncio.run(vs.aget_by_ids(ids))} == want
        assert TRICKY["nested"]["versions"] == [1, 2.5, -3]  # the caller's dicts are not changed
    finally:
        empty(store)


@pytest.mark.parametrize("parser", ["sentence", "markdown"])
def test_llamaindex_nodes_round_trip(placed_store, loaded, parser):
    tier, store = placed_store
    try:
        splitter = SentenceSplitter(chunk_size=64, chunk_overlap=8) if parser == "sentence" else MarkdownNodeParser()
        nodes = splitter.get_nodes_from_documents(loaded)
        assert len(nodes) > len(loaded)
        for n in nodes:
            n.embedding = _embed(n.get_content())
        vs = LIStore(store, tier=tier)
        vs.add(nodes)
        assert store.count() == len(nodes)
        back = {n.node_id: n for n in vs.get_nodes([n.node_id for n in nodes])}
        for n in nodes:
            b = back[n.node_id]
            assert b.get_content() == n.get_content()
            assert b.metadata == n.metadata and b.metadata["file_path"].startswith(str(Path(loaded[0].metadata["file_path"]).anchor))
            assert b.relationships == n.relationships and b.ref_doc_id == n.ref_doc_id
            assert (b.start_char_idx, b.end_char_idx) == (n.start_char_idx, n.end_char_idx)
            assert b.excluded_embed_metadata_keys == n.excluded_embed_metadata_keys
            assert b.excluded_llm_metadata_keys == n.excluded_llm_metadata_keys
            assert b.hash == n.hash
            assert b.embedding is None  # like other stores: the vector stays in the store
        contents = [n.get_content() for n in nodes]
        first = next(n for n in nodes if contents.count(n.get_content()) == 1)  # a repeated chunk would tie
        res = vs.query(_query(first))
        assert res.ids[0] == first.node_id and res.nodes[0].metadata == first.metadata
        assert res.similarities[0] == pytest.approx(1.0, abs=1e-5)
        res = asyncio.run(vs.aquery(_query(first)))
        assert res.nodes[0].get_content() == first.get_content()
    finally:
        empty(store)


def _query(node):
    from llama_index.core.vector_stores.types import VectorStoreQuery

    return VectorStoreQuery(query_embedding=node.embedding, similarity_top_k=3)
