"""The stub upstream driven by the official openai and anthropic SDKs (real wire protocol)."""

# The SDKs' TypedDict overloads are not the point here; plain dicts are sent on purpose.
# mypy: disable-error-code="arg-type,call-overload,union-attr,index"

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

import lockgate
from lockgate.testing.stub_upstream import StubUpstream, parse_behaviour, run_stub_in_thread

TOOLS: list[dict[str, object]] = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    with run_stub_in_thread() as s:
        yield s


@pytest.fixture
def oa(stub: StubUpstream) -> Iterator[openai.OpenAI]:
    stub.reset()
    client = openai.OpenAI(base_url=stub.openai_base, api_key="sk-x", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def an(stub: StubUpstream) -> Iterator[anthropic.Anthropic]:
    stub.reset()
    client = anthropic.Anthropic(base_url=stub.base_url, api_key="sk-ant-x", max_retries=0)
    yield client
    client.close()


MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi there"}]


def test_openai_chat(oa: openai.OpenAI, stub: StubUpstream) -> None:
    r = oa.chat.completions.create(model="gpt-x", messages=MSGS)
    assert r.choices[0].message.content == "stub reply: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 4
    assert stub.requests[-1]["headers"]["authorization"] == "Bearer sk-x"


def test_openai_stream_with_usage(oa: openai.OpenAI) -> None:
    stream = oa.chat.completions.create(
        model="gpt-x",
        messages=MSGS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stub reply: hi there"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 6


def test_openai_stream_helper_tools(oa: openai.OpenAI) -> None:
    with oa.chat.completions.stream(
        model="gpt-x",
        messages=[{"role": "user", "content": "Paris"}],
        tools=TOOLS,
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "weather"
    assert call.function.arguments == '{"city":"Paris","days":1}'
    assert final.choices[0].finish_reason == "tool_calls"


def test_openai_auto_tool_marker_and_json(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(
        model="gpt-x",
        messages=[{"role": "user", "content": "please tool:weather now"}],
        tools=TOOLS,
    )
    assert r.choices[0].message.tool_calls
    plain = oa.chat.completions.create(model="gpt-x", messages=MSGS, tools=TOOLS)
    assert plain.choices[0].message.content == "stub reply: hi there"
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["a", "b"]}, "n": {"type": "number"}},
    }
    js = oa.chat.completions.create(
        model="gpt-x",
        messages=MSGS,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert js.choices[0].message.content == '{"label":"a","n":1.0}'


def test_openai_embeddings_and_models(oa: openai.OpenAI) -> None:
    # the SDK asks for base64 by default and decodes it
    e = oa.embeddings.create(model="emb", input=["cat sat", "cat sat", "dog ran"])
    vecs = [d.embedding for d in e.data]
    assert len(vecs[0]) == 16 and vecs[0] == vecs[1] != vecs[2]
    assert abs(sum(v * v for v in vecs[0]) - 1.0) < 1e-5
    f = oa.embeddings.create(model="emb", input="x y", dimensions=4, encoding_format="float")
    assert len(f.data[0].embedding) == 4 and e.usage.prompt_tokens == 6
    ids = [m.id for m in oa.models.list()]
    assert "stub-model" in ids and "emb" in ids


def test_openai_errors(oa: openai.OpenAI, stub: StubUpstream) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        oa.chat.completions.create(model="error-429:3", messages=MSGS)
    assert err.value.response.headers["retry-after"] == "3"
    assert err.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.AuthenticationError):
        oa.chat.completions.create(model="error-401", messages=MSGS)
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(model="error-503", messages=MSGS)
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="x", messages="nope")
    stub.script(["cut-mid"])
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(oa.chat.completions.create(model="gpt-x", messages=MSGS, stream=True))


def test_anthropic_messages(an: anthropic.Anthropic, stub: StubUpstream) -> None:
    m = an.messages.create(
        model="claude-x",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": "hi there"}],
    )
    assert m.content[0].type == "text" and m.content[0].text == "stub reply: hi there"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (4, 4)
    headers = stub.requests[-1]["headers"]
    # this SDK generation authenticates with a bearer token; older ones send x-api-key
    assert "sk-ant-x" in (headers.get("x-api-key", "") + headers.get("authorization", ""))
    assert headers["anthropic-version"]


def test_anthropic_stream_text(an: anthropic.Anthropic) -> None:
    with an.messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi there"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "stub reply: hi there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    raw = an.messages.create(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    types = [e.type for e in raw]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK swallows ping


def test_anthropic_stream_tool_use(an: anthropic.Anthropic) -> None:
    with an.messages.stream(
        model="claude-x",
        max_tokens=100,
        tools=[
            {
                "name": "weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Oslo"}],
    ) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "weather" and block.input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"


def test_anthropic_errors(an: anthropic.Anthropic, stub: StubUpstream) -> None:
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.RateLimitError) as err:
        an.messages.create(model="error-429", max_tokens=5, messages=msgs)
    assert err.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "stub upstream error 429"},
    }
    with pytest.raises(anthropic.InternalServerError):
        an.messages.create(model="error-529", max_tokens=5, messages=msgs)
    with pytest.raises(anthropic.BadRequestError):
        an.with_options().post(
            "/v1/messages", body={"model": "m", "messages": msgs}, cast_to=httpx.Response
        )
    stub.script(["cut-mid"])
    # the SDK surfaces the cut as its transport's protocol error (httpx or httpx2)
    with (
        pytest.raises(Exception, match=r"incomplete|closed|disconnect"),
        an.messages.stream(model="claude-x", max_tokens=5, messages=msgs) as s,
    ):
        s.get_final_message()


def test_control_endpoints(stub: StubUpstream) -> None:
    stub.reset()
    with httpx.Client(base_url=stub.base_url) as c:
        assert c.post("/_script", json=["error-500", "flaky:2"]).json() == {"queued": 3}
        assert c.post("/_script", json=["nonsense"]).status_code == 400
        codes = [
            c.post("/v1/chat/completions", json={"model": "ok-model", "messages": MSGS}).status_code
            for _ in range(4)
        ]
        assert codes == [500, 500, 500, 200]
        stats = c.get("/_stats").json()
        assert stats["total"] == 4 and stats["by_model"] == {"ok-model": 4}
        assert stats["by_behaviour"] == {"error-500": 3, "ok": 1}
        reqs = c.get("/_requests").json()
        assert len(reqs) == 4 and reqs[0]["body"]["messages"] == MSGS
        c.post("/_reset")
        assert c.get("/_stats").json()["total"] == 0


def test_parse_behaviour() -> None:
    assert parse_behaviour("error-429:2.5") == ("error-429", 2.5)
    assert parse_behaviour("stub/stall-mid:3") == ("stall-mid", 3.0)
    assert parse_behaviour("cut-mid") == ("cut-mid", 0.0)
    assert parse_behaviour("gpt-4o") is None
    assert parse_behaviour("slow:abc") is None


@pytest.fixture
async def astub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


async def test_async_sdks_in_process(astub: StubUpstream) -> None:
    oa = openai.AsyncOpenAI(base_url=astub.openai_base, api_key="k", max_retries=0)
    stream = await oa.chat.completions.create(model="m", messages=MSGS, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "stub reply: hi there"
    await oa.close()
    an = anthropic.AsyncAnthropic(base_url=astub.base_url, api_key="k", max_retries=0)
    async with an.messages.stream(
        model="c", max_tokens=9, messages=[{"role": "user", "content": "yo"}]
    ) as s:
        final = await s.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "stub reply: yo"
    await an.close()
    assert astub.total == 2 and astub.counts == {"m": 1, "c": 1}


def test_cli_process() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(lockgate.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lockgate.testing.stub_upstream",
            "--port",
            str(port),
            "--reuse-port",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "m", "messages": MSGS},
                    timeout=2,
                )
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "stub reply: hi there"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_run_in_thread_reports_bind_failure(stub: StubUpstream) -> None:
    with pytest.raises(OSError), run_stub_in_thread(port=stub.port):
        pass
