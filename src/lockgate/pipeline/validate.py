"""Check the types of the request fields lockgate (or a translation) reads; unknown fields
pass through untouched.

Hand-written rather than a schema library: this runs on every chat call. Every check
tests the type *before* any membership test or arithmetic, so a list where a string
belongs is a 400 (never an "unhashable type" 500), and ``True`` is not an integer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lockgate.errors import BadRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_TOKENS_LIMIT = 2**31 - 1
"""The largest ``max_tokens`` accepted (it is stored and priced as a 32-bit integer)."""


def _bad(param: str, message: str, code: str = "invalid_value") -> BadRequest:
    return BadRequest(f"'{param}' {message}", param=param, code=code)


def is_int(value: Any) -> bool:
    """An integer that is not a boolean (``isinstance(True, int)`` holds in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    v = body.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                          or not low <= v <= high):
        raise _bad(name, f"must be a number from {low:g} to {high:g}.")


def _positive_int(body: dict[str, Any], name: str, high: int = MAX_TOKENS_LIMIT) -> None:
    v = body.get(name)
    if v is not None and (not is_int(v) or not 1 <= v <= high):
        raise _bad(name, f"must be an integer from 1 to {high}.")


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    v = body.get(name)
    if v is not None and not isinstance(v, kind):
        raise _bad(name, f"must be {what}.", "invalid_type")


def _check_content(where: str, content: Any) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or an array of content parts.",
                   "invalid_type")
    for j, part in enumerate(content):
        if isinstance(part, str):
            continue
        p = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(p, "must be an object with a string 'type'.", "invalid_type")
        ptype = part["type"]
        if ptype == "text" and not isinstance(part.get("text"), str):
            raise _bad(f"{p}.text", "must be a string.", "invalid_type")
        if ptype == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _bad(f"{p}.image_url", "must be an object with a string 'url'.",
                           "invalid_type")
        if ptype == "file" and not isinstance(part.get("file", {}), dict):
            raise _bad(f"{p}.file", "must be an object.", "invalid_type")


def _check_tool_calls(where: str, calls: Any) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls", "must be an array.", "invalid_type")
    for j, call in enumerate(calls):
        p = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise _bad(p, "must be an object with a 'function' object.", "invalid_type")
        if not isinstance(fn.get("name", ""), str):
            raise _bad(f"{p}.function.name", "must be a string.", "invalid_type")
        if not isinstance(fn.get("arguments", ""), str | dict):
            raise _bad(f"{p}.function.arguments", "must be a string (JSON).", "invalid_type")
        if not isinstance(call.get("id", ""), str):
            raise _bad(f"{p}.id", "must be a string.", "invalid_type")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "'messages' is required and must be a non-empty array.",
            param="messages", code="invalid_value",
        )
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in _ROLES:
            raise BadRequest(
                f"messages[{i}] must be an object with a valid 'role' "
                f"(one of {', '.join(sorted(_ROLES))}).",
                param=f"messages[{i}].role", code="invalid_value",
            )
        # the usual message is a role and a string: its checks without calls or f-strings
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            _check_content(f"messages[{i}]", content)
        if len(m) > 2 or content is None:
            _check_tool_calls(f"messages[{i}]", m.get("tool_calls"))
            for name in ("name", "tool_call_id"):
                if not isinstance(m.get(name, ""), str | None):
                    raise _bad(f"messages[{i}].{name}", "must be a string.", "invalid_type")


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools", "must be an array of tool objects.", "invalid_type")
        for i, t in enumerate(tools):
            fn = t.get("function", {}) if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(t.get("type", "function"), str):
                raise _bad(f"tools[{i}]", "must be an object with a 'function' object.",
                           "invalid_type")
            if not isinstance(fn.get("parameters", {}), dict | None):
                raise _bad(f"tools[{i}].function.parameters", "must be an object.",
                           "invalid_type")
    choice = body.get("tool_choice")
    if choice is not None and not (isinstance(choice, str) or (
            isinstance(choice, dict) and isinstance(choice.get("function", {}), dict))):
        raise _bad("tool_choice", "must be a string or an object.", "invalid_type")


def _check_stream(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream", code="invalid_type")


def _check_stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("stop", "must be a string or an array of strings.", "invalid_type")


_CHAT_FIELD_CHECKS: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any]], None]], ...] = (
    (("max_tokens",), lambda b: _positive_int(b, "max_tokens")),
    (("max_completion_tokens",), lambda b: _positive_int(b, "max_completion_tokens")),
    (("n",), lambda b: _positive_int(b, "n", 128)),
    (("stream",), _check_stream),
    (("temperature",), lambda b: _number(b, "temperature", 0, 2)),
    (("top_p",), lambda b: _number(b, "top_p", 0, 1)),
    (("presence_penalty",), lambda b: _number(b, "presence_penalty", -2, 2)),
    (("frequency_penalty",), lambda b: _number(b, "frequency_penalty", -2, 2)),
    (("stop",), _check_stop),
    (("user",), lambda b: _optional(b, "user", str, "a string")),
    (("stream_options",), lambda b: _optional(b, "stream_options", dict, "an object")),
    (("response_format",), lambda b: _optional(b, "response_format", dict, "an object")),
    (("parallel_tool_calls",),
     lambda b: _optional(b, "parallel_tool_calls", bool, "a boolean")),
    (("tools", "tool_choice"), _check_tools),
)
"""The chat body's field checks in the order they run (so the first error reported is the
same whatever else is wrong), each with the fields it reads: it runs only when the body has
one of them (an absent field always passes its check)."""


def check_chat_body(body: dict[str, Any]) -> None:
    _check_messages(body.get("messages"))
    if len(body) <= 2 and "model" in body:  # model and messages: nothing else to check
        return
    for fields, check in _CHAT_FIELD_CHECKS:
        for name in fields:
            if name in body:
                check(body)
                break


def check_embeddings_body(body: dict[str, Any]) -> None:
    inp = body.get("input")
    ok = isinstance(inp, str) or (isinstance(inp, list) and bool(inp) and (
        all(isinstance(x, str) for x in inp)
        or all(is_int(x) for x in inp)
        or all(isinstance(x, list) and x and all(is_int(t) for t in x) for x in inp)))
    if not ok:
        raise BadRequest(
            "'input' is required: a string, an array of strings, or token arrays.",
            param="input", code="invalid_value",
        )
    _positive_int(body, "dimensions", 65536)
    _optional(body, "encoding_format", str, "a string")
    _optional(body, "user", str, "a string")


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required.", param="model", code="missing_required_parameter")
    return model
