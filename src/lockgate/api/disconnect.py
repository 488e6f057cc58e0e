"""Stop a request's work when its client goes away.

A plain (non-stream) response is only written when the handler returns, so by
default a client that hangs up leaves its work running to the end. For work that
can be expensive (RAG retrieval, ``model: "rag/<collection>"``) the handler runs it
with :func:`unless_disconnected`: the work runs as a task while a watcher waits
for the ASGI ``http.disconnect`` message; when it arrives the task is cancelled at
its next ``await`` (between stages), and :class:`ClientGone` (a 499
``GatewayError``, so the handler's usual error path returns it; nobody reads it)
is raised. The pipeline records such a call as 499 ``client_disconnected``.

:func:`chat_call` is the non-stream chat of the OpenAI and Anthropic routes and
:func:`chat_stream_call` opens their streams: calls to
a virtual model (``rag/<collection>``) are watched, calls to configured models are
not (their upstream call is bounded by its timeouts, and the hot path stays lean).

Call it only after the request body has been read: the watcher consumes the
remaining ASGI ``receive`` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from lockgate.errors import GatewayError
from lockgate.pipeline import Call, Pipeline
from lockgate.pipeline.facts import Result, StreamResult

__all__ = [
    "CLIENT_CLOSED", "ClientGone", "chat_call", "chat_stream_call", "unless_disconnected",
]

T = TypeVar("T")

CLIENT_CLOSED = 499


class ClientGone(GatewayError):
    """The client disconnected before the answer was ready; the work was cancelled."""

    status = CLIENT_CLOSED
    type = "client_disconnected"
    code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("The client disconnected; the work was cancelled.")


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled (then :class:`ClientGone`) if the client disconnects first."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    watcher: asyncio.Future[None] = asyncio.ensure_future(_wait_disconnect(request))
    waiting: set[asyncio.Future[Any]] = {task, watcher}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler itself was cancelled: take the work down with it
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone


async def chat_stream_call(request: Request, pipeline: Pipeline, call: Call) -> StreamResult:
    """``pipeline.chat_stream(call)`` (opening the stream: for ``rag/<collection>`` that is
    retrieval and the first generated chunk), cancelled when the client leaves first."""
    if pipeline.router.virtual(call.model) is None:
        return await pipeline.chat_stream(call)
    return await unless_disconnected(request, pipeline.chat_stream(call))


def chat_call(request: Request, pipeline: Pipeline, call: Call) -> Awaitable[Result]:
    """``pipeline.chat(call)``, cancelled when the client leaves if the model is virtual
    (the coroutine to await: no wrapper coroutine of its own on the hot path)."""
    if pipeline.router.virtual(call.model) is None:
        return pipeline.chat(call)
    return unless_disconnected(request, pipeline.chat(call))
