"""AnthropicProvider against the stub's real /v1/messages endpoint on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from lockgate.providers.anthropic import AnthropicProvider
from lockgate.providers.base import ProviderError, StreamChunk
from lockgate.providers.registry import build_provider
from lockgate.settings import ModelDeployment, Timeouts
from lockgate.testing.stub_upstream import StubUpstream

BODY: dict[str, Any] = {
    "model": "public",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello big world"},
    ],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "find things",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


def provider(stub: StubUpstream, model: str = "claude-stub", **kw: Any) -> AnthropicProvider:
    kw.setdefault("base_url", stub.base_url)
    return AnthropicProvider(
        ModelDeployment(name="c", provider="anthropic", model=model, api_key="sk-ant", **kw)
    )


async def collect(it: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [c async for c in it]


async def test_chat_translates_both_ways(stub: StubUpstream) -> None:
    p = provider(stub)
    out = await p.chat(BODY)
    await p.aclose()
    choice = out.body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "stub reply: hello big world"}
    assert choice["finish_reason"] == "stop"
    assert out.body["object"] == "chat.completion"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (5, 5)
    seen = stub.requests[-1]
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == "sk-ant"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    sent = seen["body"]
    assert sent["model"] == "claude-stub" and sent["max_tokens"] == 4096
    assert sent["system"] == "be brief"
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello big world"}]}
    ]
    assert "stream" not in sent


async def test_base_url_with_v1(stub: StubUpstream) -> None:
    p = provider(stub, base_url=stub.base_url + "/v1/")
    assert (await p.chat(BODY)).body["choices"]
    await p.aclose()


async def test_max_tokens_length(stub: StubUpstream) -> None:
    p = provider(stub)
    out = await p.chat({**BODY, "max_tokens": 2})
    await p.aclose()
    assert out.body["choices"][0]["finish_reason"] == "length"
    assert stub.requests[-1]["body"]["max_tokens"] == 2


async def test_stream(stub: StubUpstream) -> None:
    p = provider(stub)
    chunks = await collect(p.chat_stream(BODY))
    await p.aclose()
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "stub reply: hello big world"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert stub.requests[-1]["body"]["stream"] is True


async def test_tool_calls(stub: StubUpstream) -> None:
    p = provider(stub)
    body = {
        **BODY,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    }
    out = await p.chat(body)
    sent = stub.requests[-1]["body"]
    assert sent["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert sent["tools"][0]["input_schema"]["properties"] == {"q": {"type": "string"}}
    choice = out.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "lookup", "arguments": '{"q":"hello big world"}'}
    chunks = await collect(p.chat_stream({**body, "tool_choice": "required"}))
    assert stub.requests[-1]["body"]["tool_choice"] == {"type": "any"}
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0]["function"]["name"] == "lookup" and calls[0]["id"].startswith("toolu_")
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"q":"hello big world"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    await p.aclose()


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("error-400", "bad_request"),
        ("error-401", "auth"),
        ("error-402", "payment"),
        ("error-500", "server_error"),
        ("error-529", "server_error"),
    ],
)
async def test_errors(stub: StubUpstream, model: str, kind: str) -> None:
    p = provider(stub, model=model)
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == kind
    assert "stub upstream error" in err.value.message and "_error" in err.value.message
    with pytest.raises(ProviderError) as err2:
        await anext(p.chat_stream(BODY))
    assert err2.value.kind == kind
    await p.aclose()


async def test_rate_limit_retry_after(stub: StubUpstream) -> None:
    p = provider(stub, model="error-429:4")
    with pytest.raises(ProviderError) as err:
        await p.chat(BODY)
    assert err.value.kind == "rate_limited" and err.value.retry_after == 4.0
    await p.aclose()


async def test_stream_failures(stub: StubUpstream) -> None:
    p = provider(stub, model="cut-mid")
    with pytest.raises(ProviderError) as err:
        await collect(p.chat_stream(BODY))
    assert err.value.kind == "stream_cut"
    idle = provider(stub, model="stall-mid:3", timeouts=Timeouts(idle=0.2))
    got: list[StreamChunk] = []
    with pytest.raises(ProviderError) as err2:
        async for c in idle.chat_stream(BODY):
            got.append(c)
    assert err2.value.kind == "timeout_idle" and got
    first = provider(stub, model="stall-before:3", timeouts=Timeouts(first_token=0.2))
    with pytest.raises(ProviderError) as err3:
        await first.chat(BODY)
    assert err3.value.kind == "timeout_first_token"
    bad = provider(stub, model="bad-json")
    with pytest.raises(ProviderError) as err4:
        await collect(bad.chat_stream(BODY))
    assert err4.value.kind == "bad_response"
    for x in (p, idle, first, bad):
        await x.aclose()


async def test_untranslatable_and_embeddings(stub: StubUpstream) -> None:
    p = provider(stub)
    with pytest.raises(ProviderError) as err:
        await p.chat({**BODY, "n": 2})
    assert err.value.kind == "bad_request"
    with pytest.raises(ProviderError) as err2:
        await p.embeddings({"model": "x", "input": "hi"})
    assert err2.value.kind == "bad_request" and "embeddings" in err2.value.message
    assert stub.total == 0
    await p.aclose()


async def test_registry_builds_anthropic(stub: StubUpstream) -> None:
    d = ModelDeployment(name="c", provider="anthropic", model="m", base_url=stub.base_url)
    p = build_provider(d)
    assert isinstance(p, AnthropicProvider)
    await p.aclose()
