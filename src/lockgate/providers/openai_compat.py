"""Provider for any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama-server, ...).

Request bodies pass through as plain dicts serialised with orjson; only
``model`` is replaced by the deployment's upstream model id, and streams always
ask for ``stream_options.include_usage`` so usage is counted. Non-stream
answers keep the upstream bytes in :attr:`Completion.raw`.

A stream yields every upstream chunk dict as parsed, including the final
usage-only chunk (``choices: []``) that ``include_usage`` produces; the HTTP
adapter drops that chunk when its client did not ask for usage.

Upstream junk is a ``ProviderError('bad_response')`` (a 502 for the client, an audit
row, the budget reservation released), never a crash: ``choices`` that is not a list
of objects, a ``delta`` that is not an object, or ``usage`` that is not an object of
plausible token counts (:func:`lockgate.providers.base.token_count`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from lockgate.providers.base import Completion, ProviderError, StreamChunk, Usage
from lockgate.providers.upstream_http import UpstreamHTTP, join_url, kind_for_status
from lockgate.settings import ModelDeployment

__all__ = ["OpenAICompatProvider"]

_DONE = b"[DONE]"


class OpenAICompatProvider:
    """One OpenAI-compatible deployment (``provider: openai`` with ``base_url``)."""

    def __init__(self, deployment: ModelDeployment) -> None:
        self.deployment = deployment
        base = deployment.base_url or "https://api.openai.com/v1"
        key = deployment.resolved_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.model = deployment.model
        self.http = UpstreamHTTP(
            timeouts=deployment.timeouts,
            headers=headers,
            max_connections=deployment.max_concurrency,
        )
        self._chat_url = join_url(base, "chat/completions")
        self._embeddings_url = join_url(base, "embeddings")

    def _payload(self, body: dict[str, Any], *, stream: bool) -> bytes:
        out = dict(body)
        if self.model:
            out["model"] = self.model
        if stream:
            out["stream"] = True
            opts = out.get("stream_options")
            out["stream_options"] = (
                {**opts, "include_usage": True}
                if isinstance(opts, dict)
                else {"include_usage": True}
            )
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        return orjson.dumps(out)

    async def chat(self, body: dict[str, Any]) -> Completion:
        raw, doc = await self.http.post_json(self._chat_url, self._payload(body, stream=False))
        if "choices" not in doc:
            raise _missing(doc, "choices")
        _check_choices(doc.get("choices"), "message")
        return Completion(body=doc, usage=Usage.from_openai(doc.get("usage")), raw=raw)

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        payload = self._payload(body, stream=True)
        async with aclosing(self.http.stream(self._chat_url, payload)) as events:
            async for _event, data in events:
                if data == _DONE:
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise ProviderError(
                        "bad_response",
                        f"upstream sent a stream event that is not JSON: {data[:200]!r}",
                    ) from None
                if not isinstance(chunk, dict):
                    raise ProviderError("bad_response", "upstream stream event is not an object")
                err = chunk.get("error")
                if err is not None and "choices" not in chunk:
                    raise _stream_error(err)
                _check_choices(chunk.get("choices"), "delta")
                usage = chunk.get("usage")
                if usage is not None:
                    Usage.from_openai(usage)  # raises on junk
                yield chunk
        raise ProviderError("stream_cut", "upstream stream ended without [DONE]")

    async def embeddings(self, body: dict[str, Any]) -> Completion:
        raw, doc = await self.http.post_json(
            self._embeddings_url, self._payload(body, stream=False)
        )
        if "data" not in doc:
            raise _missing(doc, "data")
        return Completion(body=doc, usage=Usage.from_openai(doc.get("usage")), raw=raw)

    async def aclose(self) -> None:
        await self.http.aclose()


def _check_choices(choices: Any, part: str) -> None:
    """``choices`` must be a list of objects whose ``message``/``delta`` is an object."""
    if choices is None:
        return
    if not isinstance(choices, list):
        raise ProviderError("bad_response", "upstream 'choices' is not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            raise ProviderError("bad_response", "upstream 'choices' holds a non-object")
        inner = choice.get(part)
        if inner is not None and not isinstance(inner, dict):
            raise ProviderError("bad_response", f"upstream choice '{part}' is not an object")


def _missing(doc: dict[str, Any], field: str) -> ProviderError:
    """A 200 answer without its payload: an error object some servers send with 200, or junk."""
    if doc.get("error") is not None:
        return _stream_error(doc["error"])
    return ProviderError("bad_response", f"upstream answer has no '{field}'")


def _stream_error(err: Any) -> ProviderError:
    """An error object sent inside a stream (vLLM, OpenRouter and others do this)."""
    if isinstance(err, dict):
        message = str(err.get("message") or err)
        code = err.get("code")
        status = code if isinstance(code, int) else None
    else:
        message, status = str(err), None
    kind = kind_for_status(status) if status else "server_error"
    return ProviderError(kind, f"upstream stream error: {message}", upstream_status=status)
