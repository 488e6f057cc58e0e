"""The answer to use once a person decided: the completion with an edit applied."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["with_output"]


def with_output(body: dict[str, Any], output: Any) -> dict[str, Any]:
    """The completion with its message content replaced by a reviewer's corrected output."""
    text = output if isinstance(output, str) else orjson.dumps(output).decode()
    if isinstance(output, dict) and set(output) == {"text"} and isinstance(output["text"], str):
        text = output["text"]
    out = dict(body)
    choices = list(out.get("choices") or [{}])
    first = dict(choices[0]) if isinstance(choices[0], dict) else {}
    first["message"] = {**(first.get("message") or {}), "role": "assistant", "content": text}
    first.pop("logprobs", None)
    choices[0] = first
    out["choices"] = choices
    return out
