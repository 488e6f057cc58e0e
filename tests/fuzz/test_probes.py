"""Deterministic probes for the inputs that once gave a 500 (issue 11): too-deep JSON on every
JSON route, numbers out of range, unhashable values in membership tests, odd ids and query
values, and the Anthropic request shapes the translation used to trust."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from lockgate.formats.json_limits import MAX_JSON_DEPTH
from tests.fuzz.conftest import COLLECTION, assert_anthropic_error, assert_openai_error, auth
from tests.gateway.conftest import Gateway

USER = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> Any:
    """A value whose containers nest ``depth`` levels (``[]`` is 1)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def post(client: httpx.Client, path: str, key: str, body: Any) -> httpx.Response:
    return client.post(path, content=json.dumps(body).encode(),
                       headers={**auth(key), "content-type": "application/json"})


# every JSON route, with a body whose deep part sits where that route keeps client JSON
JSON_ROUTES: list[tuple[str, Any]] = [
    ("/v1/chat/completions", lambda v: {"model": "fast", "messages": USER, "metadata": v}),
    ("/v1/chat/completions", lambda v: {"model": "fast", "messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"x": v}}}]}),
    ("/v1/embeddings", lambda v: {"model": "embed", "input": "x", "extra": v}),
    ("/v1/messages", lambda v: {"model": "claude", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {"x": v}}]}]}),
    ("/v1/jobs", lambda v: {"task": "echo", "input": v}),
    ("/v1/batches", lambda v: {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                               "metadata": v}),
    (f"/v1/rag/{COLLECTION}/query", lambda v: {"question": "leave?", "filters": v}),
    ("/v1/rag/deepdocs/documents", lambda v: {"acl": ["public"], "documents": [
        {"id": "d", "text": "t", "metadata": {"x": v}}]}),
    ("/admin/teams", lambda v: {"name": "t", "business_unit": v}),
    ("/admin/controls/kill", lambda v: {"model": v}),
]


def _send(client: httpx.Client, gw: Gateway, path: str, body: Any,
          depth: int | None = None) -> httpx.Response:
    raw = json.dumps(body)
    if depth is not None:  # written as text: too deep for the json module to encode
        raw = raw.replace('"__DEEP__"', "[" * depth + "]" * depth)
    r = client.post(path, content=raw.encode(),
                    headers={**auth(gw.master), "content-type": "application/json"})
    (assert_anthropic_error if path == "/v1/messages" else assert_openai_error)(r)
    return r


def _code(r: httpx.Response) -> str | None:
    data = r.json()
    err = data.get("error") or {}
    if r.request.url.path == "/v1/messages":
        message = str(err.get("message"))
        return ("json_too_deep" if "levels deep" in message
                else "invalid_json" if "not valid JSON" in message else None)
    return err.get("code") if isinstance(err, dict) else None


@pytest.mark.parametrize(("path", "make"), JSON_ROUTES)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 2000])
def test_too_deep_json_is_refused_at_the_door(client: httpx.Client, fuzz_gateway: Gateway,
                                             path: str, make: Any, depth: int) -> None:
    r = _send(client, fuzz_gateway, path, make("__DEEP__"), depth)
    assert r.status_code == 400, r.text
    # 2000 levels is past orjson's own parse limit: still a 400, as invalid JSON
    assert _code(r) in (("json_too_deep",) if depth < 1000 else ("json_too_deep", "invalid_json"))


@pytest.mark.parametrize(("path", "make"), JSON_ROUTES)
def test_deep_but_allowed_json_is_not_refused_for_depth(client: httpx.Client,
                                                        fuzz_gateway: Gateway, path: str,
                                                        make: Any) -> None:
    body = make(nested(10))
    r = _send(client, fuzz_gateway, path, body)
    assert _code(r) != "json_too_deep", r.text


def test_batch_file_lines_are_depth_checked(client: httpx.Client, fuzz_key: str) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "fast", "messages": USER, "metadata": nested(200)}}
    files = {"file": ("in.jsonl", json.dumps(line).encode() + b"\n", "application/jsonl")}
    r = client.post("/v1/files", headers=auth(fuzz_key), data={"purpose": "batch"}, files=files)
    assert_openai_error(r)
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep", r.text


# ------------------------------------------------------------------ numbers and types


@pytest.mark.parametrize("value", [True, False, 0, -1, 2**31, 2**63, 1.5, "5", None])
def test_max_tokens_must_be_a_real_positive_integer(client: httpx.Client, fuzz_key: str,
                                                    value: Any) -> None:
    r = post(client, "/v1/chat/completions", fuzz_key,
             {"model": "fast", "messages": USER, "max_tokens": value})
    assert_openai_error(r)
    assert r.status_code == (200 if value is None else 400), r.text
    r = post(client, "/v1/messages", fuzz_key,
             {"model": "claude", "messages": USER, "max_tokens": value})
    err = assert_anthropic_error(r)
    assert r.status_code == 400 and "max_tokens" in err["message"], r.text


@pytest.mark.parametrize(("priority", "status"), [
    (2**63, 400), (-(2**63) - 1, 400), (2**31, 400), (-(2**31) - 1, 400), (True, 400),
    ("1", 400), (1.0, 400), (2**31 - 1, 202), (-(2**31), 202), (7, 202)])
def test_job_priority_is_bounded(client: httpx.Client, fuzz_key: str, priority: Any,
                                 status: int) -> None:
    r = post(client, "/v1/jobs", fuzz_key, {"task": "echo", "input": "x", "priority": priority})
    assert_openai_error(r)
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["param"] == "priority"


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"model": "fast", "messages": [{"role": ["user"]}]}, "messages"),
    ("/v1/chat/completions", {"model": "fast", "messages": [{"role": {"a": 1}}]}, "messages"),
    (f"/v1/rag/{COLLECTION}/query", {"question": "q", "mode": ["hybrid"]}, "mode"),
    ("/v1/rag/formats/documents", {"acl": ["public"], "documents": [
        {"id": "d", "text": "t", "format": ["html"]}]}, "documents"),
])
def test_unhashable_values_in_membership_tests(client: httpx.Client, fuzz_gateway: Gateway,
                                               path: str, body: Any, param: str) -> None:
    r = post(client, path, fuzz_gateway.master, body)
    err = assert_openai_error(r)
    assert r.status_code == 400 and str(err["param"]).startswith(param), r.text


# ------------------------------------------------------------------ query values and ids


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches"])
@pytest.mark.parametrize(("limit", "ok"), [
    ("²", False), ("¹⁰", False), ("٣", False), ("0", False), ("-1", False), ("10001", False),
    ("9" * 5000, False), ("", False), ("1", True), ("10000", True)])
def test_list_limit(client: httpx.Client, fuzz_key: str, path: str, limit: str,
                    ok: bool) -> None:
    r = client.get(path, params={"limit": limit}, headers=auth(fuzz_key))
    assert_openai_error(r)
    assert r.status_code == (200 if ok else 400), r.text


@pytest.mark.parametrize(("since", "status"), [
    ("9999-12-31T23:59:59", 200), ("9999-12-31T23:59:59+00:00", 200),
    ("9999-12-31T23:59:59-23:59", 400), ("0001-01-01T00:00:00+23:59", 400),
    ("2024-01-01T00:00:00+05:45", 200), ("999999999999d", 400), ("9" * 5000 + "d", 400),
    ("²d", 400), ("24h", 200), ("7d", 200), ("", 200), ("soon", 400)])
def test_usage_since(client: httpx.Client, fuzz_gateway: Gateway, since: str,
                     status: int) -> None:
    for group_by in (None, "business_unit"):
        params = {"since": since, **({"group_by": group_by} if group_by else {})}
        r = client.get("/admin/usage", params=params, headers=auth(fuzz_gateway.master))
        assert_openai_error(r)
        assert r.status_code == status, r.text
        if since.startswith("9999") and status == 200:
            assert r.json()["data"] == []  # nothing happened after the far future


LONG = "a" * 5000


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"/v1/files/file-{LONG}"), ("GET", f"/v1/files/file-{LONG}/content"),
    ("DELETE", f"/v1/files/file-{LONG}"), ("GET", f"/v1/batches/batch_{LONG}"),
    ("POST", f"/v1/batches/batch_{LONG}/cancel"), ("GET", f"/v1/jobs/job_{LONG}"),
    ("DELETE", f"/v1/jobs/job_{LONG}"), ("GET", "/v1/files/file-%00x"),
    ("GET", "/v1/batches/batch_%E2%80%A8"), ("GET", "/v1/files/file-.."),
])
def test_odd_ids_are_not_found(client: httpx.Client, fuzz_key: str, method: str,
                               path: str) -> None:
    r = client.request(method, path, headers=auth(fuzz_key))
    assert_openai_error(r)
    assert r.status_code == 404, r.text


def test_batch_with_long_input_file_id(client: httpx.Client, fuzz_key: str) -> None:
    r = post(client, "/v1/batches", fuzz_key, {"input_file_id": "file-" + LONG,
                                               "endpoint": "/v1/chat/completions"})
    assert_openai_error(r)
    assert r.status_code == 404, r.text


# ------------------------------------------------------------------ Anthropic shapes

ANTHROPIC_BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": "hello"}, "messages"),
    ({"messages": ["hello", "there"]}, "messages.0"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": ["not a block"]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
     "messages.0.content.0.type"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": "http://x"}]}]}, "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "data": 5}}]}]},
     "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": {"a": 1}}]}]},
     "messages.0.content.0.content"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [5]}]}]},
     "messages.0.content.0.content.0"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]},
     "messages.0.content.0.input"),
    ({"system": 5}, "system"),
    ({"system": [{"type": "text"}]}, "system.0.text"),
    ({"tools": ["search"]}, "tools.0"),
    ({"tools": [{"name": "f", "input_schema": "x"}]}, "tools.0.input_schema"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice"),
    ({"metadata": "user-1"}, "metadata"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stop_sequences": [1, 2]}, "stop_sequences.0"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"model": ["claude"]}, "model"),
]


@pytest.mark.parametrize(("patch", "param"), ANTHROPIC_BAD)
def test_badly_shaped_anthropic_requests(client: httpx.Client, fuzz_key: str,
                                         patch: dict[str, Any], param: str) -> None:
    body = {"model": "claude", "max_tokens": 16, "messages": USER, **patch}
    r = post(client, "/v1/messages", fuzz_key, body)
    err = assert_anthropic_error(r)
    assert r.status_code == 400, r.text
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith(param), (param, err["message"])


def test_good_anthropic_request_with_every_block_kind(client: httpx.Client,
                                                      fuzz_key: str) -> None:
    body = {
        "model": "claude", "max_tokens": 16, "system": [{"type": "text", "text": "Be brief."}],
        "metadata": {"user_id": "u1"}, "stop_sequences": ["END"], "temperature": 0.5,
        "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1",
                 "content": [{"type": "text", "text": "42"}]}]},
        ],
    }
    r = post(client, "/v1/messages", fuzz_key, body)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"


def test_anthropic_route_errors_outside_the_handler_keep_anthropic_shape(
        client: httpx.Client, fuzz_key: str) -> None:
    r = client.get("/v1/messages", headers=auth(fuzz_key))  # 405 from the router
    assert r.status_code == 405
    assert_anthropic_error(r)
