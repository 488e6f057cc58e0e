"""Comparison: do the primary and the candidate say the same thing?

``text_match`` is equality of the normalised texts (whitespace collapsed, case
folded); ``json_match`` is equality of the parsed JSON documents when both texts
parse as JSON (a ```json fence is allowed), else None (not comparable).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["compare", "completion_text"]

_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def completion_text(doc: Mapping[str, Any]) -> str | None:
    """The first choice's text (tool calls as JSON) of an OpenAI chat completion."""
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if message.get("tool_calls"):
        return orjson.dumps(message["tool_calls"]).decode()
    return None


def _normalise(text: str) -> str:
    return _WS.sub(" ", text).strip().casefold()


def _json_of(text: str) -> tuple[bool, Any]:
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped or stripped[0] not in "{[":
        return False, None
    try:
        return True, orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return False, None


def compare(primary: str | None, candidate: str | None) -> tuple[bool | None, bool | None]:
    """``(text_match, json_match)``; None where not comparable (missing text / not JSON)."""
    if primary is None or candidate is None:
        return None, None
    text_match = _normalise(primary) == _normalise(candidate)
    ok_a, doc_a = _json_of(primary)
    ok_b, doc_b = _json_of(candidate)
    return text_match, (doc_a == doc_b) if ok_a and ok_b else None
