"""OpenAI-compatible routes: /v1/chat/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from lockgate.api.rag_identity import end_user_of
from lockgate.api.request_io import (
    api_key_of,
    error_response,
    json_response,
    read_json,
    request_id_of,
    started_of,
)
from lockgate.errors import GatewayError
from lockgate.pipeline import Call, Pipeline
from lockgate.pipeline.cache import wants_no_cache
from lockgate.pipeline.call import Principal, new_request_id
from lockgate.pipeline.validate import model_of
from lockgate.providers.base import StreamChunk
from lockgate.runtime import Runtime

router = APIRouter()

_DONE = b"data: [DONE]\n\n"


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def call_headers(call: Call) -> dict[str, str]:
    headers = {
        "x-request-id": call.request_id,
        "x-lockgate-overhead-ms": f"{call.overhead_ms():.3f}",
    }
    if call.deployment:
        headers["x-lockgate-deployment"] = call.deployment
    if call.response_headers:
        headers.update(call.response_headers)
    return headers


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
        if call.body.get("stream") is True:
            stream = await rt.pipeline.chat_stream(call)
            return StreamingResponse(
                sse_events(stream), media_type="text/event-stream", headers=call_headers(call)
            )
        result = await rt.pipeline.chat(call)
        return json_response(result.raw or result.body, headers=call_headers(call))
    except GatewayError as exc:
        return error_response(exc, call_headers(call) if call else None)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    rt = _runtime(request)
    call: Call | None = None
    try:
        call = await build_call(request, rt, "embeddings")
        result = await rt.pipeline.embeddings(call)
        return json_response(result.raw or result.body, headers=call_headers(call))
    except GatewayError as exc:
        return error_response(exc, call_headers(call) if call else None)


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


async def sse_events(stream: AsyncIterator[StreamChunk]) -> AsyncIterator[bytes]:
    """Render chunks as SSE; a failure mid-stream becomes an error event, never [DONE]."""
    try:
        async for chunk in stream:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except GatewayError as exc:
        yield b"data: " + exc.body_bytes() + b"\n\n"
        return
    yield _DONE
