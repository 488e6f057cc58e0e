"""Errors rendered in the shape of the API the client called, with the request id.

Shared by the FastAPI exception handlers (server.py) and the lean model routes
(:mod:`lockgate.api.lean`), so both answer an unexpected failure identically:
:func:`gateway_error_of` turns what a handler raised into a client-visible
:class:`~lockgate.errors.GatewayError` (logging the ones that are lockgate's fault) and
:func:`render_error` writes it in Anthropic's shape on ``/v1/messages``, OpenAI's elsewhere.
"""

from __future__ import annotations

import structlog
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from lockgate.api import anthropic
from lockgate.api.admin import store_error
from lockgate.api.request_io import error_response
from lockgate.errors import BadRequest, GatewayError
from lockgate.store import StoreError

__all__ = ["gateway_error_of", "render_error"]

log = structlog.get_logger("lockgate.server")


def gateway_error_of(exc: Exception, path: str) -> GatewayError:
    """The client-visible error for an exception a route handler let through."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, StoreError):
        return store_error(exc)
    if isinstance(exc, ClientDisconnect):
        # the client is gone (e.g. mid-upload): nothing to fix on our side, nobody to answer
        log.info("lockgate.client_disconnected", path=path)
        return BadRequest("The client disconnected before the request body was complete.",
                          code="client_disconnected")
    log.exception("lockgate.unhandled", path=path, exc_info=exc)
    return GatewayError("Internal error in lockgate; see the server log.", status=500,
                        code="internal_error")


def render_error(path: str, request_id: str, exc: GatewayError) -> Response:
    """An error in the shape of the API the client called (Anthropic's on /v1/messages),
    always carrying the request id."""
    headers = {"x-request-id": request_id} if request_id else None
    if path.rstrip("/") == anthropic.MESSAGES_PATH:
        return anthropic.anthropic_error(exc, headers)
    return error_response(exc, headers)
