"""Streams take every control: cache (replay, fill), contracts (end / buffer), shadow
mirror, and failures that are not gateway errors (audited, budget released/settled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from lockgate.errors import GatewayError
from lockgate.guards import ContractViolation, Guards
from lockgate.pipeline import Call, Completion, Controls, Principal, StreamChunk
from lockgate.pipeline.cache import ResponseCache
from lockgate.providers.base import ProviderError, Usage
from lockgate.settings.guards import GuardsConfig
from lockgate.state import MemoryState
from tests.pipeline.fakes import (
    FakeProvider,
    answer,
    build_pipeline,
    chat_call,
    deployment,
    metric,
    target,
)

SCHEMA = {"type": "object", "required": ["label"],
          "properties": {"label": {"type": "string"}}}
GOOD = orjson.dumps({"label": "bug"}).decode()
TEAM = Principal(key_id="k1", team_id="A")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Streamer(FakeProvider):
    """Streams ``parts`` (with usage at the end), optionally failing after ``fail_after``;
    non-stream calls answer the queued ``answers`` in turn."""

    def __init__(self, parts: list[str], *, fail_after: int | None = None,
                 error: BaseException | None = None, answers: list[str] | None = None,
                 usage: Any = None) -> None:
        super().__init__(" ".join(parts))
        self.parts = parts
        self.fail_after = fail_after
        self.error = error
        self.answers = list(answers or [])
        self.usage = usage if usage is not None else {"prompt_tokens": 4,
                                                      "completion_tokens": len(parts)}
        self.stream_calls = 0

    async def chat(self, body: dict[str, Any]) -> Completion:
        self.bodies.append(body)
        text = self.answers.pop(0) if self.answers else "".join(self.parts)
        return Completion(answer(text), Usage(3, 2))

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        self.bodies.append(body)
        self.stream_calls += 1
        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                "model": "m"}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        for i, part in enumerate(self.parts):
            if self.fail_after is not None and i == self.fail_after:
                assert self.error is not None
                raise self.error
            await asyncio.sleep(0)
            yield {**base, "choices": [{"index": 0, "delta": {"content": part}}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": self.usage}


def stream_call(text: str = "hi", *, usage: bool = False, **kw: Any) -> Call:
    c = chat_call("m", text, principal=kw.pop("principal", TEAM), **kw)
    c.body["stream"] = True
    if usage:
        c.body["stream_options"] = {"include_usage": True}
    return c


def content(chunks: list[StreamChunk]) -> str:
    return "".join(ch["choices"][0]["delta"].get("content") or ""
                   for ch in chunks if ch.get("choices"))


async def drain(pipe: Any, call: Call) -> tuple[list[StreamChunk], Any]:
    stream = await pipe.chat_stream(call)
    return [c async for c in stream], stream.facts


def cached_pipeline(provider: FakeProvider, **controls: Any):  # type: ignore[no-untyped-def]
    cache = ResponseCache(MemoryState(), ttl_seconds=60)
    pipe, sink, metrics = build_pipeline({"m": [target(deployment("m"), provider)]},
                                         controls=Controls(cache=cache, **controls))
    return pipe, sink, metrics, cache


# ------------------------------------------------------------------ cache


async def test_a_completed_stream_fills_the_cache_and_a_repeat_is_replayed_as_a_stream() -> None:
    provider = Streamer(["one ", "two ", "three"])
    pipe, sink, metrics, _ = cached_pipeline(provider)
    first, facts1 = await drain(pipe, stream_call())
    assert facts1.cache == "miss"
    await settle()  # the fill runs in the background
    second, facts2 = await drain(pipe, stream_call(usage=True))
    assert provider.stream_calls == 1
    assert facts2.cache == "hit" and facts2.deployment == "cache"
    assert content(second) == content(first) == "one two three"
    assert second[-1]["choices"] == [] and second[-1]["usage"]["prompt_tokens"] == 4
    assert all(c["object"] == "chat.completion.chunk" for c in second)
    assert second[-2]["choices"][0]["finish_reason"] == "stop"
    assert [(r.cached, r.stream, r.status) for r in sink.records] == [
        (False, True, 200), (True, True, 200)]
    assert sink.records[1].cost == 0.0 and sink.records[1].prompt_tokens == 4
    assert metric(metrics, "lockgate_cache_total", {"result": "hit"}) == 1
    # without include_usage, no usage chunk is replayed
    third, _ = await drain(pipe, stream_call())
    assert all(c.get("choices") for c in third) and "usage" not in third[-1]
    # the stream-filled answer serves a non-stream call too
    result = await pipe.chat(chat_call("m", principal=TEAM))
    assert result.body["choices"][0]["message"]["content"] == "one two three"
    assert result.facts is not None and result.facts.cache == "hit"
    assert provider.stream_calls == 1 and provider.calls == 1


async def test_a_non_stream_answer_is_replayed_to_a_stream_with_tool_calls() -> None:
    provider = Streamer(["x"])
    pipe, _, _, cache = cached_pipeline(provider)
    call = chat_call("m", principal=TEAM)
    body = answer("")
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}
    body["choices"][0]["finish_reason"] = "tool_calls"
    from lockgate.pipeline.cache import cache_key
    await cache.put(cache_key(call, call.body), body)
    chunks, facts = await drain(pipe, stream_call())
    assert facts.cache == "hit" and provider.calls == 0
    calls = [tc for c in chunks if c["choices"]
             for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls == [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_an_interrupted_or_abandoned_stream_never_fills_the_cache() -> None:
    provider = Streamer(["a ", "b ", "c"], fail_after=1,
                        error=ProviderError("stream_cut", "upstream stream broke off"))
    pipe, sink, _, _ = cached_pipeline(provider)
    stream = await pipe.chat_stream(stream_call())
    with pytest.raises(GatewayError) as err:
        async for _ in stream:
            pass
    assert err.value.status == 502
    await settle()
    # the client hangs up after the first chunk
    provider.fail_after = None
    stream = await pipe.chat_stream(stream_call())
    await stream.__anext__()
    await stream.aclose()
    await settle()
    assert sink.records[-1].status == 499
    _, facts = await drain(pipe, stream_call())  # neither filled the cache
    assert facts.cache == "miss" and provider.stream_calls == 3
    await settle()
    _, facts = await drain(pipe, stream_call())  # the completed one did
    assert facts.cache == "hit" and provider.stream_calls == 3


async def test_no_cache_bypasses_streams_too() -> None:
    provider = Streamer(["a"])
    pipe, _, _, _ = cached_pipeline(provider)
    await drain(pipe, stream_call())
    await settle()
    _, facts = await drain(pipe, stream_call(no_cache=True))
    assert facts.cache == "bypass" and provider.stream_calls == 2


# ------------------------------------------------------------------ contracts


def contract_controls(stream_mode: str | None = None, default: str = "end") -> Controls:
    entry: dict[str, Any] = SCHEMA if stream_mode is None else {"schema": SCHEMA,
                                                                "stream": stream_mode}
    guards = Guards(GuardsConfig(contracts={"triage@1": entry}, contract_stream=default))
    return Controls(guards=guards)


def with_contract(call: Call, contract: str = "triage@1") -> Call:
    call.body["metadata"] = {"contract": contract}
    return call


async def test_end_mode_a_valid_stream_ends_normally() -> None:
    provider = Streamer(['{"label"', ': "bug"}'])
    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                   controls=contract_controls())
    chunks, _ = await drain(pipe, with_contract(stream_call()))
    assert orjson.loads(content(chunks)) == {"label": "bug"}
    assert sink.records[-1].status == 200
    assert "metadata" not in provider.bodies[0]


async def test_end_mode_a_violation_ends_the_stream_with_an_error_after_the_chunks() -> None:
    provider = Streamer(["not ", "json"])
    pipe, sink, metrics = build_pipeline({"m": [target(deployment("m"), provider)]},
                                         controls=contract_controls())
    stream = await pipe.chat_stream(with_contract(stream_call()))
    got: list[StreamChunk] = []
    with pytest.raises(ContractViolation) as err:
        async for chunk in stream:
            got.append(chunk)
    assert content(got) == "not json"  # the chunks went out, then the error
    assert err.value.status == 502 and err.value.facts is stream.facts
    assert provider.calls == 1  # no repair once bytes have gone out
    assert (sink.records[-1].status, sink.records[-1].error_class) == (
        502, "output_contract_failed")
    assert metric(metrics, "lockgate_guard_actions_total",
                  {"guard": "contract", "action": "failed"}) == 1


async def test_an_inline_response_format_contract_applies_to_streams() -> None:
    provider = Streamer(["{}"])
    pipe, _, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                controls=contract_controls())
    call = stream_call()
    call.body["response_format"] = {"type": "json_schema",
                                    "json_schema": {"name": "t", "schema": SCHEMA}}
    stream = await pipe.chat_stream(call)
    with pytest.raises(ContractViolation):
        async for _ in stream:
            pass


async def test_buffer_mode_repairs_before_streaming_the_validated_answer() -> None:
    provider = Streamer(["unused"], answers=["not json", GOOD])
    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                   controls=contract_controls("buffer"))
    stream = await pipe.chat_stream(with_contract(stream_call(usage=True)))
    assert stream.facts.contract_repaired  # known before the first byte (headers)
    chunks = [c async for c in stream]
    assert content(chunks) == GOOD
    assert provider.stream_calls == 0 and provider.calls == 2
    assert chunks[-1]["usage"]["prompt_tokens"] == 6  # both upstream calls counted
    assert (sink.records[-1].status, sink.records[-1].prompt_tokens) == (200, 6)


async def test_buffer_mode_still_invalid_fails_before_the_stream() -> None:
    provider = Streamer(["unused"], answers=["nope", "still nope"])
    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                   controls=contract_controls(default="buffer"))
    with pytest.raises(ContractViolation):
        await pipe.chat_stream(with_contract(stream_call()))
    assert sink.records[-1].status == 502


async def test_a_cache_hit_is_validated_against_the_contract() -> None:
    provider = Streamer(["plain ", "text"], answers=["not json", GOOD])
    guards = contract_controls("buffer").guards
    pipe, _, _, _ = cached_pipeline(provider, guards=guards)
    # a call without a contract fills the cache with plain text (metadata is not in the key)
    first = await pipe.chat(chat_call("m", principal=TEAM))
    await settle()
    assert first.body["choices"][0]["message"]["content"] == "not json"
    # with the contract, that hit is invalid: a miss, the upstream is asked
    result = await pipe.chat(with_contract(chat_call("m", principal=TEAM)))
    assert result.facts is not None and result.facts.cache == "miss"
    assert result.body["choices"][0]["message"]["content"] == GOOD
    await settle()
    # the validated answer replaced the entry: the next contract call is a valid hit,
    # and so is a stream (replayed after validation)
    again = await pipe.chat(with_contract(chat_call("m", principal=TEAM)))
    assert again.facts is not None and again.facts.cache == "hit"
    chunks, facts = await drain(pipe, with_contract(stream_call()))
    assert facts.cache == "hit" and content(chunks) == GOOD
    assert provider.calls == 2 and provider.stream_calls == 0


async def test_a_stream_hit_that_breaks_the_contract_is_a_miss() -> None:
    provider = Streamer(["plain ", "text"])
    pipe, _, _, _ = cached_pipeline(provider, guards=contract_controls().guards)
    await drain(pipe, stream_call())  # no contract: fills the cache with plain text
    await settle()
    _, facts = await drain(pipe, stream_call())
    assert facts.cache == "hit" and provider.stream_calls == 1
    provider.parts = ['{"label": ', '"x"}']
    chunks, facts = await drain(pipe, with_contract(stream_call()))
    assert facts.cache == "miss" and provider.stream_calls == 2  # the hit was not valid
    assert orjson.loads(content(chunks)) == {"label": "x"}
    await settle()
    _, facts = await drain(pipe, with_contract(stream_call()))  # the valid answer replaced it
    assert facts.cache == "hit" and provider.stream_calls == 2


# ------------------------------------------------------------------ shadow


@dataclass
class RecordingMirror:
    models: set[str] = field(default_factory=lambda: {"m"})
    seen: list[tuple[str, dict[str, Any], Usage]] = field(default_factory=list)

    def mirrors(self, model: str) -> bool:
        return model in self.models

    def maybe_mirror(self, call: Call, facts: Any, body: dict[str, Any], answer: Any,
                     cost: float) -> None:
        self.seen.append((call.request_id, answer.body, answer.usage))

    async def aclose(self) -> None:
        return None


async def test_the_mirror_gets_the_assembled_stream_after_it_ended() -> None:
    mirror = RecordingMirror()
    provider = Streamer(["one ", "two"])
    pipe, _, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                controls=Controls(mirror=mirror))
    stream = await pipe.chat_stream(stream_call())
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        assert mirror.seen == []  # never before the stream ended
    assert len(mirror.seen) == 1
    _, body, usage = mirror.seen[0]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "one two"
    assert usage == Usage(4, 2)
    # a failed stream is not mirrored; a model without a route is not assembled
    cut = Streamer(["a", "b"], fail_after=1, error=ProviderError("stream_cut", "cut"))
    pipe2, _, _ = build_pipeline({"m": [target(deployment("m"), cut)]},
                                 controls=Controls(mirror=mirror))
    with pytest.raises(GatewayError):
        async for _ in await pipe2.chat_stream(stream_call()):
            pass
    mirror.models.clear()
    await drain(pipe, stream_call())
    assert len(mirror.seen) == 1


# ------------------------------------------------------------------ failures


class FakeTicket:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.version = None
        self.done = False
        self.settled: list[tuple[int, float]] = []
        self.released = 0

    async def settle(self, tokens: int | None = None, cost: float | None = None) -> None:
        self.done = True
        self.settled.append((tokens or 0, cost or 0.0))

    async def release(self) -> None:
        self.done = True
        self.released += 1


class FakeLimits:
    active = True
    default_max_tokens = 1024
    max_tokens_field = "max_tokens"
    media_tokens = 0

    def __init__(self) -> None:
        self.tickets: list[FakeTicket] = []

    async def admit(self, call: Call, deps: Any, count_prompt: Any = None) -> FakeTicket:
        self.tickets.append(FakeTicket())
        return self.tickets[-1]

    async def top_up(self, call: Call, tokens: int, cost: float) -> None:
        return None


async def test_an_unexpected_exception_mid_stream_is_a_500_error_audited_and_settled() -> None:
    limits = FakeLimits()
    provider = Streamer(["a ", "b ", "c"], fail_after=1, error=RuntimeError("a bug"))
    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                   controls=Controls(limits=limits))  # type: ignore[arg-type]
    stream = await pipe.chat_stream(stream_call())
    with pytest.raises(GatewayError) as err:
        async for _ in stream:
            pass
    assert (err.value.status, err.value.code) == (500, "internal_error")
    assert "a bug" not in err.value.message  # internals stay in the log
    assert (sink.records[-1].status, sink.records[-1].error_class) == (500, "internal_error")
    await settle()
    ticket = limits.tickets[0]
    assert ticket.done and ticket.settled  # settled at the estimate: text went out


async def test_an_unexpected_exception_before_the_stream_releases_the_reservation() -> None:
    limits = FakeLimits()

    class Broken(FakeProvider):
        async def chat(self, body: dict[str, Any]) -> Completion:
            raise KeyError("bug")

        async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
            raise KeyError("bug")
            yield {}  # pragma: no cover

    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), Broken())]},
                                   controls=Controls(limits=limits))  # type: ignore[arg-type]
    for run in (pipe.chat_stream(stream_call()), pipe.chat(chat_call("m", principal=TEAM))):
        with pytest.raises(GatewayError) as err:
            await run
        assert (err.value.status, err.value.code) == (500, "internal_error")
        assert err.value.facts is not None
    await settle()
    assert [t.released for t in limits.tickets] == [1, 1]
    assert [(r.status, r.error_class) for r in sink.records] == [
        (500, "internal_error"), (500, "internal_error")]


async def test_junk_usage_from_an_upstream_is_a_502_audited_and_released() -> None:
    limits = FakeLimits()

    class JunkUsage(FakeProvider):
        async def chat(self, body: dict[str, Any]) -> Completion:
            self.bodies.append(body)
            return Completion(answer("x"), Usage.from_openai({"prompt_tokens": "12"}))

    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), JunkUsage())]},
                                   controls=Controls(limits=limits))  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as err:
        await pipe.chat(chat_call("m", principal=TEAM))
    assert err.value.status == 502 and "usage.prompt_tokens" in err.value.message
    await settle()
    assert limits.tickets[0].released == 1 and sink.records[-1].status == 502

    stream_limits = FakeLimits()
    streamer = Streamer(["a ", "b"], usage={"prompt_tokens": -3})
    pipe2, sink2, _ = build_pipeline({"m": [target(deployment("m"), streamer)]},
                                     controls=Controls(limits=stream_limits))  # type: ignore[arg-type]
    stream = await pipe2.chat_stream(stream_call(usage=True))
    with pytest.raises(GatewayError) as err2:
        async for _ in stream:
            pass
    assert err2.value.status == 502 and "negative" in err2.value.message
    await settle()
    assert sink2.records[-1].status == 502 and stream_limits.tickets[0].done
