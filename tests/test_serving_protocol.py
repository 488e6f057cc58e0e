"""The serving protocol writes a plain response with one write; streams keep their head first."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from lockgate.serving_protocol import CoalescingHttpToolsProtocol


class Transport(asyncio.Transport):
    """Records writes; what a real socket transport would be asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 4000)}.get(
            name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def plain(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def stream(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def exchange(app: Any, request: bytes) -> Transport:
    config = uvicorn.Config(app, lifespan="off", log_level="warning", proxy_headers=False)
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(20):  # let the request's task run to its end
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


GET = b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_plain_response_is_one_write() -> None:
    t = await exchange(plain, GET)
    assert len(t.writes) == 1, t.writes
    head, _, body = t.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 2" in head
    assert body == b"{}"


async def test_a_stream_sends_its_head_before_the_first_chunk() -> None:
    t = await exchange(stream, GET)
    assert t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert t.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert b"".join(t.writes[1:]) == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"


async def test_connection_close_writes_the_answer_then_closes() -> None:
    t = await exchange(plain, GET.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"))
    assert t.closed
    assert len(t.writes) == 1 and t.writes[0].endswith(b"\r\n\r\n{}")
    assert b"connection: close" in t.writes[0]


async def test_pipelined_requests_are_answered_in_order() -> None:
    t = await exchange(plain, GET + GET)
    assert len(t.writes) == 2 and all(w.endswith(b"{}") for w in t.writes)
