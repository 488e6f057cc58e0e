"""Provider for Anthropic's Messages API (``provider: anthropic``).

Takes OpenAI requests, sends ``POST {base_url}/v1/messages`` with ``x-api-key`` and
``anthropic-version: 2023-06-01``, and returns OpenAI answers and chunks, translated by
:mod:`lockgate.formats.anthropic` (see there for what does not translate). HTTP, pooling,
timeouts and error mapping are shared with the OpenAI provider
(:mod:`lockgate.providers.upstream_http`). A stream ends at ``message_stop``; its last
chunk carries ``usage`` (``choices: []``). Anthropic has no embeddings API. A ``usage`` that
is not an object of plausible token counts is ``ProviderError('bad_response')`` (502).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from yarl import URL

from lockgate.formats.anthropic import (
    AnthropicToOpenAIStream,
    TranslationError,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
)
from lockgate.providers.base import (
    Completion,
    ErrorKind,
    ProviderError,
    StreamChunk,
    Usage,
    check_usage,
)
from lockgate.providers.upstream_http import UpstreamHTTP
from lockgate.settings import ModelDeployment

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_BASE_URL", "AnthropicProvider"]

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                 "cache_read_input_tokens")

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"

_STREAM_ERROR_KINDS: dict[str, tuple[ErrorKind, int | None]] = {
    "overloaded_error": ("server_error", 529),
    "api_error": ("server_error", 500),
    "rate_limit_error": ("rate_limited", 429),
    "invalid_request_error": ("bad_request", 400),
    "authentication_error": ("auth", 401),
    "permission_error": ("auth", 403),
    "billing_error": ("payment", 402),
    "not_found_error": ("not_found", 404),
}


def _messages_url(base: str) -> str:
    base = base.rstrip("/")
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


class AnthropicProvider:
    """One Anthropic deployment; speaks OpenAI to lockgate."""

    def __init__(self, deployment: ModelDeployment) -> None:
        self.deployment = deployment
        key = deployment.resolved_api_key()
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        self.model = deployment.model
        self.http = UpstreamHTTP(
            timeouts=deployment.timeouts,
            headers=headers,
            max_connections=deployment.max_concurrency,
        )
        self._url = URL(_messages_url(deployment.base_url or DEFAULT_BASE_URL))

    def _payload(self, body: dict[str, Any], *, stream: bool) -> bytes:
        try:
            request = openai_request_to_anthropic(body, self.model)
        except TranslationError as exc:
            raise ProviderError("bad_request", str(exc)) from None
        if stream:
            request["stream"] = True
        else:
            request.pop("stream", None)
        return orjson.dumps(request)

    async def chat(self, body: dict[str, Any]) -> Completion:
        _raw, doc = await self.http.post_json(self._url, self._payload(body, stream=False))
        if doc.get("type") != "message":
            raise ProviderError("bad_response", "Anthropic answer is not a message object")
        _check_usage(doc.get("usage"))
        try:
            completion = anthropic_response_to_openai(doc)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProviderError(
                "bad_response", f"Anthropic answer has an unexpected shape: {exc}"
            ) from None
        return Completion(body=completion, usage=Usage.from_openai(completion["usage"]))

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        payload = self._payload(body, stream=True)
        translator = AnthropicToOpenAIStream()
        async with aclosing(self.http.stream(self._url, payload)) as events:
            async for _name, data in events:
                try:
                    event = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise ProviderError(
                        "bad_response",
                        f"Anthropic sent a stream event that is not JSON: {data[:200]!r}",
                    ) from None
                if not isinstance(event, dict):
                    raise ProviderError("bad_response", "Anthropic stream event is not an object")
                etype = event.get("type")
                if etype == "error":
                    raise _stream_error(event.get("error"))
                if etype == "message_start":
                    message = event.get("message")
                    _check_usage(message.get("usage") if isinstance(message, dict) else None)
                elif etype == "message_delta":
                    _check_usage(event.get("usage"))
                try:
                    chunks = translator.feed(event)
                except (TypeError, ValueError, AttributeError) as exc:
                    raise ProviderError(
                        "bad_response", f"Anthropic stream event has an unexpected shape: {exc}"
                    ) from None
                for chunk in chunks:
                    yield chunk
                if translator.done:
                    return
        raise ProviderError("stream_cut", "Anthropic stream ended without message_stop")

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        raise ProviderError("bad_request", "anthropic has no embeddings API")

    async def aclose(self) -> None:
        await self.http.aclose()


def _check_usage(usage: Any) -> None:
    """Anthropic ``usage``: absent, or an object of plausible token counts (else 502)."""
    if usage is not None:
        check_usage(usage, _USAGE_FIELDS)


def _stream_error(err: Any) -> ProviderError:
    etype = str(err.get("type")) if isinstance(err, dict) else "api_error"
    message = str(err.get("message")) if isinstance(err, dict) else str(err)
    kind, status = _STREAM_ERROR_KINDS.get(etype, ("server_error", None))
    return ProviderError(
        kind, f"Anthropic stream error: {message} ({etype})", upstream_status=status
    )
