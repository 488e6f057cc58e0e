"""Assembling a stream into a chat.completion, replaying one as chunks; contract settings."""

from __future__ import annotations

from typing import Any

import pytest

from lockgate.errors import ConfigError
from lockgate.guards import ContractRegistry, Guards
from lockgate.pipeline.stream_assembly import StreamAssembler, completion_chunks
from lockgate.settings.guards import GuardsConfig

BASE = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "m",
        "system_fingerprint": "fp"}


def ch(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {**BASE, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_text_tool_calls_and_usage_are_assembled() -> None:
    a = StreamAssembler()
    for chunk in [
        ch({"role": "assistant", "content": ""}),
        ch({"content": "Hel"}), ch({"content": "lo"}),
        ch({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                            "function": {"name": "f", "arguments": ""}}]}),
        ch({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
        ch({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        ch({"content": "x"}, index=1), ch({}, "stop", index=1),
        ch({}, "tool_calls"),
        {**BASE, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
    ]:
        a.feed(chunk)
    out = a.completion()
    assert (out["id"], out["object"], out["created"], out["model"]) == (
        "chatcmpl-9", "chat.completion", 7, "m")
    assert out["system_fingerprint"] == "fp"
    first, second = out["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hello", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    assert first["finish_reason"] == "tool_calls"
    assert (second["index"], second["message"]["content"], second["finish_reason"]) == (
        1, "x", "stop")
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 3}


def test_odd_chunks_are_skipped_not_fatal() -> None:
    a = StreamAssembler()
    for junk in [{"choices": "x"}, {"choices": [1, None]}, {"choices": [{"delta": "x"}]},
                 {"choices": [{"index": True, "delta": {"content": 5,
                                                        "tool_calls": ["x", {"index": "y"}]}}]},
                 {"usage": "x"}]:
        a.feed(junk)
    out = a.completion()
    assert out["object"] == "chat.completion" and "usage" not in out


def test_replay_round_trips_through_the_assembler() -> None:
    a = StreamAssembler()
    for chunk in [ch({"role": "assistant", "content": "Hi there"}),
                  ch({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                      "function": {"name": "g", "arguments": "{}"}}]}),
                  ch({}, "tool_calls")]:
        a.feed(chunk)
    body = a.completion()
    replay = completion_chunks(body, usage={"prompt_tokens": 1, "completion_tokens": 2,
                                            "total_tokens": 3})
    assert replay[-1]["choices"] == [] and replay[-1]["usage"]["total_tokens"] == 3
    b = StreamAssembler()
    for chunk in replay:
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"] == "chatcmpl-9"
        b.feed(chunk)
    again = b.completion()
    assert again["choices"] == body["choices"]
    assert "usage" not in completion_chunks(body)[-1]


def test_contract_entries_may_choose_their_stream_mode() -> None:
    schema = {"type": "object"}
    cfg = GuardsConfig(contracts={"a@1": schema, "b@1": {"schema": schema, "stream": "buffer"},
                                  "c@1": {"schema": schema}},
                       contract_stream="buffer")
    reg = Guards(cfg).contracts
    assert reg.get("a@1").stream is None  # the default applies
    assert reg.get("b@1").stream == "buffer" and reg.get("b@1").schema == schema
    assert reg.get("c@1").stream is None and reg.get("c@1").schema == schema
    assert cfg.contract_stream == "buffer"
    with pytest.raises(ValueError, match="stream must be"):
        GuardsConfig(contracts={"d@1": {"schema": schema, "stream": "sometimes"}})
    with pytest.raises(ConfigError, match="stream must be"):
        ContractRegistry.build({"d@1": {"schema": schema, "stream": "later"}})
    with pytest.raises(ValueError):
        GuardsConfig(contract_stream="always")  # type: ignore[arg-type]
