"""One gateway for the fuzz tests: SQLite, the stand-in upstream, a small RAG collection,
the PII guard and the response cache on (so fuzzed bodies reach those stages too), a
declared job task and a short body-read timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config

BODY_TIMEOUT = 1.0
COLLECTION = "fuzzdocs"

EXTRA = f"""  - name: pauses
    provider: openai
    base_url: {{upstream}}/v1
    model: stall-mid:{BODY_TIMEOUT * 2}
server: {{body_timeout_seconds: {BODY_TIMEOUT}}}
cache: {{enabled: true}}
guards:
  pii: {{action: redact_restore}}
  injection: {{action: flag}}
rag:
  generation_model: fast
console:
  widget: {{allowed_origins: ["http://fuzz.example"]}}
jobs:
  default_model: fast
  tasks:
    - name: echo
      model: fast
      prompt: "{{{{input}}}}"
agents:
  grants: {{teams: {{fuzzers: ["*"]}}}}
  agents:
    fuzzbot: {{model: fast, tools: [ask_human], mode: read_only, max_steps: 2}}
"""


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    with run_stub_in_thread() as stub:
        yield stub.base_url


@pytest.fixture(scope="session")
def fuzz_gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home: Path = tmp_path_factory.mktemp("fuzzhome")
    database_url = f"sqlite:///{home / 'lockgate.db'}"
    text = gateway_config(upstream, home, database_url, EXTRA.replace("{upstream}", upstream))
    server = ServerThread(text, home)
    url = server.start()
    gw = Gateway(url, MASTER, text, home, database_url)
    with gw.admin() as c:
        r = c.post(f"/v1/rag/{COLLECTION}/documents", json={
            "acl": ["public"], "embed_model": None,
            "documents": [{"id": "a.md", "text": "Leave is 25 days a year.", "format": "text"},
                          {"id": "b.md", "text": "Expenses are paid monthly."}]})
        assert r.status_code == 200, r.text
    try:
        yield gw
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fuzz_key(fuzz_gateway: Gateway) -> str:
    return fuzz_gateway.new_key()


@pytest.fixture(scope="session")
def client(fuzz_gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_gateway.url, timeout=30) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(r: httpx.Response) -> dict[str, Any]:
    """Not a server error; an error is in OpenAI's shape and names its request."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers.get("x-request-id", "").startswith("req_"), dict(r.headers)
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) >= {"message", "type", "param", "code"}, err
        assert isinstance(err["message"], str) and err["message"]
        return dict(err)
    return {}


def is_slash_redirect(r: httpx.Response, seg: str) -> bool:
    """The framework's trailing-slash redirect: a path segment ending in ``/`` (sent as %2F,
    decoded before routing) makes the path end in a slash, and Starlette answers 307 to the
    same path without it, on this server (not our route)."""
    if r.status_code != 307 or not seg.endswith("/"):
        return False
    location = httpx.URL(r.headers["location"])
    return (location.host == r.request.url.host and location.port == r.request.url.port
            and not location.path.endswith("/"))


def assert_anthropic_error(r: httpx.Response) -> dict[str, Any]:
    """Not a server error; an error is in Anthropic's shape."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
        assert body["error"]["message"]
        return dict(body["error"])
    return {}
