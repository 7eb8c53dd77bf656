"""LangChain's own standard VectorStore suite (langchain_tests), sync and async, against a real
store on Redis + S3, once per placement: every write to hot, to warm, to cold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from adapters_support import empty
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from tierstore.integrations.langchain import TierStoreVectorStore


class TestTierStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, placed_store) -> Iterator[TierStoreVectorStore]:
        """An empty adapter writing every record to one tier; emptied again afterwards."""
        tier, store = placed_store
        assert len(store) == 0
        vs = TierStoreVectorStore(store, self.get_embeddings(), tier=tier)
        try:
            yield vs
            assert {r.tier for b in store.scan() for r in b} <= {tier}  # the placement held
        finally:
            empty(store)
