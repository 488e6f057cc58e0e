"""EventStream: the SSE response of the model routes (no task group per stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lockgate.api.event_stream import EventStream


class Peer:
    """An ASGI server's side of one request: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_streams_headers_chunks_and_the_end() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0)
            yield b"data: %d\n\n" % i

    peer = Peer()
    await EventStream(chunks(), headers={"x-request-id": "r1"})({}, peer.receive, peer.send)
    start, *body = peer.sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"x-request-id"] == b"r1"
    assert [m["body"] for m in body] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert [m["more_body"] for m in body] == [True, True, True, False]


async def test_client_gone_cancels_the_stream_and_returns_normally() -> None:
    seen: list[str] = []
    peer = Peer()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        try:
            peer.gone.set()  # the client hangs up while the next chunk is awaited
            await asyncio.sleep(30)
            yield b"data: never\n\n"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = asyncio.current_task()
    assert task is not None
    await asyncio.wait_for(EventStream(chunks())({}, peer.receive, peer.send), 5)
    assert seen == ["cancelled"]
    assert [m.get("body") for m in peer.sent[1:]] == [b"data: first\n\n"]
    assert task.cancelling() == 0  # nothing left pending on the server's task
    await asyncio.sleep(0)  # and it keeps running


async def test_a_cancellation_from_elsewhere_propagates() -> None:
    peer = Peer()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await asyncio.sleep(30)
        yield b"data: never\n\n"

    streaming = asyncio.ensure_future(EventStream(chunks())({}, peer.receive, peer.send))
    await asyncio.sleep(0.05)
    streaming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await streaming
