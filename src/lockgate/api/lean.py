"""The lean ASGI path: the model routes without FastAPI's per-request machinery.

``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``POST /v1/messages`` are
the hot path: each costs a share of a millisecond of CPU, and FastAPI/Starlette's routing
(a regex per route, in order), dependency solving, exception-middleware stack and the
request-id middleware's ``send`` wrapper were about a third of it (bench/RESULTS.md).
:class:`LeanGateway` is the FastAPI app itself with one change: its ``__call__`` serves
exactly those method+path pairs (no ``root_path``) itself, calling their handlers, and
sends everything else (admin, RAG, jobs, reviews, ``/metrics``, the same paths with another
method or a trailing slash, lifespan) through FastAPI as before.

What holds (the same as through FastAPI, proved by tests/gateway, tests/review, tests/fuzz,
tests/audit and tests/governance, which run against the real server): the same handler
functions (:mod:`lockgate.api.openai`, :mod:`lockgate.api.anthropic`), so the review gate,
disconnect handling, metrics and audit are untouched; a request id and the overhead clock
from the first byte (:func:`~lockgate.api.middleware.start_request`); the body-read timeout
(408); ``x-request-id`` and ``x-lockgate-overhead-ms`` on every answer; an exception a
handler lets through rendered exactly as the FastAPI handlers render it
(:mod:`lockgate.api.error_render`: 400 ``client_disconnected``, the store's status, or a
logged 500 ``internal_error``, in Anthropic's shape on ``/v1/messages``).

What differs: nothing a client can see. The routes stay declared on FastAPI too, so the
OpenAPI document and the schemathesis fuzz still describe them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lockgate.api import anthropic, openai
from lockgate.api.error_render import gateway_error_of, render_error
from lockgate.api.lean_request import LeanRequest
from lockgate.api.middleware import (
    DEFAULT_BODY_TIMEOUT,
    add_request_headers,
    bounded_receive,
    start_request,
)

__all__ = ["LEAN_ROUTES", "LeanGateway"]

Handler = Callable[[Request], Awaitable[Response]]

LEAN_ROUTES: Final[dict[str, Handler]] = {
    "/v1/chat/completions": openai.chat_completions,
    "/v1/embeddings": openai.embeddings,
    anthropic.MESSAGES_PATH: anthropic.messages,
}
"""``POST`` paths served by :meth:`LeanGateway.__call__` itself (exact match)."""


class LeanGateway(FastAPI):
    """FastAPI, except that :data:`LEAN_ROUTES` skip routing, dependencies and middleware."""

    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """Seconds to wait for the next piece of an incomplete request body (then 408)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = LEAN_ROUTES.get(scope["path"])
            if handler is not None:
                # one model-route request: what RequestIdMiddleware and the exception
                # handlers would do around ``handler``, inline (no coroutine of its own)
                rid, started = start_request(scope)
                scope["app"] = self  # handlers find the runtime on request.app.state
                receive = bounded_receive(receive, self.body_timeout)
                try:
                    response = await handler(LeanRequest(scope, receive))
                except Exception as exc:
                    path: str = scope["path"]
                    response = render_error(path, rid, gateway_error_of(exc, path))
                add_request_headers(response.raw_headers, rid, started)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
