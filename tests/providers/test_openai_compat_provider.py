"""OpenAICompatProvider against the real stub upstream on loopback: answers, streams, failures."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lockgate.errors import ConfigError
from lockgate.providers.base import ProviderError, StreamChunk
from lockgate.providers.openai_compat import OpenAICompatProvider
from lockgate.providers.registry import build_provider
from lockgate.providers.upstream_http import parse_retry_after
from lockgate.settings import ModelDeployment, Timeouts
from lockgate.testing.stub_upstream import StubUpstream

BODY: dict[str, Any] = {
    "model": "public-name",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello big world"},
    ],
}


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


def deployment(stub: StubUpstream, model: str = "gpt-stub", **kw: Any) -> ModelDeployment:
    return ModelDeployment(
        name="m", provider="openai", model=model, base_url=stub.openai_base, **kw
    )


async def collect(it: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [c async for c in it]


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


async def test_chat_non_stream(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub, api_key="sk-test"))
    try:
        out = await p.chat({**BODY, "stream_options": {"include_usage": True}})
    finally:
        await p.aclose()
    assert out.body["choices"][0]["message"]["content"] == "stub reply: hello big world"
    assert out.body["model"] == "gpt-stub"
    assert out.usage.prompt_tokens == 5 and out.usage.completion_tokens == 5
    assert out.raw is not None and b"stub reply" in out.raw
    seen = stub.requests[-1]
    assert seen["body"]["model"] == "gpt-stub"
    assert "stream_options" not in seen["body"]
    assert seen["headers"]["authorization"] == "Bearer sk-test"


async def test_no_auth_header_without_key(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub))
    await p.chat(BODY)
    await p.aclose()
    assert "authorization" not in stub.requests[-1]["headers"]


async def test_env_api_key_resolved(stub: StubUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_TEST_UPSTREAM_KEY", "sk-env")
    p = OpenAICompatProvider(deployment(stub, api_key="env:LOCKGATE_TEST_UPSTREAM_KEY"))
    await p.chat(BODY)
    await p.aclose()
    assert stub.requests[-1]["headers"]["authorization"] == "Bearer sk-env"


async def test_chat_stream_with_usage(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub))
    chunks = await collect(p.chat_stream(BODY))
    await p.aclose()
    assert text_of(chunks) == "stub reply: hello big world"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    sent = stub.requests[-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_connection_is_reused(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub))
    for _ in range(3):
        await p.chat(BODY)
        await collect(p.chat_stream(BODY))
    pool = p.http.pool
    assert pool is not None
    assert pool.opened == 1  # one keep-alive connection carried all six
    await p.aclose()
    assert stub.total == 6


async def test_tool_call_and_json_mode(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    out = await p.chat({**BODY, "tools": tools, "tool_choice": "required"})
    msg = out.body["choices"][0]
    assert msg["finish_reason"] == "tool_calls"
    assert msg["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    chunks = await collect(p.chat_stream({**BODY, "tools": tools, "tool_choice": "required"}))
    args = "".join(
        tc["function"].get("arguments", "")
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert args == '{"q":"hello big world"}'
    js = await p.chat({**BODY, "response_format": {"type": "json_object"}})
    assert js.body["choices"][0]["message"]["content"].startswith('{"reply":')
    await p.aclose()


@pytest.mark.parametrize(
    ("model", "kind", "status"),
    [
        ("error-400", "bad_request", 400),
        ("error-401", "auth", 401),
        ("error-402", "payment", 402),
        ("error-404", "not_found", 404),
        ("error-500", "server_error", 500),
        ("error-502", "server_error", 502),
        ("error-503", "server_error", 503),
    ],
)
async def test_http_errors(stub: StubUpstream, model: str, kind: str, status: int) -> None:
    p = OpenAICompatProvider(deployment(stub, model=model))
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == kind and err.value.upstream_status == status
    assert "stub upstream error" in err.value.message
    with pytest.raises(ProviderError) as err2:
        await anext(p.chat_stream(BODY))
    assert err2.value.kind == kind
    await p.aclose()


async def test_429_retry_after(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub, model="error-429:2.5"))
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "rate_limited" and err.value.retry_after == 2.5
    stub.script(["error-429"])
    p2 = OpenAICompatProvider(deployment(stub))
    with pytest.raises(ProviderError) as err2:
        await collect(p2.chat_stream(BODY))
    assert err2.value.retry_after == 1.0
    await p.aclose()
    await p2.aclose()


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    far = parse_retry_after({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert far is not None and far > 1e6
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


async def test_timeout_first_token(stub: StubUpstream) -> None:
    t = Timeouts(first_token=0.2, idle=5, total=30)
    p = OpenAICompatProvider(deployment(stub, model="stall-before:3", timeouts=t))
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "timeout_first_token" and err.value.is_timeout
    with pytest.raises(ProviderError) as err2:
        await anext(p.chat_stream(BODY))
    assert err2.value.kind == "timeout_first_token"
    await p.aclose()


async def test_timeout_idle_mid_stream(stub: StubUpstream) -> None:
    t = Timeouts(first_token=5, idle=0.2, total=30)
    p = OpenAICompatProvider(deployment(stub, model="stall-mid:3", timeouts=t))
    got: list[StreamChunk] = []
    with pytest.raises(ProviderError) as err:
        async for c in p.chat_stream(BODY):
            got.append(c)
    assert err.value.kind == "timeout_idle"
    assert text_of(got) and len(got) == 3
    await p.aclose()


async def test_stall_mid_within_idle_completes(stub: StubUpstream) -> None:
    t = Timeouts(first_token=5, idle=5, total=30)
    p = OpenAICompatProvider(deployment(stub, model="stall-mid:0.1", timeouts=t))
    chunks = await collect(p.chat_stream(BODY))
    assert text_of(chunks) == "stub reply: hello big world"
    await p.aclose()


async def test_timeout_total(stub: StubUpstream) -> None:
    t = Timeouts(first_token=5, idle=5, total=0.3)
    p = OpenAICompatProvider(deployment(stub, model="stall-before:3", timeouts=t))
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "timeout_total"
    p2 = OpenAICompatProvider(deployment(stub, model="stall-mid:3", timeouts=t))
    with pytest.raises(ProviderError) as err2:
        await collect(p2.chat_stream(BODY))
    assert err2.value.kind == "timeout_total"
    await p.aclose()
    await p2.aclose()


async def test_cut_mid(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub, model="cut-mid"))
    got: list[StreamChunk] = []
    with pytest.raises(ProviderError) as err:
        async for c in p.chat_stream(BODY):
            got.append(c)
    assert err.value.kind == "stream_cut"
    assert len(got) == 3
    with pytest.raises(ProviderError) as err2:
        await p.chat(BODY)
    assert err2.value.kind == "connection"
    # the pool recovers after a dropped connection
    stub.script(["ok"])
    assert (await p.chat(BODY)).body["choices"]
    await p.aclose()


async def test_bad_json(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub, model="bad-json"))
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "bad_response"
    with pytest.raises(ProviderError) as err2:
        await collect(p.chat_stream(BODY))
    assert err2.value.kind == "bad_response"
    await p.aclose()


async def test_slow_and_flaky(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub, model="slow:30"))
    assert (await p.chat(BODY)).usage.completion_tokens == 5
    f = OpenAICompatProvider(deployment(stub, model="flaky:2"))
    kinds = []
    for _ in range(3):
        try:
            await f.chat(BODY)
            kinds.append("ok")
        except ProviderError as exc:
            kinds.append(exc.kind)
    assert kinds == ["server_error", "server_error", "ok"]
    assert stub.counts["flaky:2"] == 3
    await p.aclose()
    await f.aclose()


async def test_script_applies_in_order(stub: StubUpstream) -> None:
    stub.script(["error-503", "ok", "flaky:2"])
    p = OpenAICompatProvider(deployment(stub))
    results = []
    for _ in range(5):
        try:
            await p.chat(BODY)
            results.append("ok")
        except ProviderError as exc:
            results.append(str(exc.upstream_status))
    assert results == ["503", "ok", "500", "500", "ok"]
    await p.aclose()


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = ModelDeployment(
        name="m", provider="openai", model="x", base_url=f"http://127.0.0.1:{port}/v1"
    )
    p = OpenAICompatProvider(d)
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "connection"
    with pytest.raises(ProviderError) as err2:
        await anext(p.chat_stream(BODY))
    assert err2.value.kind == "connection"
    await p.aclose()


async def test_embeddings_passthrough(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub, model="embed-stub", mode="embeddings"))
    out = await p.embeddings({"model": "x", "input": ["red apple", "red apple", "blue sky"]})
    data = out.body["data"]
    assert len(data) == 3 and len(data[0]["embedding"]) == 16
    assert data[0]["embedding"] == data[1]["embedding"] != data[2]["embedding"]
    assert out.usage.prompt_tokens == 6
    out2 = await p.embeddings({"model": "x", "input": "one", "dimensions": 8})
    assert len(out2.body["data"][0]["embedding"]) == 8
    assert stub.requests[-1]["body"]["model"] == "embed-stub"
    await p.aclose()


async def test_registry_dispatch(stub: StubUpstream) -> None:
    p = build_provider(deployment(stub))
    assert isinstance(p, OpenAICompatProvider)
    await p.aclose()
    if importlib.util.find_spec("lockgate.providers.rules") is None:
        with pytest.raises(ConfigError) as err:
            build_provider(ModelDeployment(name="r", provider="rules"))
        assert "rules" in str(err.value) and "\n" not in str(err.value)


async def test_slow_consumer_is_not_an_idle_timeout(stub: StubUpstream) -> None:
    t = Timeouts(first_token=5, idle=0.1, total=30)
    p = OpenAICompatProvider(deployment(stub, timeouts=t))
    got: list[StreamChunk] = []
    async for c in p.chat_stream(BODY):
        got.append(c)
        await asyncio.sleep(0.15)  # the client side is slow; the upstream is not silent
    assert text_of(got) == "stub reply: hello big world"
    await p.aclose()


async def test_timeout_connect() -> None:
    # a listener that never accepts, with its accept queue filled: new SYNs go unanswered
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    d = ModelDeployment(
        name="m",
        provider="openai",
        model="x",
        base_url=f"http://127.0.0.1:{port}/v1",
        timeouts=Timeouts(connect=0.3, first_token=10),
    )
    p = OpenAICompatProvider(d)
    try:
        with pytest.raises(ProviderError) as err:
            await p.chat(BODY)
        assert err.value.kind == "timeout_connect"
    finally:
        await p.aclose()
        for c in fillers:
            c.close()
        srv.close()


async def test_stop_sequence_passthrough(stub: StubUpstream) -> None:
    p = OpenAICompatProvider(deployment(stub))
    out = await p.chat({**BODY, "stop": "big"})
    await p.aclose()
    assert out.body["choices"][0]["message"]["content"] == "stub reply: hello "


async def test_error_object_with_status_200(stub: StubUpstream) -> None:
    # some servers answer 200 with an error object instead of choices
    p = OpenAICompatProvider(deployment(stub, model="error-200"))
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "server_error" and "stub upstream error 200" in err.value.message
    with pytest.raises(ProviderError) as err2:
        await p.embeddings({"model": "x", "input": "a"})
    assert err2.value.kind == "server_error"
    with pytest.raises(ProviderError) as err3:
        await anext(p.chat_stream(BODY))
    assert err3.value.kind == "bad_response"  # JSON instead of an event stream
    await p.aclose()
