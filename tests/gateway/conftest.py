"""Fixtures: a stand-in upstream and a real lockgate server (uvicorn) on loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from lockgate.server import create_app
from lockgate.serving_protocol import HTTP_PROTOCOL
from lockgate.settings import parse_config
from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.support.postgres import fresh_database

MASTER = "test-master-key-0123456789"
PG_ADMIN_URL = "postgresql://127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    url: str
    master: str
    config_text: str
    home: Path
    database_url: str

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.master}"},
                            timeout=10)

    def new_key(self, team: str | None = None, models: list[str] | None = None) -> str:
        team = team or "t-" + uuid.uuid4().hex[:8]
        with self.admin() as c:
            r = c.post("/admin/teams", json={"name": team})
            assert r.status_code in (201, 409), r.text
            body: dict[str, object] = {"team": team}
            if models is not None:
                body["models"] = models
            r = c.post("/admin/keys", json=body)
            assert r.status_code == 201, r.text
            return str(r.json()["key"])


class ServerThread:
    def __init__(self, config_text: str, home: Path) -> None:
        cfg = parse_config(config_text)
        self.port = free_port()
        self.app = create_app(cfg)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                           lifespan="on", loop="asyncio", timeout_graceful_shutdown=10,
                           http=HTTP_PROTOCOL)  # as `lockgate serve` runs it
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def gateway_config(upstream: str, home: Path, database_url: str, extra: str = "") -> str:
    return f"""
master_key: {MASTER}
home: {home}
database_url: {database_url}
key_cache_ttl: 30
audit: {{flush_interval_ms: 50}}
models:
  - name: fast
    provider: openai
    base_url: {upstream}/v1
    model: stub-fast
    api_key: sk-upstream
    pricing: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  - name: other
    provider: openai
    base_url: {upstream}/v1
    model: stub-other
  - name: claude
    provider: anthropic
    base_url: {upstream}
    model: claude-test
    api_key: sk-ant-test
  - name: embed
    provider: openai
    mode: embeddings
    base_url: {upstream}/v1
    model: stub-embed
  - name: always-429
    provider: openai
    base_url: {upstream}/v1
    model: error-429:3
    max_retries: 0
  - name: always-500
    provider: openai
    base_url: {upstream}/v1
    model: error-500
    max_retries: 1
  - name: stalls
    provider: openai
    base_url: {upstream}/v1
    model: stall-before:5
    max_retries: 0
    timeouts: {{first_token: 0.3, total: 2}}
  - name: cuts
    provider: openai
    base_url: {upstream}/v1
    model: cut-mid
    max_retries: 0
  - name: falls-back
    provider: openai
    base_url: {upstream}/v1
    model: error-503
    max_retries: 0
    weight: 1
  - name: falls-back
    provider: openai
    base_url: {upstream}/v1
    model: stub-backup
    weight: 0
  - name: unreachable
    provider: openai
    base_url: http://127.0.0.1:9/v1
    model: nothing
    max_retries: 0
{extra}
"""


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    with run_stub_in_thread() as stub:
        yield stub.base_url


def _pg_database() -> Iterator[str]:
    yield from fresh_database("lg_gw")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('gwdb') / 'lockgate.db'}"
    else:
        yield from _pg_database()


@pytest.fixture(scope="session")
def gateway(upstream: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("gwhome")
    text = gateway_config(upstream, home, database_url)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, database_url)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def key(gateway: Gateway) -> str:
    return gateway.new_key()


os.environ.setdefault("OPENAI_LOG", "")
