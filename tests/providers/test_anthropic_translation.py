"""OpenAI <-> Anthropic translation: round-trips, shapes checked with the official SDK types."""

from __future__ import annotations

from typing import Any

import anthropic.types as at
import openai.types.chat as ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from lockgate.formats.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    encode_anthropic_event,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)

PNG = "iVBORw0KGgo="
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "find",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}

OPENAI_REQ: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "sys one"},
        {"role": "developer", "content": [{"type": "text", "text": "sys two"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"a"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"b"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result a"},
        {"role": "tool", "tool_call_id": "c2", "content": "result b"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [TOOL],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "stop": "END",
    "temperature": 0.2,
    "top_p": 0.9,
    "max_completion_tokens": 77,
    "user": "u-1",
}


def test_openai_request_to_anthropic() -> None:
    a = openai_request_to_anthropic(OPENAI_REQ, "claude-x")
    assert a["model"] == "claude-x" and a["max_tokens"] == 77
    assert a["system"] == "sys one\n\nsys two"
    assert a["stop_sequences"] == ["END"] and a["temperature"] == 0.2 and a["top_p"] == 0.9
    assert a["metadata"] == {"user_id": "u-1"}
    assert a["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert a["tools"] == [
        {"description": "find", "name": "lookup", "input_schema": TOOL["function"]["parameters"]}  # type: ignore[index]
    ]
    msgs = a["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert msgs[0]["content"][2]["source"] == {"type": "url", "url": "https://x.test/a.png"}
    assert msgs[1]["content"][1] == {
        "type": "tool_use",
        "id": "c1",
        "name": "lookup",
        "input": {"q": "a"},
    }
    # both tool results and the next user text merge into one user turn
    assert [b["type"] for b in msgs[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert msgs[2]["content"][1] == {
        "type": "tool_result",
        "tool_use_id": "c2",
        "content": "result b",
    }
    # the SDK's own request type accepts it
    TypeAdapter(list[at.MessageParam]).validate_python(msgs)


def test_request_round_trip() -> None:
    back = anthropic_request_to_openai(openai_request_to_anthropic(OPENAI_REQ, "m"))
    assert back["messages"][0] == {"role": "system", "content": "sys one\n\nsys two"}
    roles = [m["role"] for m in back["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assert back["messages"][1]["content"] == OPENAI_REQ["messages"][2]["content"]
    assert back["messages"][2]["tool_calls"] == OPENAI_REQ["messages"][3]["tool_calls"]
    assert back["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "result a"}
    assert back["tools"] == [TOOL]
    assert back["tool_choice"] == "required" and back["parallel_tool_calls"] is False
    assert back["stop"] == ["END"] and back["max_tokens"] == 77 and back["user"] == "u-1"


def test_defaults_and_untranslatable() -> None:
    a = openai_request_to_anthropic({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert a["max_tokens"] == DEFAULT_MAX_TOKENS and "system" not in a and "tools" not in a
    js = openai_request_to_anthropic(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "object"}},
            },
        }
    )
    assert "JSON schema" in js["system"] and '{"type":"object"}' in js["system"]
    with pytest.raises(TranslationError):
        openai_request_to_anthropic({"messages": [], "n": 3})
    with pytest.raises(TranslationError):
        openai_request_to_anthropic(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            }
        )
    with pytest.raises(TranslationError):
        anthropic_request_to_openai(
            {"messages": [{"role": "user", "content": [{"type": "search_result", "content": []}]}]}
        )


def test_anthropic_request_to_openai() -> None:
    req = {
        "model": "claude",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "be kind", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "found"}],
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "tools": [
            {"name": "lookup", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "stop_sequences": ["X"],
        "top_k": 5,
        "stream": True,
        "metadata": {"user_id": "abc"},
    }
    o = anthropic_request_to_openai(req)
    assert o["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "found"},
        {"role": "user", "content": "and?"},
    ]
    assert o["tools"] == [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    assert o["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert o["stream_options"] == {"include_usage": True} and "top_k" not in o
    assert o["user"] == "abc" and o["stop"] == ["X"] and o["max_tokens"] == 50
    TypeAdapter(list[ot.ChatCompletionMessageParam]).validate_python(o["messages"])


def test_response_round_trip() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "here",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    msg = openai_response_to_anthropic(completion)
    at.Message.model_validate(msg)
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert msg["content"] == [
        {"type": "text", "text": "here"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
    ]
    back = anthropic_response_to_openai(msg)
    ot.ChatCompletion.model_validate(back)
    assert back["choices"][0]["message"] == completion["choices"][0]["message"]  # type: ignore[index]
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    assert back["usage"] == completion["usage"]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    msg = {
        "id": "msg_1",
        "model": "c",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop,
    }
    assert anthropic_response_to_openai(msg)["choices"][0]["finish_reason"] == finish


def test_usage_with_cache() -> None:
    msg = {
        "id": "m",
        "content": [],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 2,
            "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 1,
            "output_tokens": 3,
        },
    }
    usage = anthropic_response_to_openai(msg)["usage"]
    assert usage["prompt_tokens"] == 13 and usage["prompt_tokens_details"] == {"cached_tokens": 10}


def _openai_chunks(text_pieces: list[str], tool: bool) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def c(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [c({"role": "assistant", "content": ""})]
    out += [c({"content": t}) for t in text_pieces]
    if tool:
        out.append(
            c(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                }
            )
        )
        out += [
            c({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in ('{"a"', ":1}")
        ]
    out.append(c({}, "tool_calls" if tool else "stop"))
    out.append(
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10},
        }
    )
    return out


def test_openai_stream_to_anthropic_event_sequence() -> None:
    tr = OpenAIToAnthropicStream(model="public")
    events: list[tuple[str, dict[str, Any]]] = []
    for chunk in _openai_chunks(["Hel", "lo"], tool=True):
        events += tr.feed(chunk)
    events += tr.finish()
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    adapter: TypeAdapter[Any] = TypeAdapter(at.RawMessageStreamEvent)
    for name, data in events:
        if name != "ping":
            assert adapter.validate_python(data).type == name
    assert events[0][1]["message"]["model"] == "public"
    assert events[6][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 6
    assert (
        encode_anthropic_event(*events[-1])
        == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )

    # and back: Anthropic events -> OpenAI chunks reproduce text, tool call and usage
    back = AnthropicToOpenAIStream()
    chunks = [c for _, data in events for c in back.feed(data)]
    assert back.done
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0]["function"]["name"] == "f"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"a":1}'
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    for chunk in chunks:
        ot.ChatCompletionChunk.model_validate(chunk)


def test_empty_stream_still_well_formed() -> None:
    tr = OpenAIToAnthropicStream()
    events = tr.finish()
    assert [n for n, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert tr.finish() == []
    assert tr.error("boom")[0] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "boom"}},
    )


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["user", "assistant"]), st.text(min_size=1, max_size=20)),
        min_size=1,
        max_size=6,
    )
)
def test_text_conversation_round_trips(turns: list[tuple[str, str]]) -> None:
    req = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": r, "content": t} for r, t in turns],
    }
    anth = openai_request_to_anthropic(req)
    # same-role neighbours merge; the text survives in order
    flat = [b["text"] for m in anth["messages"] for b in m["content"]]
    assert flat == [t for _, t in turns]
    back = anthropic_request_to_openai(anth)
    joined = [m["content"] for m in back["messages"]]
    assert "\n".join(joined) == "\n".join(t for _, t in turns)


# ---------------------------------------------------------------- end to end with the SDK


async def test_mini_front_door_serves_the_anthropic_sdk() -> None:
    """Anthropic SDK -> (Anthropic->OpenAI) -> OpenAI provider -> stub -> (OpenAI->Anthropic)."""
    import anthropic
    from aiohttp import web

    from lockgate.providers.openai_compat import OpenAICompatProvider
    from lockgate.settings import ModelDeployment
    from lockgate.testing.stub_upstream import StubUpstream

    stub = StubUpstream()
    await stub.start()
    provider = OpenAICompatProvider(
        ModelDeployment(name="m", provider="openai", model="gpt-stub", base_url=stub.openai_base)
    )

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        oai = anthropic_request_to_openai(body)
        if not body.get("stream"):
            done = await provider.chat(oai)
            return web.json_response(openai_response_to_anthropic(done.body, model=body["model"]))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        tr = OpenAIToAnthropicStream(model=body["model"])
        async for chunk in provider.chat_stream(oai):
            for name, data in tr.feed(chunk):
                await resp.write(encode_anthropic_event(name, data))
        for name, data in tr.finish():
            await resp.write(encode_anthropic_event(name, data))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{port}", api_key="k", max_retries=0
    )
    try:
        msg = await client.messages.create(
            model="pub", max_tokens=50, messages=[{"role": "user", "content": "over the door"}]
        )
        assert msg.content[0].type == "text"
        assert msg.content[0].text == "stub reply: over the door"
        assert msg.usage.output_tokens == 5 and msg.model == "pub"
        tools: list[Any] = [
            {
                "name": "find",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
        ]
        async with client.messages.stream(
            model="pub",
            max_tokens=50,
            tools=tools,
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "cats"}],
        ) as stream:
            final = await stream.get_final_message()
        block = final.content[0]
        assert block.type == "tool_use" and block.name == "find" and block.input == {"q": "cats"}
        assert final.stop_reason == "tool_use"
        async with client.messages.stream(
            model="pub", max_tokens=50, messages=[{"role": "user", "content": "stream me"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "stub reply: stream me"
        assert final.usage.output_tokens == 4 and final.stop_reason == "end_turn"
        sent = stub.requests[-1]["body"]
        assert sent["stream_options"] == {"include_usage": True}
    finally:
        await client.close()
        await provider.aclose()
        await runner.cleanup()
        await stub.stop()
