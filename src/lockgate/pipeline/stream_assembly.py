"""Streams <-> whole answers: assemble chunks into a ``chat.completion``, and replay one.

:class:`StreamAssembler` is fed the OpenAI ``chat.completion.chunk`` dicts of a stream as
they pass and builds the ``chat.completion`` document a non-stream call would have
returned (content, tool calls, refusal, finish reason per choice; ``usage`` when the
stream carried it). The pipeline uses it where a control needs the whole answer of a
stream: the output contract (validated when the stream ends), the response cache (a
completed stream fills it) and shadow traffic (the mirror gets the assembled answer).
It never raises on odd chunks: fields of the wrong type are skipped.

:func:`completion_chunks` goes the other way: the chunks that replay a finished answer
as a stream (a cache hit, or a ``buffer`` contract's validated answer), in OpenAI's
order: per choice a ``role`` + content chunk, a tool-calls chunk, a finish chunk; then,
when the client asked for ``stream_options.include_usage``, the usage chunk
(``choices: []``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lockgate.providers.base import StreamChunk

__all__ = ["StreamAssembler", "completion_chunks"]


@dataclass(slots=True)
class _Tool:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tools: dict[int, _Tool] = field(default_factory=dict)
    finish_reason: str | None = None


class StreamAssembler:
    """Feed every chunk with :meth:`feed`; :meth:`completion` is the whole answer."""

    __slots__ = ("_choices", "created", "fingerprint", "id", "model", "usage")

    def __init__(self) -> None:
        self.id: str | None = None
        self.created: int | None = None
        self.model: str | None = None
        self.fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}

    def feed(self, chunk: StreamChunk) -> None:
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if self.created is None and isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if self.fingerprint is None and isinstance(chunk.get("system_fingerprint"), str):
            self.fingerprint = chunk["system_fingerprint"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if isinstance(choice, dict):
                self._feed_choice(choice)

    def _feed_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index")
        idx = index if isinstance(index, int) and not isinstance(index, bool) else 0
        state = self._choices.get(idx)
        if state is None:
            state = self._choices[idx] = _Choice()
        delta = choice.get("delta")
        if isinstance(delta, dict):
            role = delta.get("role")
            if isinstance(role, str) and role:
                state.role = role
            content = delta.get("content")
            if isinstance(content, str) and content:
                state.content.append(content)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                state.refusal.append(refusal)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        _feed_tool(state, call)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            state.finish_reason = finish

    def completion(self) -> dict[str, Any]:
        """The ``chat.completion`` document of everything fed so far."""
        choices = []
        for idx in sorted(self._choices):
            state = self._choices[idx]
            message: dict[str, Any] = {
                "role": state.role,
                "content": "".join(state.content) if state.content or not state.tools else None,
            }
            if state.refusal:
                message["refusal"] = "".join(state.refusal)
            if state.tools:
                message["tool_calls"] = [
                    {
                        "id": tool.id,
                        "type": tool.type,
                        "function": {"name": tool.name, "arguments": "".join(tool.arguments)},
                    }
                    for _, tool in sorted(state.tools.items())
                ]
            choices.append({"index": idx, "message": message,
                            "finish_reason": state.finish_reason, "logprobs": None})
        out: dict[str, Any] = {
            "id": self.id or "chatcmpl-lockgate",
            "object": "chat.completion",
            "created": self.created if self.created is not None else int(time.time()),
            "model": self.model,
            "choices": choices,
        }
        if self.fingerprint is not None:
            out["system_fingerprint"] = self.fingerprint
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def _feed_tool(state: _Choice, call: dict[str, Any]) -> None:
    index = call.get("index")
    oi = index if isinstance(index, int) and not isinstance(index, bool) else len(state.tools)
    tool = state.tools.get(oi)
    if tool is None:
        tool = state.tools[oi] = _Tool()
    if isinstance(call.get("id"), str):
        tool.id = call["id"]
    if isinstance(call.get("type"), str):
        tool.type = call["type"]
    fn = call.get("function")
    if isinstance(fn, dict):
        name = fn.get("name")
        if isinstance(name, str) and name:
            tool.name = name
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            tool.arguments.append(args)


def completion_chunks(
    body: dict[str, Any], *, usage: dict[str, Any] | None = None
) -> list[StreamChunk]:
    """The chunks that replay the ``chat.completion`` ``body`` as an OpenAI stream; with
    ``usage`` (the client asked for ``include_usage``) a last usage chunk carries it."""
    base: dict[str, Any] = {
        "id": body.get("id") if isinstance(body.get("id"), str) else "chatcmpl-lockgate",
        "object": "chat.completion.chunk",
        "created": body.get("created") if isinstance(body.get("created"), int)
        else int(time.time()),
        "model": body.get("model"),
    }
    if "system_fingerprint" in body:
        base["system_fingerprint"] = body["system_fingerprint"]
    out: list[StreamChunk] = []

    def chunk(idx: int, delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
        choice = {"index": idx, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    choices = body.get("choices")
    for pos, choice in enumerate(choices if isinstance(choices, list) else []):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index")
        idx = index if isinstance(index, int) and not isinstance(index, bool) else pos
        message = choice.get("message")
        msg = message if isinstance(message, dict) else {}
        content = msg.get("content")
        role = msg.get("role") if isinstance(msg.get("role"), str) else "assistant"
        first: dict[str, Any] = {"role": role,
                                 "content": content if isinstance(content, str) else ""}
        if isinstance(msg.get("refusal"), str):
            first["refusal"] = msg["refusal"]
        out.append(chunk(idx, first))
        calls = msg.get("tool_calls")
        if isinstance(calls, list) and calls:
            deltas = []
            for j, call in enumerate(calls):
                if not isinstance(call, dict):
                    continue
                raw_fn = call.get("function")
                fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
                deltas.append({
                    "index": j,
                    "id": call.get("id"),
                    "type": call.get("type") or "function",
                    "function": {"name": fn.get("name"), "arguments": fn.get("arguments") or ""},
                })
            if deltas:
                out.append(chunk(idx, {"tool_calls": deltas}))
        finish = choice.get("finish_reason")
        out.append(chunk(idx, {}, finish if isinstance(finish, str) else "stop"))
    if usage is not None:
        out.append({**base, "choices": [], "usage": usage})
    return out
