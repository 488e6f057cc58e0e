"""Streams through the real gateway take every control, and upstream junk is handled.

Cache (a hit replayed as a stream), output contracts on streams (validated at the end:
an SSE error event and no ``[DONE]``; or buffered and repaired), shadow traffic of
streams, an unexpected exception mid-stream (an error event on both APIs, audited,
budget settled) and junk ``usage`` from an upstream (502, audited, budget released),
driven with the official openai and anthropic SDKs and raw HTTP. In-process state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from lockgate.api.anthropic import anthropic_events
from lockgate.api.openai import sse_events
from lockgate.errors import UpstreamFailed
from lockgate.pipeline.stream_assembly import StreamAssembler
from lockgate.store import Store
from tests.gateway.conftest import MASTER, Gateway, ServerThread

JUNK_OPENAI = ("string", "negative", "huge", "list")


def streams_config(upstream: str, home: Path, db: str) -> str:
    junk = "\n".join(
        f'  - {{name: junk-{k}, provider: openai, base_url: "{upstream}/v1", '
        f'model: usage-{k}, max_retries: 0}}' for k in JUNK_OPENAI)
    return f"""
master_key: {MASTER}
home: {home}
database_url: {db}
audit: {{flush_interval_ms: 50}}
cache: {{enabled: true, ttl_seconds: 60}}
teams:
  budget-junk: {{budget: {{daily_tokens: 1000}}}}
  budget-bug: {{budget: {{daily_tokens: 1000}}}}
guards:
  contracts:
    triage@1:
      type: object
      required: [queue]
      properties: {{queue: {{type: string}}}}
    triage-buffered@1:
      stream: buffer
      schema:
        type: object
        required: [queue]
        properties: {{queue: {{type: string}}}}
shadow:
  routes: [{{model: mirrored, candidate: cand, percent: 100}}]
models:
  - {{name: fast, provider: openai, base_url: "{upstream}/v1", model: stub-streams,
      pricing: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
  - {{name: mirrored, provider: openai, base_url: "{upstream}/v1", model: stub-mirrored}}
  - {{name: cand, provider: openai, base_url: "{upstream}/v1", model: stub-stream-cand}}
  - {{name: claude, provider: anthropic, base_url: "{upstream}", model: claude-streams}}
  - {{name: claude-junk, provider: anthropic, base_url: "{upstream}", model: usage-bool,
      max_retries: 0}}
  - {{name: junk-stream, provider: openai, base_url: "{upstream}/v1", model: bad-choices,
      max_retries: 0}}
{junk}
"""


@pytest.fixture(scope="module")
def gw(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("streamshome")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = streams_config(upstream, home, db)
    server = ServerThread(text, home)
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, home, db)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.new_key()


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def upstream_requests(upstream: str, marker: str) -> list[dict[str, Any]]:
    reqs = httpx.get(upstream + "/_requests").json()
    return [r for r in reqs if marker in orjson.dumps(r.get("body")).decode()]


def sse_lines(gw: Gateway, key: str, body: dict[str, Any], path: str = "/chat/completions"
              ) -> tuple[httpx.Headers, list[str]]:
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
    with httpx.Client(base_url=gw.v1, timeout=20, headers=headers) as h, \
            h.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        return r.headers, [line for line in r.iter_lines() if line]


def data_events(lines: list[str]) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def audit_rows(gw: Gateway, model: str) -> list[Any]:
    async def rows() -> list[Any]:
        store = await Store.open(gw.database_url)
        try:
            return await store.recent_usage(limit=100, model=model)
        finally:
            await store.close()
    return asyncio.run(rows())


def stream_text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# ------------------------------------------------------------------ cache


def test_a_stream_is_cached_and_a_repeat_is_replayed_as_a_stream(gw: Gateway, key: str,
                                                                   upstream: str) -> None:
    c = client(gw, key)
    marker = uuid.uuid4().hex
    messages = [{"role": "user", "content": f"{marker} cache me"}]
    first = c.chat.completions.with_raw_response.create(
        model="fast", messages=messages, stream=True)  # type: ignore[arg-type]
    assert first.headers["x-lockgate-cache"] == "miss"
    text = stream_text(first.parse())
    assert text.startswith("stub reply:")

    def hit() -> bool:
        r = c.chat.completions.with_raw_response.create(
            model="fast", messages=messages, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True})
        chunks = list(r.parse())
        if r.headers["x-lockgate-cache"] != "hit":
            return False
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        return True

    wait_for(hit, "the stream to fill the cache")
    assert len(upstream_requests(upstream, marker)) == 1  # replays never reach the upstream
    # and a non-stream call of the same request is a hit on the stream's answer
    r = c.chat.completions.with_raw_response.create(model="fast", messages=messages)  # type: ignore[arg-type]
    assert r.headers["x-lockgate-cache"] == "hit" and r.parse().choices[0].message.content == text
    # the audit writer flushes every 50 ms: wait for the replayed stream's row
    wait_for(lambda: any(row.cached and row.stream and row.status == 200
                         for row in audit_rows(gw, "fast")), "the replayed stream's audit row")


def test_an_anthropic_stream_is_replayed_from_the_cache(gw: Gateway, key: str) -> None:
    a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    messages = [{"role": "user", "content": f"{uuid.uuid4().hex} cache me too"}]

    def run() -> tuple[str, str, int]:
        raw = a.messages.with_raw_response.create(
            model="claude", max_tokens=50, stream=True, messages=messages)  # type: ignore[arg-type]
        text, out_tokens = "", 0
        for event in raw.parse():
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
            elif event.type == "message_delta":
                out_tokens = event.usage.output_tokens
        return raw.headers["x-lockgate-cache"], text, out_tokens

    state, text, tokens = run()
    assert state == "miss" and text.startswith("stub reply:") and tokens > 0
    wait_for(lambda: run() == ("hit", text, tokens), "the replayed Anthropic stream")


def test_a_cut_stream_never_fills_the_cache(gw: Gateway, key: str, upstream: str) -> None:
    marker = uuid.uuid4().hex
    body = {"model": "fast", "stream": True,
            "messages": [{"role": "user", "content": f"{marker} cut"}]}
    httpx.post(upstream + "/_script", json=["cut-mid"]).raise_for_status()
    _, lines = sse_lines(gw, key, body)
    assert "upstream_stream_cut" in data_events(lines)[-1]
    time.sleep(0.2)
    headers, lines = sse_lines(gw, key, body)
    assert headers["x-lockgate-cache"] == "miss" and data_events(lines)[-1] == "[DONE]"


# ------------------------------------------------------------------ contracts


def test_a_contract_violation_ends_the_stream_with_an_error_event(gw: Gateway, key: str) -> None:
    body = {"model": "fast", "stream": True, "metadata": {"contract": "triage@1"},
            "messages": [{"role": "user", "content": f"{uuid.uuid4().hex} printer broken"}]}
    _, lines = sse_lines(gw, key, body)
    events = data_events(lines)
    assert "[DONE]" not in events
    content = "".join(
        (orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for e in events[:-1])
    assert content.startswith("stub reply:")  # the answer went out as it came
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "output_contract_failed" and "triage@1" in error["message"]
    # the SDK raises at the end of the stream
    with pytest.raises(openai.APIError) as err:
        stream_text(client(gw, key).chat.completions.create(
            model="fast", stream=True, metadata={"contract": "triage@1"},
            messages=[{"role": "user", "content": f"{uuid.uuid4().hex} again"}]))
    assert "triage@1" in err.value.message
    # the audit writer flushes every 50 ms: wait for the row
    wait_for(lambda: any(r.stream and r.status == 502 and r.error_class == "output_contract_failed"
                         for r in audit_rows(gw, "fast")), "the failed stream's audit row")


def test_a_valid_streamed_answer_passes_its_contract(gw: Gateway, key: str) -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    text = stream_text(client(gw, key).chat.completions.create(
        model="fast", stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        messages=[{"role": "user", "content": f"{uuid.uuid4().hex} a number"}]))
    assert isinstance(orjson.loads(text)["n"], int)


def test_a_buffered_contract_is_repaired_before_it_is_streamed(gw: Gateway, key: str,
                                                               upstream: str) -> None:
    marker = uuid.uuid4().hex
    r = client(gw, key).chat.completions.with_raw_response.create(
        model="fast", stream=True, metadata={"contract": "triage-buffered@1"},
        messages=[{"role": "user", "content": f"{marker} printer broken"}])
    assert r.headers["x-lockgate-contract-repaired"] == "1"
    value = orjson.loads(stream_text(r.parse()))
    assert isinstance(value["queue"], str)
    sent = upstream_requests(upstream, marker)
    assert len(sent) == 2 and not any(s["body"].get("stream") for s in sent)


# ------------------------------------------------------------------ shadow


def test_streams_are_mirrored_to_the_shadow_candidate(gw: Gateway, key: str,
                                                      upstream: str) -> None:
    marker = uuid.uuid4().hex
    text = stream_text(client(gw, key).chat.completions.create(
        model="mirrored", stream=True, messages=[{"role": "user", "content": f"{marker} hi"}]))
    assert text.startswith("stub reply:")

    def candidate() -> list[dict[str, Any]]:
        return [r for r in upstream_requests(upstream, marker)
                if r["model"] == "stub-stream-cand"]

    wait_for(lambda: bool(candidate()), "the shadow candidate call")
    assert candidate()[0]["body"].get("stream") is not True


# ------------------------------------------------------------------ failures


def _budget_fits(c: openai.OpenAI) -> bool:
    try:
        c.chat.completions.create(model="fast", max_tokens=600,
                                  messages=[{"role": "user", "content": uuid.uuid4().hex}])
    except openai.RateLimitError:
        return False
    return True


def test_junk_usage_is_a_502_audited_with_the_budget_released(gw: Gateway) -> None:
    c = client(gw, gw.new_key("budget-junk"))
    for kind in JUNK_OPENAI:
        # each call reserves ~605 of the team's 1000 tokens: a held reservation would turn
        # the next call into a 429
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model=f"junk-{kind}", max_tokens=600,
                                      messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 502, kind
        assert "usage" in err.value.message, err.value.message
        wait_for(lambda: _budget_fits(c), f"the junk-{kind} reservation to be released")
        wait_for(lambda k=kind: any(r.status == 502 for r in audit_rows(gw, f"junk-{k}")),  # type: ignore[misc]
                 f"the audit row of junk-{kind}")
    # streamed: the usage chunk comes last, so the stream ends with an error event
    with pytest.raises(openai.APIError) as serr:
        stream_text(c.chat.completions.create(
            model="junk-negative", stream=True, max_tokens=600,
            messages=[{"role": "user", "content": "hi"}]))
    assert "negative" in serr.value.message
    wait_for(lambda: _budget_fits(c), "the junk stream to settle")
    wait_for(lambda: any(r.stream and r.status == 502 for r in audit_rows(gw, "junk-negative")),
             "the audit row of the junk stream")


def test_junk_usage_from_anthropic_on_both_apis(gw: Gateway, key: str) -> None:
    c = client(gw, key)
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="claude-junk",
                                  messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and "usage.input_tokens" in err.value.message
    a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as aerr:
        a.messages.create(model="claude-junk", max_tokens=50,
                          messages=[{"role": "user", "content": "hi"}])
    assert aerr.value.status_code == 502
    with pytest.raises(anthropic.APIError) as serr, a.messages.stream(
            model="claude-junk", max_tokens=50,
            messages=[{"role": "user", "content": "hi"}]) as s:
        for _ in s.text_stream:
            pass
    assert "output_tokens" in str(serr.value)


def test_a_malformed_chunk_mid_stream_is_an_error_event(gw: Gateway, key: str) -> None:
    _, lines = sse_lines(gw, key, {"model": "junk-stream", "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]})
    events = data_events(lines)
    assert "[DONE]" not in events
    assert orjson.loads(events[-1])["error"]["code"] == "upstream_error"


@pytest.fixture
def exploding_assembler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug mid-stream: the assembler raises on the first chunk with text (the role
    chunk before it passes, so the failure comes after the stream started)."""
    original = StreamAssembler.feed

    def feed(self: StreamAssembler, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                raise RuntimeError("simulated bug")
        original(self, chunk)

    monkeypatch.setattr(StreamAssembler, "feed", feed)


@pytest.mark.usefixtures("exploding_assembler")
def test_an_unexpected_exception_mid_stream_is_an_error_event_on_both_apis(
        gw: Gateway) -> None:
    key = gw.new_key("budget-bug")
    body = {"model": "fast", "stream": True, "max_tokens": 600,
            "messages": [{"role": "user", "content": f"{uuid.uuid4().hex} explode now"}]}
    _, lines = sse_lines(gw, key, body)
    events = data_events(lines)
    assert "[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "internal_error" and "simulated" not in error["message"]
    wait_for(lambda: _budget_fits(client(gw, key)), "the failed stream to settle")
    wait_for(lambda: any(r.status == 500 and r.error_class == "internal_error" and r.stream
                         for r in audit_rows(gw, "fast")), "the audit row of the failed stream")

    a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    _, alines = sse_lines(gw, key, {"model": "claude", "max_tokens": 50, "stream": True,
                                    "messages": [{"role": "user", "content": "explode"}]},
                          path="/messages")
    assert "event: error" in alines and "event: message_stop" not in alines
    err = orjson.loads(data_events(alines)[-1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIError), a.messages.stream(
            model="claude", max_tokens=50,
            messages=[{"role": "user", "content": "explode again"}]) as s:
        for _ in s.text_stream:
            pass


# ------------------------------------------------------------------ the adapters' last line


async def _broken(error: BaseException) -> AsyncIterator[dict[str, Any]]:
    yield {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": "partial"}}]}
    raise error


async def _collect(gen: AsyncIterator[bytes]) -> list[bytes]:
    return [b async for b in gen]


def test_sse_writers_turn_any_exception_into_an_error_event() -> None:
    out = asyncio.run(_collect(sse_events(_broken(ValueError("x")), "req-1")))
    assert b"partial" in out[0] and b"[DONE]" not in out[-1]
    assert orjson.loads(out[-1][len(b"data: "):])["error"]["code"] == "internal_error"
    out = asyncio.run(_collect(sse_events(_broken(UpstreamFailed("cut")))))
    assert orjson.loads(out[-1][len(b"data: "):])["error"]["code"] == "upstream_error"

    events = asyncio.run(_collect(anthropic_events(_broken(KeyError("x")), "m", "req-2")))
    assert events[-1].startswith(b"event: error\n")
    assert b"message_stop" not in b"".join(events)
    assert b"req-2" in events[-1]


def test_a_failure_in_the_writer_closes_the_pipeline_stream() -> None:
    closed: list[bool] = []

    async def unserialisable() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"bad": object()}  # orjson cannot encode it: the writer itself fails
            yield {"never": True}
        finally:
            closed.append(True)

    out = asyncio.run(_collect(sse_events(unserialisable(), "req-3")))
    assert closed == [True]
    assert orjson.loads(out[-1][len(b"data: "):])["error"]["code"] == "internal_error"
