"""The official openai SDK, sync and async, against a real lockgate server."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.conftest import Gateway


def client(gw: Gateway, key: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, **kw)  # type: ignore[arg-type]


def test_chat_non_stream(gateway: Gateway, key: str) -> None:
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert "hello there" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-lockgate-overhead-ms"]) >= 0
    assert raw.headers["x-lockgate-deployment"] == "fast/openai:stub-fast"


def test_chat_stream_with_usage(gateway: Gateway, key: str) -> None:
    stream = client(gateway, key).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert "stream me" in text
    assert usage is not None and usage.completion_tokens > 0


def test_stream_without_include_usage_sends_no_usage_chunk(gateway: Gateway, key: str) -> None:
    chunks = list(client(gateway, key).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "x"}], stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_async_client_stream_and_non_stream(gateway: Gateway, key: str) -> None:
    ac = openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    done = await ac.chat.completions.create(model="fast",
                                            messages=[{"role": "user", "content": "async"}])
    assert "async" in (done.choices[0].message.content or "")
    parts = []
    async for chunk in await ac.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "async stream"}], stream=True
    ):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
    assert "async stream" in "".join(parts)
    await ac.close()


def test_tools_and_response_format_pass_through(gateway: Gateway, key: str) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    out = client(gateway, key).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "weather in Paris"}],
        tools=tools, tool_choice="required",  # type: ignore[arg-type]
    )
    calls = out.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    js = client(gateway, key).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    import json

    assert isinstance(json.loads(js.choices[0].message.content or ""), dict)


def test_embeddings(gateway: Gateway, key: str) -> None:
    res = client(gateway, key).embeddings.create(model="embed", input=["a", "b c"])
    assert len(res.data) == 2 and len(res.data[0].embedding) > 0


def test_models_lists_only_allowed(gateway: Gateway) -> None:
    limited = gateway.new_key(models=["fast"])
    ids = [m.id for m in client(gateway, limited).models.list()]
    assert ids == ["fast"]
    everything = [m.id for m in client(gateway, gateway.new_key()).models.list()]
    assert {"fast", "claude", "embed"} <= set(everything)


def test_model_not_allowed_for_key(gateway: Gateway) -> None:
    limited = gateway.new_key(models=["fast"])
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client(gateway, limited).chat.completions.create(
            model="other", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "model_not_allowed"


def test_unknown_model(gateway: Gateway, key: str) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client(gateway, key).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "model_not_found"


def test_bad_and_missing_key(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "lg-wrong").chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "x"}])
    r = httpx.post(gateway.v1 + "/chat/completions", json={"model": "fast", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_revoked_key_is_refused_immediately(gateway: Gateway) -> None:
    k = gateway.new_key()
    c = client(gateway, k)
    c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    with gateway.admin() as admin:
        key_id = next(row["id"] for row in admin.get("/admin/keys").json()["data"]
                      if k.startswith(row["key_prefix"]))
        assert admin.post(f"/admin/keys/{key_id}/revoke").status_code == 200
    with pytest.raises(openai.AuthenticationError) as exc:
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "revoked_api_key"
