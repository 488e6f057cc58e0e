"""Upgrade (WebSocket) pass-through: after the upstream's 101 the facade tunnels bytes both
ways, untouched, until either side closes; rules never apply to an upgraded connection.

The upstream is a real WebSocket server (``websockets``), the client the ``websockets``
library (and, for bytes sent before the 101, a raw socket)."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.http11 import Request, Response

from tests.facade.conftest import FACADES, FacadeFactory
from tests.facade.legacy import free_port

CLIENT_CLOSES: list[tuple[int | None, str | None]] = []


async def _handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    if path.startswith("/echo"):
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass
        CLIENT_CLOSES.append((ws.close_code, ws.close_reason))
    elif path == "/close":
        await ws.recv()
        await ws.close(4001, "bye")
    elif path == "/die":
        await ws.send("hello")
        await asyncio.sleep(0.05)
        assert ws.transport is not None
        ws.transport.abort()  # the upstream dies mid-stream: no close frame, a reset
    elif path == "/silent":
        await ws.wait_closed()  # says nothing; the facade closes it when idle


def _process_request(ws: ServerConnection, request: Request) -> Response | None:
    if request.path == "/reject":
        return ws.respond(HTTPStatus.FORBIDDEN, "no websockets for you\n")
    return None


@pytest.fixture
async def ws_upstream() -> AsyncIterator[str]:
    port = free_port()
    server: Server = await serve(_handler, "127.0.0.1", port, process_request=_process_request,
                                 max_size=8 * 1024 * 1024)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def _ws(base: str) -> str:
    return "ws://" + base.removeprefix("http://")


async def _settled(base: str) -> None:
    """No tunnel open and no task left in the facade's front (bounded wait)."""
    front = FACADES[base].servers[0].front
    for _ in range(200):
        if front.tunnels == 0 and not front._tasks:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"front not idle: {front.tunnels} tunnels, {len(front._tasks)} tasks")


async def test_echo_text_and_binary_frames(facade: FacadeFactory, ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream)
    payload = os.urandom(3 * 1024 * 1024)  # large: exercises flow control both ways
    async with connect(_ws(base) + "/echo?x=1", max_size=8 * 1024 * 1024) as ws:
        await ws.send("hello über facade")
        assert await ws.recv() == "hello über facade"
        await ws.send(b"\x00\x01\x02\xff")
        assert await ws.recv() == b"\x00\x01\x02\xff"
        await ws.send(payload)
        assert await ws.recv() == payload
        for i in range(50):
            await ws.send(f"m{i}")
        assert [await ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]
        await ws.ping()
    await _settled(base)


async def test_close_codes_pass_both_ways(facade: FacadeFactory, ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream)
    async with connect(_ws(base) + "/close") as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")

    CLIENT_CLOSES.clear()
    async with connect(_ws(base) + "/echo") as ws:
        await ws.send("x")
        await ws.recv()
        await ws.close(4002, "client done")
    for _ in range(100):
        if CLIENT_CLOSES:
            break
        await asyncio.sleep(0.02)
    assert CLIENT_CLOSES == [(4002, "client done")]
    await _settled(base)


async def test_upstream_dying_mid_stream_closes_the_client(facade: FacadeFactory,
                                                           ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream)
    async with connect(_ws(base) + "/die") as ws:
        assert await ws.recv() == "hello"
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is None  # no close frame: the connection just ended (1006)
    await _settled(base)


async def test_rules_never_apply_to_an_upgraded_connection(facade: FacadeFactory,
                                                           ws_upstream: str) -> None:
    # a redact rule on the same path would rewrite an HTTP answer; the tunnel is untouched
    base = await facade(upstream=ws_upstream, rules=[
        {"name": "no-pii", "action": "redact", "match": {"methods": ["GET"],
                                                          "path": "/echo/**"}}])
    async with connect(_ws(base) + "/echo/pii") as ws:
        await ws.send("mail alice@example.com or call +44 20 7946 0958")
        assert await ws.recv() == "mail alice@example.com or call +44 20 7946 0958"
    await _settled(base)


async def test_refused_upgrade_is_relayed_and_closed(facade: FacadeFactory,
                                                     ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream)
    with pytest.raises(InvalidStatus) as info:
        async with connect(_ws(base) + "/reject"):
            pass
    assert info.value.response.status_code == 403
    assert b"no websockets for you" in info.value.response.body
    await _settled(base)


async def test_idle_tunnel_is_closed(facade: FacadeFactory, ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream, idle_timeout=0.3)
    async with connect(_ws(base) + "/silent", ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    await _settled(base)


async def test_tunnel_limit_and_connect_refused(facade: FacadeFactory, ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream, max_tunnels=1)
    async with connect(_ws(base) + "/echo") as first:
        with pytest.raises(InvalidStatus) as info:
            async with connect(_ws(base) + "/echo"):
                pass
        assert info.value.response.status_code == 503
        await first.send("still here")
        assert await first.recv() == "still here"
    await _settled(base)
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 5)
    assert head.startswith(b"HTTP/1.1 405 ")
    writer.close()


def _masked_text_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    assert len(data) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return struct.pack("!BB", 0x81, 0x80 | len(data)) + mask + body


async def test_bytes_sent_before_the_101_are_delivered(facade: FacadeFactory,
                                                       ws_upstream: str) -> None:
    base = await facade(upstream=ws_upstream)
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    writer.write(handshake + _masked_text_frame("early bird"))  # one write: frame rides along
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    lowered = head.lower()
    assert b"upgrade: websocket" in lowered and b"sec-websocket-accept:" in lowered
    frame: Any = await asyncio.wait_for(reader.readexactly(2), 5)
    assert frame[0] == 0x81 and frame[1] == len(b"early bird")  # unmasked from the server
    assert await reader.readexactly(len(b"early bird")) == b"early bird"
    writer.close()
    await _settled(base)


async def test_http2_prior_knowledge_is_refused(facade: FacadeFactory, legacy: str) -> None:
    """HTTP/2 is not offered: its connection preface gets an HTTP/1.1 400, never a hang."""
    base = await facade()
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
    writer.close()


async def test_half_closed_client_still_gets_its_answer(facade: FacadeFactory) -> None:
    """A client that shuts its sending side after the request (allowed by TCP and HTTP/1.1)
    still gets the answer, then the connection closes."""
    base = await facade()
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /stream?n=3&gap=0.1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the facade closes after
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"line 2 mail2@example.com" in answer
    writer.close()
    await _settled(base)
