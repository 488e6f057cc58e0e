"""``text/event-stream`` responses without a task group per stream.

Starlette's :class:`~starlette.responses.StreamingResponse`, under a server that speaks
ASGI spec 2.3 (uvicorn does), runs every stream in an anyio task group so that a client
disconnect cancels it: ~100 us of set-up per stream on this project's 2-core box, a fifth of
what lockgate added to a stream's time to first byte (bench/RESULTS.md, issue 12).
:class:`EventStream` does the same job with one plain asyncio task that waits for
``http.disconnect`` and cancels the streaming task (~9 us).

What holds, as with StreamingResponse: the status line and headers go out first, then each
chunk as it comes, then the end of the body; a client that goes away cancels the stream at
its current ``await`` (the chunk iterator sees ``CancelledError`` there: the pipeline
records the call as 499 ``client_disconnected`` and releases what it held) and the response
returns normally; a cancellation from anywhere else propagates unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["EventStream"]


class EventStream(Response):
    """An SSE response streaming ``content`` (bytes, already framed as events)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body_iterator = content
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def cancel_on_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(cancel_on_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # the client left: our cancellation, handled
        finally:
            watcher.cancel()
