"""Fixtures: a RagService with the knowledge graph on, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lockgate.rag.graph import GraphOptions
from lockgate.rag.repository import RagStore
from lockgate.rag.service import RagService, RagSettings
from lockgate.store.engine import create_engine
from tests.rag.rag_support import FakePipeline
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def kg_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kg.db'}"
    else:
        yield from fresh_database("lg_kg")


@pytest.fixture
async def kg_service(kg_db_url: str) -> AsyncIterator[RagService]:
    engine = create_engine(kg_db_url)
    store = await RagStore.migrated(engine)
    svc = RagService(store, FakePipeline(), RagSettings(embed_model=None, mode="bm25",
                                                         graph=GraphOptions()))
    try:
        yield svc
    finally:
        await engine.dispose()
