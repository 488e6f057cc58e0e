"""Fixtures: a RagService on a fresh SQLite file (and, marked postgres, on a fresh database).

The database is migrated first (the RAG tables are the store's, under Alembic).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.rag.repository import RagStore
from lockgate.rag.service import RagService, RagSettings
from lockgate.store.engine import create_engine
from tests.rag.rag_support import FakePipeline

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def fake_pipeline() -> FakePipeline:
    return FakePipeline()


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def service(
    request: pytest.FixtureRequest, tmp_path: Path, fake_pipeline: FakePipeline
) -> AsyncIterator[RagService]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'rag.db'}")
        name = None
    else:
        name = "lgrag_" + uuid.uuid4().hex[:12]
        await _admin(f'CREATE DATABASE "{name}"')
        engine = create_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
    store = await RagStore.migrated(engine)
    svc = RagService(store, fake_pipeline, RagSettings(embed_model="embed"))
    try:
        yield svc
    finally:
        await engine.dispose()
        if name:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A brand-new, never migrated database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = "lgrag_" + uuid.uuid4().hex[:12]
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
