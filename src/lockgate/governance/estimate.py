"""Token counts for reservations: the prompt bound, the completion cap, and the call's estimate.

A reservation must never be smaller than what the call can cost, or concurrent
calls overshoot a budget. Two parts make that true:

* **Completion.** :func:`completion_cap` is the most completion tokens a call
  may produce: the request's ``max_tokens`` / ``max_completion_tokens`` (times
  ``n``), else ``governance.default_max_tokens``, which the pipeline then sends
  upstream as ``max_tokens`` so the model is held to what was reserved.
* **Prompt.** Where a deployment has its tokenizer offline (llama.cpp models,
  embedded embedding models) the pipeline counts the prompt exactly and passes
  the count in. Elsewhere :func:`prompt_tokens_bound` is used: the UTF-8 bytes
  of every text the model reads, plus :data:`PER_MESSAGE_TOKENS` a message and
  :data:`PER_REQUEST_TOKENS` a request for the chat template. Every token of a
  byte-level BPE (OpenAI, Llama 3, Qwen, Mistral, Claude-style) or of a
  SentencePiece vocabulary with byte fallback covers at least one byte, so the
  bound is never below the true count for such tokenizers and templates that
  add at most that much framing. Images, audio and files are the exception:
  each such part is reserved at ``governance.media_tokens`` (a vision model may
  charge more; see docs/governance.md).

:func:`tokens_for_chars` / :func:`tokens_for_text` remain as the 4-characters-a-
token *estimate* for previews (batch cost preview); they are not a bound and are
not used for reservations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_MEDIA_TOKENS",
    "MEDIA_PART_TYPES",
    "PER_MESSAGE_TOKENS",
    "PER_REQUEST_TOKENS",
    "Estimate",
    "completion_cap",
    "estimate_call",
    "prompt_tokens_bound",
    "prompt_tokens_estimate",
    "requested_completion_limit",
    "text_tokens_bound",
    "tokens_for_chars",
    "tokens_for_text",
]

CHARS_PER_TOKEN = 4
PER_MESSAGE_TOKENS = 8
"""Template framing allowed per chat message (role markers, separators)."""
PER_REQUEST_TOKENS = 16
"""Template framing allowed per chat request (start of reply, tool preamble)."""
PER_TEXT_TOKENS = 2
"""Special tokens an embeddings model may add around each input ([CLS]/[SEP])."""
DEFAULT_MEDIA_TOKENS = 1536
MEDIA_PART_TYPES = frozenset(
    {"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file",
     "document"}
)


def tokens_for_chars(chars: int) -> int:
    """Estimated tokens of ``chars`` characters of text (rounded up; 0 for none)."""
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def tokens_for_text(text: str) -> int:
    """Estimated tokens of ``text`` (see :func:`tokens_for_chars`)."""
    return tokens_for_chars(len(text))


def text_tokens_bound(text: str) -> int:
    """An upper bound on the tokens of ``text`` for byte-covering tokenizers: its UTF-8 bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens: int
    """Prompt + completion tokens to reserve."""
    cost: float
    """Currency units to reserve."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def requested_completion_limit(body: Mapping[str, Any]) -> int | None:
    """The completion cap the request itself sets (the larger if both fields are given)."""
    caps: list[int] = [v for v in (body.get("max_tokens"), body.get("max_completion_tokens"))
                       if isinstance(v, int) and _is_count(v)]
    return max(caps) if caps else None


def completion_cap(body: Mapping[str, Any], default_max_tokens: int) -> int:
    """Most completion tokens the call can produce (0 for embeddings)."""
    if "messages" not in body and "input" in body:
        return 0
    cap = requested_completion_limit(body) or default_max_tokens
    n = body.get("n")
    return cap * n if isinstance(n, int) and _is_count(n) else cap


def _walk_bytes(value: Any, *, keys: bool, media_tokens: int) -> int:
    """UTF-8 bytes of every string (and number) under ``value``; media parts at a flat rate.

    Iterative, so a deeply nested body cannot exhaust the recursion limit.
    ``keys``: count mapping keys too (tool schemas name properties by key).
    """
    total = 0
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += text_tokens_bound(v)
        elif isinstance(v, Mapping):
            kind = v.get("type")
            if isinstance(kind, str) and kind in MEDIA_PART_TYPES:
                total += media_tokens
                continue
            if keys:
                total += sum(text_tokens_bound(str(k)) + 1 for k in v)
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, bool) or v is None:
            total += 1 if keys else 0
        elif isinstance(v, int | float):
            total += len(str(v))
    return total


def _input_bound(inp: Any) -> int:
    """Embeddings ``input``: texts by bytes (+ special tokens), token arrays by length."""
    if isinstance(inp, str):
        return text_tokens_bound(inp) + PER_TEXT_TOKENS
    if isinstance(inp, list):
        if all(isinstance(t, int) and not isinstance(t, bool) for t in inp):
            return len(inp)
        return sum(_input_bound(t) for t in inp)
    return 0


def prompt_tokens_bound(
    body: Mapping[str, Any], *, media_tokens: int = DEFAULT_MEDIA_TOKENS
) -> int:
    """Upper bound on the prompt tokens of an OpenAI chat/embeddings body (see module docs)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        total = PER_REQUEST_TOKENS + PER_MESSAGE_TOKENS * len(messages)
        total += _walk_bytes(messages, keys=False, media_tokens=media_tokens)
        for field in ("tools", "functions", "response_format", "tool_choice"):
            extra = body.get(field)
            if extra is not None and not isinstance(extra, str):
                total += _walk_bytes(extra, keys=True, media_tokens=media_tokens)
        tools = body.get("tools")
        if isinstance(tools, list):
            total += PER_MESSAGE_TOKENS * len(tools)
        return total
    if "input" in body:
        return _input_bound(body.get("input"))
    prompt = body.get("prompt")
    return _input_bound(prompt) if prompt is not None else 0


def _text_len(value: Any) -> int:
    stack: list[Any] = [value]
    total = 0
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, Mapping):
            text = v.get("text")
            if isinstance(text, str):
                total += len(text)
            else:
                stack.extend(x for k, x in v.items() if k in ("content", "arguments"))
    return total


def prompt_tokens_estimate(body: Mapping[str, Any]) -> int:
    """Rough prompt tokens (4 chars a token, +4 a message): a preview, not a bound."""
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
    prompt_tokens: int | None = None,
    media_tokens: int = DEFAULT_MEDIA_TOKENS,
) -> Estimate:
    """Tokens and cost to reserve for ``body``: never less than the call can cost.

    ``prices`` are ``(input_per_mtok, output_per_mtok)`` of the deployments the
    call may reach; the highest of each is used. No prices: cost 0.
    ``prompt_tokens``: an exact count (the model's tokenizer), else the bound.
    """
    prompt = (prompt_tokens if prompt_tokens is not None
              else prompt_tokens_bound(body, media_tokens=media_tokens))
    completion = completion_cap(body, default_max_tokens)
    pin = pout = 0.0
    for i, o in prices:
        pin, pout = max(pin, i), max(pout, o)
    cost = (prompt * pin + completion * pout) / 1e6
    return Estimate(tokens=prompt + completion, cost=cost, prompt_tokens=prompt,
                    completion_tokens=completion)
