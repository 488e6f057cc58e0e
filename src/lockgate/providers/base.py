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
    "bad_response",  # unparseable body
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


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage:
        if not usage:
            return cls()
        return cls(
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )


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
