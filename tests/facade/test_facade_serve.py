"""Facades served by the gateway's own lifespan (``lockgate serve``), on SQLite and
PostgreSQL: the rule's task is an audited pipeline call with source ``facade``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from tests.facade.legacy import free_port, start_legacy
from tests.gateway.conftest import ServerThread
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lg.db'}"
    else:
        yield from fresh_database("lgfac")


@pytest.fixture
def legacy_url() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    runner, url = loop.run_until_complete(start_legacy())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield url
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def _count_facade_calls(database_url: str) -> int:
    if database_url.startswith("sqlite"):
        engine = sa.create_engine(database_url)
        with engine.connect() as c:
            n = c.execute(sa.text("SELECT count(*) FROM usage_records WHERE source = 'facade'"))
            return int(n.scalar() or 0)
    with psycopg.connect(database_url) as c:
        row = c.execute("SELECT count(*) FROM usage_records WHERE source = 'facade'").fetchone()
        return int(row[0]) if row else 0


def test_serve_runs_facades_and_audits_their_calls(
        database_url: str, legacy_url: str, tmp_path: Path) -> None:
    from lockgate.testing.stub_upstream import run_stub_in_thread

    port = free_port()
    with run_stub_in_thread() as stub:
        text = f"""
master_key: test-master-key-0123456789
home: {tmp_path / 'home'}
database_url: {database_url}
audit: {{flush_interval_ms: 50}}
models:
  - {{name: local, provider: openai, base_url: {stub.openai_base}, model: stub-1}}
jobs:
  tasks:
    - {{name: gist, prompt: "echo:{{{{input}}}}", json_mode: false}}
facades:
  - name: crm
    port: {port}
    upstream: {legacy_url}
    rules:
      - name: sum
        match: {{methods: [GET], path: "/tickets/*"}}
        task: gist
        input: description
        select: text
        to: {{response_header: X-Summary}}
        budget_ms: 5000
"""
        server = ServerThread(text, tmp_path)
        server.start()
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/tickets/1", timeout=10)
            assert r.status_code == 200
            assert r.headers["X-Summary"].startswith("The printer on floor 3")
            assert r.json()["id"] == "1"
            r = httpx.get(f"http://127.0.0.1:{port}/status/418", timeout=10)
            assert r.status_code == 418  # pass-through
            deadline = time.monotonic() + 10
            while _count_facade_calls(database_url) < 1:
                assert time.monotonic() < deadline, "no audited facade call"
                time.sleep(0.1)
        finally:
            server.stop()
    with pytest.raises(httpx.ConnectError):  # the listener went with the server
        httpx.get(f"http://127.0.0.1:{port}/tickets/1", timeout=2)
