"""Fixtures: a migrated store per test on SQLite and on a throwaway PostgreSQL database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lockgate.pipeline.call import UsageRecord
from lockgate.store import Store
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockgate.db'}"
    else:
        yield from fresh_database("lg_feedback")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


def usage(request_id: str, *, key_id: str | None = "key_a", team_id: str | None = "team_a",
          model: str = "fast", deployment: str = "fast#0", status: int = 200,
          error_class: str | None = None, latency_ms: float = 100.0, cost: float = 0.001,
          request_body: str | None = None, response_body: str | None = None,
          source: str = "http") -> UsageRecord:
    return UsageRecord(
        request_id=request_id, created_at=time.time(), key_id=key_id, team_id=team_id,
        model=model, deployment=deployment, kind="chat", source=source, status=status,
        error_class=error_class, prompt_tokens=10, completion_tokens=5, cost=cost,
        latency_ms=latency_ms, overhead_ms=0.5, stream=False,
        request_body=request_body, response_body=response_body,
    )
