"""A real gateway (uvicorn, SQLite) in front of the stand-in upstream, for third-party clients."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config

# the clients must never reach a real provider or a telemetry endpoint
os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
os.environ.setdefault("LANGSMITH_TRACING", "false")
os.environ.pop("OPENAI_BASE_URL", None)
os.environ.pop("ANTHROPIC_BASE_URL", None)


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    with run_stub_in_thread() as stub:
        yield stub.base_url


@pytest.fixture(scope="session")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("clients")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = gateway_config(upstream, home, db)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, db)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def key(gateway: Gateway) -> str:
    return gateway.new_key()
