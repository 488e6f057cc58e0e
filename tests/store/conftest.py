"""Fixtures for the store tests: every test runs on SQLite and on the real PostgreSQL.

PostgreSQL isolation: this session creates its own databases named
``lg_store_<random>_<n>`` on 127.0.0.1:5432 (trust auth, user postgres) and
drops them (WITH FORCE) at the end. Most tests share one migrated database,
emptied before each test; migration tests get a brand-new database each.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lockgate.pipeline.call import UsageRecord
from lockgate.store import Store

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"
BACKENDS = ["sqlite", "postgres"]


class PgDatabases:
    """Creates uniquely named databases for this session and drops them all at the end."""

    def __init__(self) -> None:
        self.prefix = "lg_store_" + uuid.uuid4().hex[:10]
        self.created: list[str] = []
        self._admin = psycopg.connect(PG_ADMIN, autocommit=True)

    def create(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return PG_URL.format(name=name)

    def drop_all(self) -> None:
        for name in self.created:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin.close()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture(scope="session")
def pg_shared_url(pg_databases: PgDatabases) -> str:
    return pg_databases.create()


def _empty_pg(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}") as conn:
        exists = conn.execute("SELECT to_regclass('usage_records') IS NOT NULL").fetchone()
        if exists and exists[0]:
            conn.execute("TRUNCATE usage_records, api_keys, teams")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database URL for this test: a new SQLite file, or the shared PG database emptied."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'lockgate.db'}"
    url: str = request.getfixturevalue("pg_shared_url")
    _empty_pg(url)
    return url


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database that has never been migrated."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'lockgate.db'}"
    dbs: PgDatabases = request.getfixturevalue("pg_databases")
    return dbs.create()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


def _make_record(n: int | str, **overrides: Any) -> UsageRecord:
    """A realistic usage record; ``n`` makes the request id unique."""
    fields: dict[str, Any] = {
        "request_id": f"req_test_{n}",
        "created_at": time.time(),
        "key_id": None,
        "team_id": None,
        "model": "local",
        "deployment": "local/llamacpp:bundled",
        "kind": "chat",
        "source": "http",
        "status": 200,
        "error_class": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost": 0.25,
        "latency_ms": 12.0,
        "overhead_ms": 0.4,
        "stream": False,
    }
    fields.update(overrides)
    return UsageRecord(**fields)


RecordFactory = Callable[..., UsageRecord]


@pytest.fixture
def make_record() -> RecordFactory:
    return _make_record
