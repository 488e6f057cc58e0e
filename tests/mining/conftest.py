"""Fixtures: a migrated store on SQLite and on a throwaway PostgreSQL database; a gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lockgate.store import Store
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config
from tests.support.postgres import fresh_database

__all__ = ["MASTER"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockgate.db'}"
    else:
        yield from fresh_database("lg_mining")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
def mining_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    from lockgate.testing.stub_upstream import run_stub_in_thread

    home = tmp_path_factory.mktemp("mining-home")
    db = f"sqlite:///{home / 'lockgate.db'}"
    with run_stub_in_thread() as stub:
        extra = """
mining:
  summary_model: fast
  references:
    abc: [["A", "B", "C"]]
"""
        text = gateway_config(stub.base_url, home, db, extra)
        server = ServerThread(text, home)
        url = server.start()
        try:
            yield Gateway(url, MASTER, text, home, db)
        finally:
            server.stop()
