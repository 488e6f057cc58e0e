"""Bad input: a precise 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import Gateway


def post(gw: Gateway, key: str, content: bytes | str, path: str = "/v1/chat/completions",
         **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, content=content,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json", **headers}, timeout=10)


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code, err
    assert r.headers["x-request-id"].startswith("req_")
    return dict(err)


def test_malformed_json(gateway: Gateway, key: str) -> None:
    assert_error(post(gateway, key, b'{"model": "fast", '), 400, "invalid_json")


def test_body_not_an_object(gateway: Gateway, key: str) -> None:
    assert_error(post(gateway, key, b"[1, 2]"), 400, "invalid_json")


def test_empty_body(gateway: Gateway, key: str) -> None:
    assert_error(post(gateway, key, b""), 400, "invalid_json")


def test_missing_model(gateway: Gateway, key: str) -> None:
    err = assert_error(post(gateway, key, '{"messages": [{"role":"user","content":"x"}]}'), 400)
    assert err["param"] == "model"


@pytest.mark.parametrize("messages", ['[]', '"hi"', '[{"content": "x"}]', '[{"role": "boss"}]'])
def test_bad_messages(gateway: Gateway, key: str, messages: str) -> None:
    err = assert_error(post(gateway, key, f'{{"model": "fast", "messages": {messages}}}'), 400)
    assert str(err["param"]).startswith("messages")


def test_bad_max_tokens(gateway: Gateway, key: str) -> None:
    body = '{"model": "fast", "messages": [{"role":"user","content":"x"}], "max_tokens": -5}'
    assert_error(post(gateway, key, body), 400, "invalid_value")


def test_oversized_body(gateway: Gateway, key: str) -> None:
    text = "x" * (5 * 1024 * 1024)
    big = '{"model": "fast", "messages": [{"role":"user","content":"' + text + '"}]}'
    assert_error(post(gateway, key, big), 413, "request_too_large")


def test_embeddings_missing_input(gateway: Gateway, key: str) -> None:
    assert_error(post(gateway, key, '{"model": "embed"}', "/v1/embeddings"), 400)


def test_chat_model_used_for_embeddings(gateway: Gateway, key: str) -> None:
    assert_error(post(gateway, key, '{"model": "fast", "input": "x"}', "/v1/embeddings"), 400,
                 "model_mode_mismatch")


def test_unknown_route_is_openai_shaped_404(gateway: Gateway, key: str) -> None:
    r = httpx.get(gateway.url + "/v1/nothing-here")
    assert_error(r, 404)


def test_admin_needs_master_key(gateway: Gateway, key: str) -> None:
    r = httpx.get(gateway.url + "/admin/keys", headers={"Authorization": f"Bearer {key}"})
    assert_error(r, 403, "admin_only")


def test_admin_bad_body(gateway: Gateway) -> None:
    with gateway.admin() as c:
        assert_error(c.post("/admin/keys", json={"team": ""}), 400)
        assert_error(c.post("/admin/keys", json={"team": "no-such-team-xyz"}), 404)
        assert_error(c.post("/admin/keys", json={"team": "x", "models": ["nope"]}), 400)
        assert_error(c.get("/admin/usage", params={"since": "yesterday-ish"}), 400)
        c.post("/admin/teams", json={"name": "dup-team"})
        assert_error(c.post("/admin/teams", json={"name": "dup-team"}), 409, "already_exists")
