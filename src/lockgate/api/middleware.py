"""Pure ASGI middleware: a request id and the overhead header on every response, and a
body-read timeout.

Model routes set ``x-lockgate-overhead-ms`` themselves (they subtract upstream
time); for every other response the whole handling time is overhead.

While the request body is incomplete, every wait for the next piece of it is bounded by
``body_timeout`` seconds (``server.body_timeout_seconds``): a client that sends less than its
Content-Length, or stalls mid-upload, gets a 408 instead of holding the request forever.
Once the body is complete, ``receive`` is passed through untouched (a streaming response
waits on it for the disconnect).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lockgate.errors import GatewayError
from lockgate.observability.logging import bind_request
from lockgate.pipeline.call import new_request_id

DEFAULT_BODY_TIMEOUT = 30.0


class BodyReadTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"

_RID = b"x-request-id"
_OVH = b"x-lockgate-overhead-ms"

__all__ = ["BodyReadTimeout", "RequestIdMiddleware", "add_request_headers", "bounded_receive",
           "start_request"]


def start_request(scope: Scope) -> tuple[str, float]:
    """Give the request its id and start its overhead clock (``scope["state"]``); every log
    line of the current task carries the id from now on."""
    started = time.perf_counter()
    rid = new_request_id()
    state = scope.setdefault("state", {})
    state["request_id"] = rid
    state["started"] = started
    bind_request(request_id=rid)
    return rid, started


def add_request_headers(headers: list[tuple[bytes, bytes]], rid: str, started: float) -> None:
    """Append ``x-request-id`` and ``x-lockgate-overhead-ms`` unless already set."""
    has_rid = has_ovh = False
    for raw, _ in headers:
        name = raw.lower()
        if name == _RID:
            has_rid = True
        elif name == _OVH:
            has_ovh = True
    if not has_rid:
        headers.append((_RID, rid.encode()))
    if not has_ovh:
        ms = (time.perf_counter() - started) * 1000.0
        headers.append((_OVH, f"{ms:.3f}".encode()))


class _Expiry:
    """Cancels ``task`` when fired (a body-read deadline); remembers that it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


def bounded_receive(receive: Receive, timeout: float) -> Receive:
    """``receive`` whose waits for the next piece of an incomplete body are bounded by
    ``timeout`` seconds (then :class:`BodyReadTimeout`); passed through once it is complete."""
    body_done = False
    # uvicorn's receive is a bound method of the request's cycle, whose ``more_body`` is
    # False once the whole body is in memory: nothing left to wait for, no deadline to arm
    cycle = getattr(receive, "__self__", None)

    async def receive_with_timeout() -> Message:
        nonlocal body_done
        if body_done or getattr(cycle, "more_body", True) is False:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message
        # asyncio.timeout's own bookkeeping cost ~3.5 us per request; this is its core
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        expired = _Expiry(task)
        timer = task.get_loop().call_later(timeout, expired.fire)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if expired.fired and task.uncancel() <= cancelling:
                body_done = True
                raise BodyReadTimeout(
                    f"The request body did not arrive within {timeout:g} s "
                    "(shorter than its Content-Length, or stalled).") from None
            raise
        else:
            if expired.fired:  # fired as the body arrived: take our cancel request back
                task.uncancel()
        finally:
            timer.cancel()
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return receive_with_timeout


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> None:
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, started = start_request(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                add_request_headers(headers, rid, started)
                message["headers"] = headers
            await send(message)

        await self.app(scope, bounded_receive(receive, self.body_timeout), send_with_headers)
