"""OpenAI-compatible routes: /v1/chat/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.api.disconnect import chat_call, chat_stream_call
from lockgate.api.event_stream import EventStream
from lockgate.api.rag_identity import end_user_of
from lockgate.api.request_io import (
    api_key_of,
    error_response,
    json_response,
    read_json,
    request_id_of,
    started_of,
)
from lockgate.api.review_gate import review_policy_of, reviewed_chat
from lockgate.errors import GatewayError
from lockgate.guards.request_guards import INJECTION_HEADER, PII_HEADER
from lockgate.pipeline import Call, Pipeline
from lockgate.pipeline.cache import wants_no_cache
from lockgate.pipeline.call import Principal, new_request_id
from lockgate.pipeline.facts import CallFacts
from lockgate.pipeline.validate import model_of
from lockgate.providers.base import StreamChunk
from lockgate.runtime import Runtime

router = APIRouter()
log = logging.getLogger(__name__)

_DONE = b"data: [DONE]\n\n"


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def facts_headers(facts: CallFacts | None, call: Call | None = None) -> dict[str, str]:
    """The response headers for what the pipeline reports about a call.

    ``x-request-id``, ``x-lockgate-overhead-ms``, ``x-lockgate-deployment``, OpenAI's
    ``x-ratelimit-*``, ``x-lockgate-cache`` (hit/miss/bypass), ``x-lockgate-kill-switch``,
    ``x-lockgate-contract-repaired``, ``x-lockgate-pii`` and ``x-lockgate-injection``.
    Without facts (the call failed before the pipeline saw it) only the request id.
    """
    if facts is None:
        return {"x-request-id": call.request_id} if call is not None else {}
    headers = {
        "x-request-id": facts.request_id,
        "x-lockgate-overhead-ms": f"{facts.overhead_ms():.3f}",
    }
    if facts.deployment:
        headers["x-lockgate-deployment"] = facts.deployment
    if facts.rate_limits:
        headers.update(facts.rate_limits)
    if facts.cache:
        headers["x-lockgate-cache"] = facts.cache
    if facts.kill_switch:
        headers["x-lockgate-kill-switch"] = facts.kill_switch
    if facts.contract_repaired:
        headers["x-lockgate-contract-repaired"] = "1"
    if facts.pii_entities:
        headers[PII_HEADER] = ",".join(facts.pii_entities)
    if facts.injection:
        headers[INJECTION_HEADER] = facts.injection
    return headers


def error_headers(exc: GatewayError, call: Call | None) -> dict[str, str] | None:
    facts = exc.facts if isinstance(exc.facts, CallFacts) else None
    if facts is None and call is None:
        return None
    return facts_headers(facts, call)


async def build_call(request: Request, rt: Runtime, kind: str) -> Call:
    body = await read_json(request, rt.config.server.max_body_bytes)
    call = Call(
        kind="chat" if kind == "chat" else "embeddings",
        model=model_of(body),
        body=body,
        api_key=api_key_of(request),
        request_id=request_id_of(request) or new_request_id(),
        started=started_of(request),
        task=request.headers.get("x-lockgate-task"),
        no_cache=wants_no_cache(request.headers.get("cache-control")),
        end_user=body.get("user") if isinstance(body.get("user"), str) else None,
        acting_for=end_user_of(request, rt.config.rag),
    )
    return call


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    rt = _runtime(request)
    call: Call | None = None
    try:
        call = await build_call(request, rt, "chat")
        reviewed = review_policy_of(rt, call)
        if reviewed is not None:
            return await reviewed_chat(rt, call, *reviewed, facts_headers)
        if call.body.get("stream") is True:
            stream = await chat_stream_call(request, rt.pipeline, call)
            return EventStream(sse_events(stream, call.request_id),
                               headers=facts_headers(stream.facts))
        result = await chat_call(request, rt.pipeline, call)
        return json_response(result.raw or result.body, headers=facts_headers(result.facts))
    except GatewayError as exc:
        return error_response(exc, error_headers(exc, call))


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    rt = _runtime(request)
    call: Call | None = None
    try:
        call = await build_call(request, rt, "embeddings")
        result = await rt.pipeline.embeddings(call)
        return json_response(result.raw or result.body, headers=facts_headers(result.facts))
    except GatewayError as exc:
        return error_response(exc, error_headers(exc, call))


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    rt = _runtime(request)
    try:
        principal = await rt.pipeline.authenticate(api_key_of(request))
    except GatewayError as exc:
        return error_response(exc)
    return json_response(await models_payload(rt.pipeline, principal))


async def models_payload(pipeline: Pipeline, principal: Principal) -> dict[str, object]:
    """Every model the key may use, RAG collections (``rag/<name>``) included."""
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "lockgate"}
            for name in await pipeline.list_models(principal)
        ],
    }


async def sse_events(
    stream: AsyncIterator[StreamChunk], request_id: str | None = None
) -> AsyncIterator[bytes]:
    """Render chunks as SSE; any failure mid-stream becomes an error event (OpenAI's error
    object), never ``[DONE]`` and never a dropped connection. Failures that are not a
    GatewayError (the pipeline turns its own into one; this is the last line) are logged
    and sent as a 500 ``internal_error``."""
    try:
        async for chunk in stream:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except GatewayError as exc:
        yield b"data: " + exc.body_bytes() + b"\n\n"
        return
    except Exception:
        log.exception("stream %s failed", request_id or "?")
        await close_quietly(stream)  # the pipeline audits and settles now, not at GC
        yield b"data: " + _stream_internal_error(request_id).body_bytes() + b"\n\n"
        return
    yield _DONE


async def close_quietly(stream: object) -> None:
    """Close a chunk iterator after a failure in the adapter (its cleanup must not raise)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.exception("closing a failed stream failed")


def _stream_internal_error(request_id: str | None) -> GatewayError:
    which = f" {request_id}" if request_id else ""
    return GatewayError(f"lockgate could not complete the stream{which} because of an "
                        "internal error (it has been logged).", status=500,
                        code="internal_error")
