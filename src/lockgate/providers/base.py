"""The provider contract shared by every model backend.

Canonical wire format inside lockgate is OpenAI's: a non-stream chat answer is
an OpenAI ``chat.completion`` JSON document, a stream is a sequence of OpenAI
``chat.completion.chunk`` dicts. Providers that speak something else
(Anthropic, llama.cpp) translate at their edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

StreamChunk = dict[str, Any]
"""One OpenAI ``chat.completion.chunk`` object (already parsed)."""

ErrorKind = Literal[
    "rate_limited",  # upstream 429
    "server_error",  # upstream 5xx
    "bad_request",  # upstream 4xx other than 401/402/403/404/429
    "auth",  # upstream 401/403 (our credentials are wrong)
    "payment",  # upstream 402 (out of credit)
    "not_found",  # upstream 404 (model id wrong)
    "timeout_connect",
    "timeout_first_token",
    "timeout_idle",
    "timeout_total",
    "connection",  # refused, reset, DNS
    "stream_cut",  # the stream ended without a proper end marker
    "bad_response",  # unparseable body, or junk in it (e.g. usage that is not counts)
]


class ProviderError(Exception):
    """Any failure talking to a model server, classified for the pipeline."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after

    @property
    def is_timeout(self) -> bool:
        return self.kind.startswith("timeout")


MAX_TOKEN_COUNT = 1_000_000_000
"""The largest token count lockgate believes from an upstream (a billion)."""


def token_count(value: Any, name: str) -> int:
    """One upstream token count: absent/null is 0; otherwise a whole number in range.

    Raises ``ProviderError('bad_response')`` naming the field and the value for a bool,
    string, negative, fraction, NaN or a count above :data:`MAX_TOKEN_COUNT`.
    """
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:  # the usual answer
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_usage(f"usage.{name} is not a number", value)
    if isinstance(value, float):
        if not value.is_integer():
            raise _bad_usage(f"usage.{name} is not a whole number", value)
        value = int(value)
    if value < 0:
        raise _bad_usage(f"usage.{name} is negative", value)
    if value > MAX_TOKEN_COUNT:
        raise _bad_usage(f"usage.{name} is implausibly large", value)
    return int(value)


def check_usage(usage: Any, fields: tuple[str, ...]) -> dict[str, int]:
    """``{field: count}`` for an upstream ``usage`` object (see :func:`token_count`);
    ``ProviderError('bad_response')`` when ``usage`` is not an object or a count is junk."""
    if not isinstance(usage, dict):
        raise _bad_usage("usage is not an object", usage)
    return {f: token_count(usage.get(f), f) for f in fields}


def _bad_usage(what: str, value: Any) -> ProviderError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ProviderError("bad_response", f"upstream {what}: {shown}")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: Any) -> Usage:
        """OpenAI ``usage`` as sent by an upstream; junk raises ``ProviderError('bad_response')``.

        ``None`` (or a missing object) is zero usage. Anything else must be an object whose
        token counts are absent/null or whole numbers in ``[0, MAX_TOKEN_COUNT]`` (bools,
        strings, negatives, fractions and huge values are refused): a count lockgate would
        bill or settle a budget with must be believable.
        """
        if usage is None:
            return cls()
        checked = check_usage(usage, ("prompt_tokens", "completion_tokens", "total_tokens"))
        return cls(checked["prompt_tokens"], checked["completion_tokens"])


@dataclass(slots=True)
class Completion:
    """A finished (non-stream) answer in OpenAI JSON, plus what was counted."""

    body: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    raw: bytes | None = None
    """The upstream bytes when they can be sent to the client unchanged."""


class Provider(Protocol):
    """One configured deployment's backend."""

    async def chat(self, body: dict[str, Any]) -> Completion:
        """Run a non-stream chat completion. ``body`` is the OpenAI request."""
        ...

    def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Stream a chat completion as OpenAI chunks.

        Errors before the first chunk raise :class:`ProviderError` from the
        first ``__anext__``; a cut stream raises ``ProviderError('stream_cut')``
        after the chunks received so far. The final chunk carries ``usage``
        when the upstream reports it.
        """
        ...

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        """Run an OpenAI embeddings request."""
        ...

    async def aclose(self) -> None: ...


class PromptCounter(Protocol):
    """Optional: a provider that knows its model's tokenizer offline (llama.cpp, embedded).

    Budgets reserve the count instead of a bound, so a reservation is exact.
    """

    async def count_prompt_tokens(self, body: dict[str, Any]) -> int | None:
        """The ``prompt_tokens`` a call with ``body`` will report; None when unknown."""
        ...
