"""The lean model routes (lockgate.api.lean): they skip FastAPI's middleware stack, and
what a client sees is what FastAPI would have given (ids, overhead header, error shapes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import lockgate.api.middleware as middleware
from lockgate.api.lean import LEAN_ROUTES, LeanGateway
from lockgate.server import create_app
from lockgate.settings import parse_config
from lockgate.store import DatabaseUnavailable
from tests.gateway.conftest import MASTER, gateway_config

AUTH = {"Authorization": f"Bearer {MASTER}"}
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def app(upstream: str, tmp_path: Path) -> LeanGateway:
    cfg = parse_config(gateway_config(upstream, tmp_path, f"sqlite:///{tmp_path / 'lean.db'}"))
    return create_app(cfg)


@pytest.fixture
def client(app: LeanGateway) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def middleware_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths that went through RequestIdMiddleware (FastAPI's stack)."""
    seen: list[str] = []
    original = middleware.RequestIdMiddleware.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
        await original(self, scope, receive, send)

    monkeypatch.setattr(middleware.RequestIdMiddleware, "__call__", spy)
    return seen


def test_model_routes_skip_the_middleware_stack(client: TestClient,
                                                middleware_calls: list[str]) -> None:
    r = client.post("/v1/chat/completions", headers=AUTH, json=CHAT)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("stub reply:")
    assert r.headers["x-request-id"].startswith("req_")
    assert float(r.headers["x-lockgate-overhead-ms"]) >= 0
    assert r.headers["x-lockgate-deployment"]
    r = client.post("/v1/messages", headers=AUTH, json=MESSAGES)
    assert r.status_code == 200 and r.json()["type"] == "message"
    r = client.post("/v1/embeddings", headers=AUTH, json={"model": "embed", "input": "x"})
    assert r.status_code == 200 and r.json()["data"]
    assert middleware_calls == []
    # everything else is FastAPI's, middleware included
    r = client.get("/v1/models", headers=AUTH)
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")
    assert middleware_calls == ["GET /v1/models"]
    assert set(LEAN_ROUTES) == {"/v1/chat/completions", "/v1/embeddings", "/v1/messages"}


def test_other_methods_and_a_trailing_slash_stay_on_fastapi(
        client: TestClient, middleware_calls: list[str]) -> None:
    r = client.get("/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.put("/v1/messages", headers=AUTH, json={})
    assert r.status_code == 405 and r.json()["type"] == "error"
    r = client.post("/v1/chat/completions/", headers=AUTH, json=CHAT, follow_redirects=False)
    assert r.status_code in (307, 404)
    assert len(middleware_calls) == 3


def test_errors_keep_their_shape_and_request_id(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", headers=AUTH, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert r.headers["x-request-id"].startswith("req_")
    r = client.post("/v1/messages", headers={"x-api-key": "wrong"}, json=MESSAGES)
    assert r.status_code == 401
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    assert r.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("exc", [RuntimeError("boom"), DatabaseUnavailable("db down")])
def test_an_unexpected_failure_is_rendered_like_fastapi_would(
        client: TestClient, app: LeanGateway, monkeypatch: pytest.MonkeyPatch,
        exc: Exception) -> None:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(app.state.runtime.pipeline, "chat", fail)
    status, code = (503, "database_unavailable") if isinstance(exc, DatabaseUnavailable) \
        else (500, "internal_error")
    r = client.post("/v1/chat/completions", headers=AUTH, json=CHAT)
    assert r.status_code == status and r.json()["error"]["code"] == code
    assert r.headers["x-request-id"].startswith("req_")
    assert "x-lockgate-overhead-ms" in r.headers
    r = client.post("/v1/messages", headers=AUTH, json=MESSAGES)
    assert r.status_code == status and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "api_error"
    assert r.headers["x-request-id"].startswith("req_")
