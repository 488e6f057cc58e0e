"""Fixtures: a RagService on a fresh SQLite file (and, marked postgres, on a fresh database).

The database is migrated first (the RAG tables are the store's, under Alembic).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = "lgrag_" + uuid.uuid4().hex[:12]
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A new, never migrated PostgreSQL database (mark the test postgres)."""
    async with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def service(
    request: pytest.FixtureRequest, tmp_path: Path, fake_pipeline: FakePipeline
) -> AsyncIterator[RagService]:
    if request.param == "sqlite":
        async with rag_service_at(f"sqlite:///{tmp_path / 'rag.db'}", fake_pipeline) as svc:
            yield svc
        return
    async with pg_database() as url, rag_service_at(url, fake_pipeline) as svc:
        yield svc


@asynccontextmanager
async def rag_service_at(url: str, pipeline: FakePipeline | None = None
                         ) -> AsyncIterator[RagService]:
    """A RagService on the database at ``url`` (migrated first; engine disposed after)."""
    engine = create_engine(url)
    try:
        store = await RagStore.migrated(engine)
        yield RagService(store, pipeline or FakePipeline(), RagSettings(embed_model="embed"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A brand-new, never migrated database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    async with pg_database() as url:
        yield url
