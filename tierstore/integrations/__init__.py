"""Adapters that let Python frameworks use a tierstore store as their vector store.

- ``tierstore.integrations.langchain.TierStoreVectorStore``: a LangChain ``VectorStore``
  (``pip install tierstore[langchain]``);
- ``tierstore.integrations.llamaindex.TierStoreVectorStore``: a LlamaIndex
  ``BasePydanticVectorStore`` (``pip install tierstore[llamaindex]``).

Each is a module of its own, imported on demand, so tierstore never needs either framework;
``common`` and ``translate`` (filters) are what they share.
"""
