"""OpenAI <-> Anthropic Messages translation: pure functions and two stream translators.

Used in two directions:

* by :class:`~lockgate.providers.anthropic.AnthropicProvider` (lockgate speaks OpenAI inside):
  :func:`openai_request_to_anthropic`, :func:`anthropic_response_to_openai` and
  :class:`AnthropicToOpenAIStream` (Anthropic SSE events -> OpenAI chunks);
* by lockgate's Anthropic-compatible front door ``POST /v1/messages``:
  :func:`anthropic_request_to_openai`, :func:`openai_response_to_anthropic` and
  :class:`OpenAIToAnthropicStream` (OpenAI chunks -> Anthropic events, rendered with
  :func:`encode_anthropic_event`).

What translates: system prompt(s) (OpenAI ``system``/``developer`` messages anywhere <->
Anthropic top-level ``system``), user/assistant text, text and image parts (base64 data URLs
<-> ``base64`` image sources, http(s) URLs <-> ``url`` sources), PDF ``file`` parts <->
``document`` blocks (base64 only), tools <-> tool definitions, ``tool_choice``
(auto/required/none/named <-> auto/any/none/tool), ``parallel_tool_calls: false`` <->
``disable_parallel_tool_use``, assistant ``tool_calls`` <-> ``tool_use`` blocks, ``tool``
messages <-> ``tool_result`` blocks, ``stop`` <-> ``stop_sequences``, ``temperature``,
``top_p``, ``max_tokens``/``max_completion_tokens`` <-> ``max_tokens`` (Anthropic requires
it: :data:`DEFAULT_MAX_TOKENS` when absent), ``user`` <-> ``metadata.user_id``,
finish_reason <-> stop_reason, usage, and streams in both directions.

What does not translate (documented, deliberate):

* ``response_format`` (json_object / json_schema) has no Anthropic equivalent: it becomes an
  instruction appended to the system prompt ("answer with one JSON object [matching this
  schema]"); the answer is not guaranteed to be valid JSON.
* ``n`` > 1 raises :class:`TranslationError` (Anthropic returns one answer); so do the legacy
  ``functions``/``function_call`` fields (use ``tools``).
* ``temperature`` above 1 (OpenAI allows 0..2) is clamped to Anthropic's maximum of 1.
* Dropped silently: ``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``logprobs``,
  ``top_logprobs``, ``seed``, ``reasoning_effort``, ``service_tier``, ``audio``/``modalities``
  requests; Anthropic ``top_k``, ``cache_control`` markers, ``thinking`` config and
  thinking/redacted_thinking blocks; server tools (``web_search_...`` etc, which have no
  OpenAI equivalent) are dropped from the tool list.
* ``stop_reason: stop_sequence`` becomes ``finish_reason: stop``; the reverse direction always
  reports ``end_turn`` for ``stop`` (OpenAI does not say which stop sequence matched).
* Content kinds with no counterpart (``input_audio``, non-PDF or URL documents, ``search_result``
  blocks ...) raise :class:`TranslationError` rather than being lost.
* Anthropic cache token counts are added into ``prompt_tokens`` (``cache_read_input_tokens``
  also reported as ``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from lockgate.formats.json_limits import JsonTooDeep, loads_checked

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_error_body",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "anthropic_usage_to_openai",
    "encode_anthropic_event",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]

DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; used when an OpenAI request gives none."""

Json = dict[str, Any]

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class TranslationError(ValueError):
    """The request uses something the other side cannot express (a client error, 400)."""


# ====================================================================== shared pieces


def _parse_data_url(url: str) -> tuple[str, str]:
    """``data:<media>;base64,<data>`` -> (media type, base64 data)."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise TranslationError("only base64 data URLs can be translated")
    return head[5:-7] or "application/octet-stream", data


def _json_args(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    if not isinstance(arguments, str):
        raise TranslationError("tool call arguments must be a JSON string")
    try:
        value = loads_checked(arguments)
    except JsonTooDeep as exc:
        raise TranslationError(f"tool call arguments: {exc}") from None
    except orjson.JSONDecodeError:
        raise TranslationError("tool call arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise TranslationError("tool call arguments must be a JSON object")
    return value


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def anthropic_usage_to_openai(usage: Json | None) -> Json:
    """Anthropic ``usage`` -> OpenAI ``usage`` (cache tokens counted as prompt tokens)."""
    usage = usage or {}
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    prompt = (
        int(usage.get("input_tokens") or 0)
        + int(usage.get("cache_creation_input_tokens") or 0)
        + cache_read
    )
    completion = int(usage.get("output_tokens") or 0)
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


def anthropic_error_body(message: str, type: str = "api_error") -> Json:
    """Anthropic's error shape, for the front door."""
    return {"type": "error", "error": {"type": type, "message": message}}


def encode_anthropic_event(event: str, data: Json) -> bytes:
    """One Anthropic SSE frame: ``event: <name>\\ndata: <json>\\n\\n``."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# ====================================================================== OpenAI -> Anthropic


def _openai_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def _openai_part_to_block(part: Any) -> Json | None:
    if isinstance(part, str):
        return {"type": "text", "text": part} if part else None
    ptype = part.get("type")
    if ptype == "text":
        text = part.get("text") or ""
        return {"type": "text", "text": text} if text else None
    if ptype == "image_url":
        image = part.get("image_url") or {}
        url = image if isinstance(image, str) else str(image.get("url") or "")
        if url.startswith("data:"):
            media, data = _parse_data_url(url)
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media, "data": data},
            }
        if url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise TranslationError("image_url must be a data URL or an http(s) URL")
    if ptype == "file":
        f = part.get("file") or {}
        data_url = str(f.get("file_data") or "")
        if data_url.startswith("data:application/pdf"):
            media, data = _parse_data_url(data_url)
            return {
                "type": "document",
                "source": {"type": "base64", "media_type": media, "data": data},
            }
        raise TranslationError("only base64 PDF file parts can be sent to Anthropic")
    raise TranslationError(f"content part type '{ptype}' cannot be sent to Anthropic")


def _openai_content_to_blocks(content: Any) -> list[Json]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        block = _openai_part_to_block(part)
        if block is not None:
            blocks.append(block)
    return blocks


def _append(messages: list[Json], role: str, blocks: list[Json]) -> None:
    """Add blocks, merging with the previous message of the same role (Anthropic alternates)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tool_result_block(msg: Json) -> Json:
    content = msg.get("content")
    block: Json = {"type": "tool_result", "tool_use_id": str(msg.get("tool_call_id") or "")}
    if isinstance(content, list):
        parts = _openai_content_to_blocks(content)
        if parts:
            block["content"] = parts
    elif content:
        block["content"] = str(content)
    return block


def _response_format_instruction(fmt: Any) -> str | None:
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return "Answer with a single valid JSON object and nothing else."
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return (
            "Answer with a single valid JSON object and nothing else. It must match this "
            "JSON schema: " + _dumps(schema)
        )
    return None


def openai_request_to_anthropic(body: Json, model: str | None = None) -> Json:
    """An OpenAI chat request -> an Anthropic Messages request (``stream`` is carried over)."""
    if int(body.get("n") or 1) > 1:
        raise TranslationError("n > 1 is not supported by Anthropic models")
    if body.get("functions") or body.get("function_call"):
        raise TranslationError(
            "legacy 'functions'/'function_call' are not translated for Anthropic; use 'tools'"
        )
    system: list[str] = []
    messages: list[Json] = []
    for msg in body.get("messages") or []:
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _openai_text(msg.get("content"))
            if text:
                system.append(text)
        elif role == "user":
            _append(messages, "user", _openai_content_to_blocks(msg.get("content")))
        elif role == "assistant":
            blocks = _openai_content_to_blocks(msg.get("content"))
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or ""),
                        "name": str(fn.get("name") or ""),
                        "input": _json_args(fn.get("arguments")),
                    }
                )
            _append(messages, "assistant", blocks)
        elif role in ("tool", "function"):
            _append(messages, "user", [_tool_result_block(msg)])
        else:
            raise TranslationError(f"message role '{role}' cannot be sent to Anthropic")
    instruction = _response_format_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)

    out: Json = {
        "model": model or body.get("model"),
        "messages": messages,
        "max_tokens": int(
            body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        ),
    }
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # OpenAI 0..2, Anthropic 0..1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    tools = [
        t.get("function") or {}
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type", "function") == "function"
    ]
    choice = body.get("tool_choice")
    if tools:
        out["tools"] = [
            {
                **({"description": fn["description"]} if fn.get("description") else {}),
                "name": fn.get("name"),
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
            }
            for fn in tools
        ]
        tc: Json | None = None
        if choice == "required":
            tc = {"type": "any"}
        elif choice == "none":
            tc = {"type": "none"}
        elif choice == "auto":
            tc = {"type": "auto"}
        elif isinstance(choice, dict):
            tc = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
        if body.get("parallel_tool_calls") is False:
            tc = {**(tc or {"type": "auto"}), "disable_parallel_tool_use": True}
        if tc is not None:
            out["tool_choice"] = tc
    return out


def anthropic_response_to_openai(msg: Json, model: str | None = None) -> Json:
    """An Anthropic ``message`` -> an OpenAI ``chat.completion``."""
    texts: list[str] = []
    calls: list[Json] = []
    for block in msg.get("content") or []:
        btype = block.get("type")
        if btype == "text":
            texts.append(str(block.get("text") or ""))
        elif btype == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _dumps(block.get("input") or {}),
                    },
                }
            )
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(msg.get("id") or ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or msg.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_TO_FINISH.get(str(msg.get("stop_reason")), "stop"),
                "logprobs": None,
            }
        ],
        "usage": anthropic_usage_to_openai(msg.get("usage")),
    }


class AnthropicToOpenAIStream:
    """Anthropic stream events (parsed dicts) -> OpenAI ``chat.completion.chunk`` dicts.

    Feed every event in order with :meth:`feed`; it returns the chunks to emit. After
    ``message_stop`` the last chunk returned carries ``usage`` (``choices: []``), like an OpenAI
    stream with ``include_usage``, and :attr:`done` is True. ``error`` events are not handled
    here (the caller raises); ``ping`` and thinking deltas produce nothing.
    """

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.id = "chatcmpl-anthropic"
        self.created = int(time.time())
        self.done = False
        self.usage: Json = {}
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, event: Json) -> list[Json]:
        etype = event.get("type")
        if etype == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if dtype == "input_json_delta":
                idx = self._tool_index.get(int(event.get("index", 0)))
                if idx is None:
                    return []
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": idx,
                                    "function": {"arguments": delta.get("partial_json", "")},
                                }
                            ]
                        }
                    )
                ]
            return []
        if etype == "message_start":
            message = event.get("message") or {}
            self.id = "chatcmpl-" + str(message.get("id") or "")
            self.model = self.model or message.get("model")
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if etype == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = len(self._tool_index)
                self._tool_index[int(event.get("index", 0))] = idx
                call = {
                    "index": idx,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if etype == "message_delta":
            usage = event.get("usage") or {}
            for key, value in usage.items():
                if value is not None:
                    self.usage[key] = value
            reason = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, STOP_TO_FINISH.get(str(reason), "stop"))]
        if etype == "message_stop":
            self.done = True
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = anthropic_usage_to_openai(self.usage)
            return [chunk]
        return []


# ====================================================================== Anthropic -> OpenAI


def _anthropic_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
    )


def _anthropic_block_to_part(block: Json) -> Json | None:
    btype = block.get("type")
    if btype == "text":
        return {"type": "text", "text": block.get("text", "")}
    if btype == "image":
        src = block.get("source") or {}
        if src.get("type") == "base64":
            url = f"data:{src.get('media_type')};base64,{src.get('data')}"
        elif src.get("type") == "url":
            url = str(src.get("url"))
        else:
            raise TranslationError(f"image source type '{src.get('type')}' cannot be translated")
        return {"type": "image_url", "image_url": {"url": url}}
    if btype == "document":
        src = block.get("source") or {}
        if src.get("type") == "base64" and src.get("media_type") == "application/pdf":
            return {
                "type": "file",
                "file": {"file_data": f"data:application/pdf;base64,{src.get('data')}"},
            }
        if src.get("type") == "text":
            return {"type": "text", "text": str(src.get("data") or "")}
        raise TranslationError("only base64 PDF or text documents can be translated")
    if btype in ("thinking", "redacted_thinking"):
        return None
    raise TranslationError(f"content block type '{btype}' cannot be translated to OpenAI")


def _parts_or_text(parts: list[Json]) -> Any:
    """OpenAI content: a plain string when every part is text, else the part list."""
    if all(p.get("type") == "text" for p in parts):
        return "\n".join(str(p.get("text") or "") for p in parts)
    return parts


def anthropic_request_to_openai(body: Json) -> Json:
    """An Anthropic Messages request -> an OpenAI chat request (``stream`` asks for usage)."""
    messages: list[Json] = []
    system = body.get("system")
    if system:
        text = _anthropic_text(system)
        if text:
            messages.append({"role": "system", "content": text})
    for msg in body.get("messages") or []:
        role = msg.get("role")
        content = msg.get("content")
        if role not in ("user", "assistant"):
            raise TranslationError(f"message role '{role}' is not valid in Anthropic messages")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        parts: list[Json] = []
        calls: list[Json] = []
        for block in content or []:
            btype = block.get("type")
            if btype == "tool_result" and role == "user":
                result = block.get("content")
                if isinstance(result, list):
                    rparts = [p for p in map(_anthropic_block_to_part, result) if p is not None]
                    rcontent: Any = _parts_or_text(rparts)
                else:
                    rcontent = str(result or "")
                if block.get("is_error"):
                    rcontent = f"Error: {rcontent}" if isinstance(rcontent, str) else rcontent
                messages.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": rcontent}
                )
            elif btype == "tool_use" and role == "assistant":
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name"),
                            "arguments": _dumps(block.get("input") or {}),
                        },
                    }
                )
            else:
                part = _anthropic_block_to_part(block)
                if part is not None:
                    parts.append(part)
        if role == "assistant":
            out_msg: Json = {
                "role": "assistant",
                "content": _parts_or_text(parts) if parts else None,
            }
            if calls:
                out_msg["tool_calls"] = calls
            if parts or calls:
                messages.append(out_msg)
        elif parts:
            messages.append({"role": "user", "content": _parts_or_text(parts)})

    out: Json = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = str(user_id)
    tools = [t for t in body.get("tools") or [] if "input_schema" in t]
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    **({"description": t["description"]} if t.get("description") else {}),
                    "parameters": t.get("input_schema"),
                },
            }
            for t in tools
        ]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            ctype = choice.get("type")
            if ctype == "any":
                out["tool_choice"] = "required"
            elif ctype == "none":
                out["tool_choice"] = "none"
            elif ctype == "tool":
                out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
            elif ctype == "auto":
                out["tool_choice"] = "auto"
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    return out


def openai_response_to_anthropic(completion: Json, model: str | None = None) -> Json:
    """An OpenAI ``chat.completion`` -> an Anthropic ``message``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[Json] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = _json_args(fn.get("arguments"))
        except TranslationError:
            args = {"_raw_arguments": fn.get("arguments")}
        content.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}
        )
    usage = completion.get("usage") or {}
    cid = str(completion.get("id") or "")
    return {
        "id": cid if cid.startswith("msg_") else "msg_" + cid,
        "type": "message",
        "role": "assistant",
        "model": model or completion.get("model"),
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


class OpenAIToAnthropicStream:
    """OpenAI chunks -> Anthropic stream events ``(event name, data)``, in Anthropic's order.

    ``feed(chunk)`` for every chunk, then ``finish()`` once the OpenAI stream ended (after
    ``[DONE]``; the usage chunk may come after the finish_reason chunk, so the closing
    ``message_delta`` waits for it). Sequence produced: ``message_start``, then per content
    block ``content_block_start`` (the first one followed by ``ping``), its
    ``content_block_delta`` events (``text_delta`` or ``input_json_delta``),
    ``content_block_stop``; finally ``message_delta`` (stop_reason, usage) and
    ``message_stop``. :meth:`error` renders an ``error`` event for a stream cut midway.
    Tool calls are expected one after another (as OpenAI-compatible servers send them);
    argument fragments for a tool call whose block was already closed are dropped.
    Render each pair with :func:`encode_anthropic_event`.
    """

    def __init__(self, model: str | None = None, message_id: str | None = None) -> None:
        self.model = model
        self.message_id = message_id
        self.started = False
        self.finished = False
        self._pinged = False
        self._block_index = -1
        self._block_kind: str | None = None  # "text" | "tool"
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> block index
        self._stop_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0

    def _start(self, chunk: Json) -> list[tuple[str, Json]]:
        self.started = True
        cid = str(chunk.get("id") or "stream")
        mid = self.message_id or (cid if cid.startswith("msg_") else "msg_" + cid)
        return [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model or chunk.get("model"),
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
                    },
                },
            )
        ]

    def _close_block(self, out: list[tuple[str, Json]]) -> None:
        if self._block_kind is not None:
            out.append(
                ("content_block_stop", {"type": "content_block_stop", "index": self._block_index})
            )
            self._block_kind = None

    def _open_block(self, out: list[tuple[str, Json]], block: Json, kind: str) -> None:
        self._close_block(out)
        self._block_index += 1
        self._block_kind = kind
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._block_index, "content_block": block},
            )
        )
        if not self._pinged:
            self._pinged = True
            out.append(("ping", {"type": "ping"}))

    def _delta(self, out: list[tuple[str, Json]], delta: Json) -> None:
        out.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": self._block_index, "delta": delta},
            )
        )

    def feed(self, chunk: Json) -> list[tuple[str, Json]]:
        out: list[tuple[str, Json]] = [] if self.started else self._start(chunk)
        usage = chunk.get("usage")
        if usage:
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._block_kind != "text":
                    self._open_block(out, {"type": "text", "text": ""}, "text")
                self._delta(out, {"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                oi = int(call.get("index", 0))
                fn = call.get("function") or {}
                if oi not in self._tool_blocks:
                    block: Json = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{oi}",
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    self._open_block(out, block, "tool")
                    self._tool_blocks[oi] = self._block_index
                elif self._tool_blocks[oi] != self._block_index:
                    continue  # arguments for an already closed block: cannot be re-opened
                args = fn.get("arguments")
                if args:
                    self._delta(out, {"type": "input_json_delta", "partial_json": args})
            if choice.get("finish_reason"):
                self._stop_reason = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
        return out

    def finish(self) -> list[tuple[str, Json]]:
        """The closing events (call once, after the last chunk)."""
        if self.finished:
            return []
        self.finished = True
        out: list[tuple[str, Json]] = [] if self.started else self._start({})
        if self._block_index < 0:
            self._open_block(out, {"type": "text", "text": ""}, "text")
        self._close_block(out)
        out.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason or "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {
                        "input_tokens": self.input_tokens,
                        "output_tokens": self.output_tokens,
                    },
                },
            )
        )
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def error(self, message: str, type: str = "api_error") -> list[tuple[str, Json]]:
        """An ``error`` event (Anthropic's way to report a stream that broke off)."""
        self.finished = True
        return [("error", anthropic_error_body(message, type))]
