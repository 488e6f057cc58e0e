"""Check only the request fields the pipeline reads; everything else passes through."""

from __future__ import annotations

from typing import Any

from lockgate.errors import BadRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def check_chat_body(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "'messages' is required and must be a non-empty array.",
            param="messages", code="invalid_value",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise BadRequest(
                f"messages[{i}] must be an object with a valid 'role'.",
                param=f"messages[{i}].role", code="invalid_value",
            )
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("'max_tokens' must be a positive integer.", param="max_tokens",
                         code="invalid_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream", code="invalid_type")


def check_embeddings_body(body: dict[str, Any]) -> None:
    inp = body.get("input")
    ok = isinstance(inp, str) or (
        isinstance(inp, list) and inp and all(isinstance(x, (str, int, list)) for x in inp)
    )
    if not ok:
        raise BadRequest(
            "'input' is required: a string or a non-empty array of strings.",
            param="input", code="invalid_value",
        )


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required.", param="model", code="missing_required_parameter")
    return model
