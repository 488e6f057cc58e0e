"""Token estimates: the one text -> tokens rule, and reservation sizes built on it.

:func:`tokens_for_chars` / :func:`tokens_for_text` are lockgate's only offline
token estimate (4 characters a token, rounded up, so never below the
``len // 4`` a tokenizer-less count would give). The pipeline uses them for
streams whose upstream reports no usage, the batch runner for its cost preview.

A reservation must not be smaller than the call can cost, so :func:`estimate_call`
takes the prompt estimate plus the full ``max_tokens`` (or the configured default)
at the most expensive price of the model's deployments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "Estimate",
    "estimate_call",
    "prompt_tokens_estimate",
    "tokens_for_chars",
    "tokens_for_text",
]

CHARS_PER_TOKEN = 4


def tokens_for_chars(chars: int) -> int:
    """Estimated tokens of ``chars`` characters of text (rounded up; 0 for none)."""
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def tokens_for_text(text: str) -> int:
    """Estimated tokens of ``text`` (see :func:`tokens_for_chars`)."""
    return tokens_for_chars(len(text))


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens: int
    """Prompt + completion tokens to reserve."""
    cost: float
    """Currency units to reserve."""


def _text_len(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_len(v) for v in value)
    if isinstance(value, Mapping):
        text = value.get("text")
        if isinstance(text, str):
            return len(text)
        return sum(_text_len(v) for k, v in value.items() if k in ("content", "arguments"))
    return 0


def prompt_tokens_estimate(body: Mapping[str, Any]) -> int:
    """Rough prompt tokens of an OpenAI chat/embeddings body (4 chars a token, +4 a message)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_len(m) for m in messages)
        return tokens_for_chars(chars) + 4 * len(messages)
    inp = body.get("input")
    if inp is not None:
        return tokens_for_chars(_text_len(inp))
    prompt = body.get("prompt")
    return tokens_for_chars(_text_len(prompt)) if prompt is not None else 0


def estimate_call(
    body: Mapping[str, Any],
    *,
    default_max_tokens: int,
    prices: Iterable[tuple[float, float]] = (),
) -> Estimate:
    """Tokens and cost to reserve for ``body``.

    ``prices`` are ``(input_per_mtok, output_per_mtok)`` of the deployments the
    call may reach; the highest of each is used. No prices: cost 0.
    """
    prompt = prompt_tokens_estimate(body)
    raw = body.get("max_completion_tokens", body.get("max_tokens"))
    completion = raw if isinstance(raw, int) and raw > 0 else default_max_tokens
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        completion *= n
    if "messages" not in body and "input" in body:
        completion = 0  # embeddings produce no completion tokens
    pin = pout = 0.0
    for i, o in prices:
        pin, pout = max(pin, i), max(pout, o)
    cost = (prompt * pin + completion * pout) / 1e6
    return Estimate(tokens=prompt + completion, cost=cost)
