"""Fixtures for the audit-chain tests: every test runs on SQLite and on the real PostgreSQL.

PostgreSQL isolation: databases named ``lg_audit_<random>_<n>`` on 127.0.0.1:5432,
one fresh database per test, all dropped (WITH FORCE) at the end of the session.
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


class PgDatabases:
    def __init__(self) -> None:
        self.prefix = "lg_audit_" + uuid.uuid4().hex[:10]
        self.created: list[str] = []
        self._admin = psycopg.connect(PG_ADMIN, autocommit=True)

    def create(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

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


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'lockgate.db'}"
    dbs: PgDatabases = request.getfixturevalue("pg_databases")
    return dbs.create()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


def make_record(n: int | str, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "request_id": f"req_audit_{n}",
        "created_at": time.time(),
        "key_id": "key_1",
        "team_id": "team_1",
        "model": "local",
        "deployment": "local/stub",
        "kind": "chat",
        "source": "http",
        "status": 200,
        "error_class": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost": 0.000123,
        "latency_ms": 12.5,
        "overhead_ms": 0.4,
        "stream": False,
        "request_body": '{"messages": [{"role": "user", "content": "h\\u00e9llo"}]}',
        "response_body": "ok ✓",
    }
    fields.update(overrides)
    return UsageRecord(**fields)


RecordFactory = Callable[..., UsageRecord]


@pytest.fixture(name="make_record")
def make_record_fixture() -> RecordFactory:
    return make_record
