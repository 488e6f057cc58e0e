"""Anthropic-compatible front door: ``POST /v1/messages`` onto the same pipeline.

The request is translated to OpenAI's shape (lockgate's canonical format), run
through the pipeline like any other call, and the answer (or stream) translated
back. Errors use Anthropic's error shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.api.disconnect import chat_call, chat_stream_call
from lockgate.api.event_stream import EventStream
from lockgate.api.openai import close_quietly, error_headers, facts_headers
from lockgate.api.rag_identity import end_user_of
from lockgate.api.request_io import JSON, api_key_of, read_json, request_id_of
from lockgate.api.review_gate import review_call, review_policy_of
from lockgate.errors import BadRequest, GatewayError
from lockgate.formats.anthropic import (
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_error_body,
    anthropic_request_to_openai,
    encode_anthropic_event,
    openai_response_to_anthropic,
)
from lockgate.formats.anthropic_request import BadAnthropicRequest, check_messages_request
from lockgate.pipeline import Call
from lockgate.pipeline.cache import wants_no_cache
from lockgate.pipeline.call import new_request_id
from lockgate.providers.base import StreamChunk
from lockgate.runtime import Runtime

router = APIRouter()
log = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def anthropic_error(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """Anthropic's error shape (``{"type": "error", "error": {"type", "message"}}``)."""
    kind = _ERROR_TYPES.get(exc.status,
                            "invalid_request_error" if exc.status < 500 else "api_error")
    return Response(
        orjson.dumps(anthropic_error_body(exc.message, kind)),
        status_code=exc.status, media_type=JSON, headers={**exc.headers, **(headers or {})},
    )


@router.post(MESSAGES_PATH)
async def messages(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    call: Call | None = None
    try:
        body = await read_json(request, rt.config.server.max_body_bytes)
        try:
            check_messages_request(body)  # the shape first: translation trusts it
            oa_body = anthropic_request_to_openai(body)
        except BadAnthropicRequest as exc:
            raise BadRequest(str(exc), param=exc.param) from None
        except TranslationError as exc:
            raise BadRequest(str(exc)) from None
        model: str = body["model"]
        stream = bool(body.get("stream"))
        if stream:
            oa_body["stream"] = True
            oa_body["stream_options"] = {"include_usage": True}
        call = Call(
            kind="chat", model=model, body=oa_body, api_key=api_key_of(request),
            request_id=request_id_of(request) or new_request_id(),
            task=request.headers.get("x-lockgate-task"),
            no_cache=wants_no_cache(request.headers.get("cache-control")),
            acting_for=end_user_of(request, rt.config.rag),
        )
        reviewed = review_policy_of(rt, call)
        if reviewed is not None:  # a person may have to decide first (docs/review.md)
            out = await review_call(rt, call, *reviewed, facts_headers)
            if out.state == "rejected":
                return anthropic_error(out.rejection(), out.headers)
            if out.state == "pending":
                assert out.item is not None
                return Response(orjson.dumps(out.item.public(time.time())), status_code=202,
                                media_type=JSON, headers=out.headers)
            assert out.completion is not None
            return Response(orjson.dumps(openai_response_to_anthropic(out.completion, model)),
                            media_type=JSON, headers=out.headers)
        if stream:
            chunks = await chat_stream_call(request, rt.pipeline, call)
            return EventStream(anthropic_events(chunks, model, call.request_id),
                               headers=facts_headers(chunks.facts))
        result = await chat_call(request, rt.pipeline, call)
        return Response(orjson.dumps(openai_response_to_anthropic(result.body, model)),
                        media_type=JSON, headers=facts_headers(result.facts))
    except GatewayError as exc:
        return anthropic_error(exc, error_headers(exc, call))


async def anthropic_events(
    chunks: AsyncIterator[StreamChunk], model: str, request_id: str | None = None
) -> AsyncIterator[bytes]:
    """OpenAI chunks -> Anthropic SSE events. Any failure mid-stream (a GatewayError, or
    anything else: logged, sent as ``api_error``) ends the stream with ``event: error``
    in Anthropic's shape, never with ``message_stop`` or a dropped connection."""
    translator = OpenAIToAnthropicStream(model)
    try:
        async for chunk in chunks:
            for name, data in translator.feed(chunk):
                yield encode_anthropic_event(name, data)
    except GatewayError as exc:
        for name, data in translator.error(exc.message, _ERROR_TYPES.get(exc.status,
                                                                         "api_error")):
            yield encode_anthropic_event(name, data)
        return
    except Exception:
        log.exception("stream %s failed", request_id or "?")
        await close_quietly(chunks)
        which = f" {request_id}" if request_id else ""
        message = (f"lockgate could not complete the stream{which} because of an internal "
                   "error (it has been logged).")
        for name, data in translator.error(message):
            yield encode_anthropic_event(name, data)
        return
    for name, data in translator.finish():
        yield encode_anthropic_event(name, data)
