"""The facade's front on raw sockets: pipelining, keep-alive reuse after the upstream closed
an idle connection, close-delimited answers, malformed requests, timeouts, 100-continue and
large uploads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest

from tests.facade.conftest import FacadeFactory
from tests.facade.legacy import free_port

Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None]"]


async def _raw_upstream(handle) -> tuple[asyncio.AbstractServer, str]:  # type: ignore[no-untyped-def]
    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}"


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def _exchange(port: int, data: bytes, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), 10) if until_close else b""
    finally:
        writer.close()


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


@pytest.fixture
async def closing_upstream() -> AsyncIterator[tuple[str, list[int]]]:
    """Answers one request per connection, then closes it without saying so."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_head(reader)
            served.append(1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        finally:
            writer.close()

    server, url = await _raw_upstream(handle)
    yield url, served
    server.close()


async def test_pipelined_requests_answer_in_order(facade: FacadeFactory) -> None:
    base = await facade()
    reqs = b"".join(b"GET /tickets/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in (1, 2, 3))
    reqs += b"GET /tickets/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = await _exchange(_port(base), reqs)
    ids = [orjson.loads(part.split(b"\r\n\r\n", 1)[1][:200].split(b"}")[0] + b"}")["id"]
           for part in out.split(b"HTTP/1.1 200 OK")[1:]]
    assert ids == ["1", "2", "3", "4"]


async def test_idle_connection_closed_by_upstream_is_retried(
        facade: FacadeFactory, closing_upstream: tuple[str, list[int]]) -> None:
    url, served = closing_upstream
    base = await facade(upstream=url)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(base + "/x") as r:
                assert r.status == 200 and await r.read() == b"ok"
                await asyncio.sleep(0.05)  # the upstream's close arrives meanwhile
    assert len(served) == 3


async def test_close_delimited_answer(facade: FacadeFactory) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(3):
            writer.write(b"part %d;" % i)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.close()

    server, url = await _raw_upstream(handle)
    try:
        base = await facade(upstream=url)
        out = await _exchange(_port(base), b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = out.split(b"\r\n\r\n", 1)
        assert body == b"part 0;part 1;part 2;"
        assert b"Connection: close" in head
    finally:
        server.close()


async def test_malformed_request_is_a_400(facade: FacadeFactory) -> None:
    base = await facade()
    out = await _exchange(_port(base), b"GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


async def test_silent_upstream_is_a_504(facade: FacadeFactory) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await asyncio.sleep(5)
        writer.close()

    server, url = await _raw_upstream(handle)
    try:
        base = await facade(upstream=url, read_timeout=0.3)
        async with aiohttp.ClientSession() as s, s.get(base + "/slow") as r:
            assert r.status == 504
            assert (await r.json())["error"]["code"] == "upstream_timeout"
    finally:
        server.close()


async def test_expect_100_continue_and_a_large_upload(facade: FacadeFactory) -> None:
    base = await facade()
    payload = bytes(range(256)) * 20_000  # 5 MB
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/echo", data=payload, expect100=True) as r:
            assert r.status == 200
            doc = orjson.loads(await r.read())
        assert doc["body"].encode("latin-1") == payload
