"""Fixtures: a real gateway (uvicorn thread) with the console on, the stand-in upstream, a
host page for the widget on another origin, and headless Chromium driven by Playwright.

Chromium is Debian's package (``make services`` installs it), launched through
``executable_path``; ``playwright install`` is never run.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import MASTER, ServerThread, free_port

CHROMIUM = os.environ.get("LOCKGATE_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
IMAGES = Path(os.environ.get("LOCKGATE_SCREENSHOTS") or ROOT / "build" / "screenshots")
"""Where the browser tests save their screenshots: build/screenshots/ (not committed), or
docs/images/ with ``make screenshots`` (the README's pictures)."""


BRAIN = "console-brain"
"""The stand-in upstream's model id behind ``brain`` (the agents' model): replies scripted."""


def console_config(upstream: str, home: Path, database_url: str, host_origin: str,
                   extra: str = "") -> str:
    return f"""
master_key: {MASTER}
home: {home}
database_url: {database_url}
{extra}
key_cache_ttl: 30
log_bodies: true
guards:
  pii: {{action: redact_restore}}
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
    model: slow:30
    pricing: {{input_per_mtok: 3.0, output_per_mtok: 6.0}}
  - name: broken
    provider: openai
    base_url: {upstream}/v1
    model: error-500
    max_retries: 0
  - name: embed
    provider: openai
    mode: embeddings
    base_url: {upstream}/v1
    model: stub-embed
  - {{name: offline, provider: rules, rules: {{fixed: "The assistant is offline (fallback)."}}}}
  - name: brain
    provider: openai
    base_url: {upstream}/v1
    model: {BRAIN}
    max_retries: 0
    pricing: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}
model_policies:
  fast: {{fallback_model: offline}}
  other: {{budget: {{daily: 50.0}}, limits: {{rpd: 100000}}}}
teams:
  budgeted: {{budget: {{daily_tokens: 100000}}}}
  keyed:
    key_budget: {{daily_tokens: 50000}}
    key_limits: {{rpm: 600, rpd: 10}}   # a day's 10 refill one per 2.4 h: counts stay exact
    limits: {{rpd: 20}}
agents:
  grants: {{teams: {{agents-a: ["*"], agents-b: ["*"]}}}}
  agents:
    lead:
      model: brain
      tools: [delegate]
      delegates: [pumps]
      mode: read_only
      max_steps: 6
      max_cost: 5.0
      description: Delegates pump questions.
    pumps:
      model: brain
      tools: [read_*, set_point]
      mode: approve_writes
      reviewers: [agents-a]
      max_steps: 6
rag:
  embed_model: embed
  generation_model: fast
jobs:
  max_attempts: 1
console:
  rollup_interval: 0.5
  widget:
    allowed_origins: ["{host_origin}"]
    max_ttl_seconds: 600
"""


@dataclass
class ConsoleGateway:
    url: str
    master: str
    home: Path
    database_url: str
    host_origin: str
    host_port: int
    runtime: Any

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.master}"},
                            timeout=20)

    def new_team_key(self, team: str | None = None, models: list[str] | None = None
                     ) -> tuple[str, str]:
        team = team or "t-" + uuid.uuid4().hex[:8]
        with self.admin() as c:
            r = c.post("/admin/teams", json={"name": team})
            assert r.status_code in (201, 409), r.text
            body: dict[str, Any] = {"team": team}
            if models is not None:
                body["models"] = models
            r = c.post("/admin/keys", json=body)
            assert r.status_code == 201, r.text
            return team, str(r.json()["key"])


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    from lockgate.testing.stub_upstream import run_stub_in_thread

    with run_stub_in_thread() as stub:
        yield stub.base_url


def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'lockgate.db'}"
    else:
        from tests.support.postgres import fresh_database

        yield from fresh_database("lg_console")


@pytest.fixture(scope="session")
def host_port() -> int:
    return free_port()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def console_gateway(request: pytest.FixtureRequest, upstream: str, host_port: int,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleGateway]:
    tmp = tmp_path_factory.mktemp("console")
    for db in _database(request.param, tmp):
        origin = f"http://127.0.0.1:{host_port}"
        server = ServerThread(console_config(upstream, tmp, db, origin), tmp)
        url = server.start()
        try:
            yield ConsoleGateway(url, MASTER, tmp, db, origin, host_port,
                                 server.app.state.runtime)
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module, not per session: Playwright's sync API runs an event loop on this thread
    while it is open, and asyncio tests elsewhere in the suite need the thread free again."""
    pw_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make services installs Debian's chromium)")
    with pw_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        ctx.close()


def serve_host_page(port: int, gateway_url: str, team_key: str, **token_body: Any
                    ) -> ThreadingHTTPServer:
    """examples/widget/host.py on ``port``: the host application's page and its backend."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("widget_host", ROOT / "examples/widget/host.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    server: ThreadingHTTPServer = mod.make_server("127.0.0.1", port, gateway_url, team_key,
                                                  token_body)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/console/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/console")


def shot(page: Any, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"console-{name}.png"), full_page=True)
