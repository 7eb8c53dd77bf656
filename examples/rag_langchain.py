"""Retrieval-augmented answering with LangChain over an embedded tierstore store, offline.

    .venv/bin/python examples/rag_langchain.py [--path ./rag-data] [--question "..."]

An embedded store (no ``hot.redis_url``: the store starts and owns a private redis-server under
``<path>/redis``; the S3 server for cold starts only if something goes cold) holds a few
paragraphs about tierstore, embedded by a small hashing embedding so the example runs without a
model or a network. A LangChain retriever finds the paragraphs nearest a question -- from
whichever tier each one lives in: one paragraph is moved to the warm tier first, and answers do
not change -- and a toy "reader" (in place of an LLM) answers with the retrieved sentence that
shares the most words with the question. Swap ``HashingEmbeddings`` for a real embedding model
and ``extractive_reader`` for a chat model (``prompt | llm``) to make it a real RAG pipeline.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import tempfile
import time

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from tierstore.integrations.langchain import TierStoreVectorStore

PARAGRAPHS = [
    ("hot", "The hot tier keeps the most accessed vectors in Redis. Redis answers a nearest neighbour "
            "query from an HNSW graph held in memory, in under a millisecond."),
    ("warm", "The warm tier keeps vectors on local disk. Its HNSW segments are memory mapped and searched "
             "by numba kernels, with an exact rerank of the best candidates."),
    ("cold", "The cold tier keeps the rarely used vectors in S3. A query fetches only the partitions it "
             "needs, with parallel ranged GETs through a local block cache."),
    ("policy", "The policy counts how often each vector is returned by queries. Counts decay over time, "
               "and every cycle the policy moves vectors between tiers to fit the hot and warm budgets."),
    ("safety", "Moves are crash safe. A vector is copied, the catalog entry is flipped, and only then is "
               "the old copy removed, so a query never sees a vector twice or loses it."),
]

QUESTIONS = [
    "Where does the cold tier keep vectors?",
    "How does the policy decide to move vectors between tiers?",
    "What does Redis hold in memory?",
]

WORD = re.compile(r"[a-z0-9]+")


class HashingEmbeddings(Embeddings):
    """Bag of words and word pairs, each hashed into one of ``dim`` signed buckets, unit length.
    Deterministic and offline; texts sharing words get close vectors (enough for a demo)."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def _embed(self, text: str) -> list[float]:
        words = WORD.findall(text.lower())
        v = np.zeros(self.dim)
        for feature in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 40) & 1 else -1.0
        v[0] += 1e-6  # never all zeros (cosine needs a direction)
        return (v / np.linalg.norm(v)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def extractive_reader(inputs: dict) -> str:
    """A toy stand-in for an LLM: the retrieved sentence sharing the most words with the question."""
    asked = set(WORD.findall(inputs["question"].lower())) - {"the", "a", "does", "do", "what", "how", "where", "to"}
    sentences = [s.strip() for d in inputs["context"] for s in re.split(r"(?<=\.)\s+", d.page_content) if s.strip()]
    return max(sentences, key=lambda s: len(asked & set(WORD.findall(s.lower()))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", help="store directory (default: a temporary one, removed at exit)")
    ap.add_argument("--question", action="append", help="ask this instead of the built-in questions")
    args = ap.parse_args()
    tmp = None if args.path else tempfile.mkdtemp(prefix="tierstore-rag-")
    t0 = time.perf_counter()
    try:
        # dim comes from the embedding model; schema makes "topic" filterable
        vs = TierStoreVectorStore.from_documents(
            [Document(id=topic, page_content=text, metadata={"topic": topic, "source": "README"})
             for topic, text in PARAGRAPHS],
            HashingEmbeddings(), path=args.path or tmp, schema={"topic": "tag"})
        with vs:
            vs.store.move(["cold"], "warm")  # placement is invisible to the retriever
            print(f"store: {vs.store!r} ({', '.join(f'{r.id}={r.tier}' for r in vs.store.get(['hot', 'cold']))})")
            retriever = vs.as_retriever(search_kwargs={"k": 2})
            chain = {"context": retriever, "question": RunnablePassthrough()} | RunnableLambda(extractive_reader)
            for question in args.question or QUESTIONS:
                print(f"\nQ: {question}")
                for doc, relevance in vs.similarity_search_with_relevance_scores(question, k=2):
                    print(f"   [{doc.id}, relevance {relevance:.2f}] {doc.page_content[:70]}...")
                print(f"A: {chain.invoke(question)}")
            # a filter over a [schema] field
            only = vs.similarity_search("vectors", k=5, filter={"topic": {"$in": ["policy", "safety"]}})
            print(f"\nfiltered to topic in [policy, safety]: {[d.id for d in only]}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
