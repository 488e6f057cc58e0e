"""The serving protocol writes a plain response with one write; streams keep their head first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
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


# --- the same bytes as uvicorn's own protocol -------------------------------------------


def responder(status: int, headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part,
                        "more_body": i < len(parts) - 1})
    return app


DEFAULTS = [(b"server", b"uvicorn"), (b"date", b"Mon, 07 Dec 2026 00:00:00 GMT")]


async def exchange_with(protocol_class: Any, app: Any, request: bytes,
                        defaults: list[tuple[bytes, bytes]] = DEFAULTS) -> Transport:
    config = uvicorn.Config(app, lifespan="off", log_level="warning", proxy_headers=False)
    config.load()  # default headers (server, date) as a running server has them
    state = ServerState()
    state.default_headers = list(defaults)
    protocol = protocol_class(config, state, {})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(20):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


JSON2 = [(b"content-type", b"application/json"), (b"content-length", b"2")]
CASES = {
    "plain": (responder(200, JSON2, [b"{}"]), GET),
    "head": (responder(200, JSON2, [b"{}"]), GET.replace(b"POST", b"HEAD", 1)),
    "two parts": (responder(200, [(b"content-length", b"4")], [b"ab", b"cd"]), GET),
    "no length": (responder(200, [(b"content-type", b"text/plain")], [b"abc"]), GET),
    "no content": (responder(204, [], [b""]), GET),
    "app closes": (responder(200, [*JSON2, (b"Connection", b"Close")], [b"{}"]), GET),
    "http/1.0": (responder(200, JSON2, [b"{}"]), GET.replace(b"HTTP/1.1", b"HTTP/1.0")),
    "mixed case": (responder(201, [(b"Content-Length", b"2"), (b"X-Id", b"a")], [b"{}"]), GET),
    "too long": (responder(200, JSON2, [b"{}!"]), GET),
    "too short": (responder(200, JSON2, [b"{"]), GET),
    "bad value": (responder(200, [*JSON2, (b"x-bad", b"a\nb")], [b"{}"]), GET),
    "bad name": (responder(200, [*JSON2, (b"x bad", b"a")], [b"{}"]), GET),
    "pipelined": (responder(200, JSON2, [b"{}"]), GET + GET),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_what_is_written_is_what_uvicorn_writes(case: str) -> None:
    app, request = CASES[case]
    ours = await exchange_with(CoalescingHttpToolsProtocol, app, request)
    theirs = await exchange_with(HttpToolsProtocol, app, request)
    assert b"".join(ours.writes) == b"".join(theirs.writes)
    assert ours.closed == theirs.closed


@pytest.mark.parametrize("defaults", [
    [], DEFAULTS, [*DEFAULTS, (b"X-Served-By", b"a")], [(b"connection", b"close")],
    [(b"Content-Length", b"2")], [(b"transfer-encoding", b"chunked")], [(b"x-bad", b"a\nb")],
    [(b"x bad", b"a")],
])
@pytest.mark.parametrize("case", ["plain", "no length", "head", "app closes"])
async def test_configured_default_headers_are_handled_as_uvicorn_does(
    case: str, defaults: list[tuple[bytes, bytes]]
) -> None:
    app, request = CASES[case]
    ours = await exchange_with(CoalescingHttpToolsProtocol, app, request, defaults)
    theirs = await exchange_with(HttpToolsProtocol, app, request, defaults)
    assert b"".join(ours.writes) == b"".join(theirs.writes)
    assert ours.closed == theirs.closed


async def test_a_second_receive_waits_for_the_disconnect() -> None:
    """The complete body is handed over once; the next receive waits (uvicorn's)."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        seen.append(waiting.done())
        await send({"type": "http.response.start", "status": 200, "headers": JSON2})
        await send({"type": "http.response.body", "body": b"{}"})
        seen.append(await waiting)

    await exchange(app, GET)
    assert seen == [{"type": "http.request", "body": b"{}", "more_body": False}, False,
                    {"type": "http.disconnect"}]


# --- the keep-alive timer ----------------------------------------------------------------


async def open_connection(timeout: float) -> tuple[CoalescingHttpToolsProtocol, Transport]:
    config = uvicorn.Config(plain, lifespan="off", log_level="warning", proxy_headers=False,
                            timeout_keep_alive=timeout)  # type: ignore[arg-type]
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def ask(protocol: CoalescingHttpToolsProtocol) -> None:
    protocol.data_received(GET)
    for _ in range(20):
        await asyncio.sleep(0)


async def test_an_idle_connection_closes_after_the_keep_alive_timeout() -> None:
    protocol, transport = await open_connection(0.2)
    await ask(protocol)
    assert len(transport.writes) == 1 and not transport.closed
    await asyncio.sleep(0.1)
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert transport.closed


async def test_a_busy_connection_stays_open_and_arms_one_timer() -> None:
    protocol, transport = await open_connection(0.2)
    await ask(protocol)
    timers = [protocol.timeout_keep_alive_task]  # held, so no id is reused
    for _ in range(6):  # a request every 0.08 s: 0.48 s in all, never 0.2 s idle
        await asyncio.sleep(0.08)
        await ask(protocol)
        assert not transport.closed
        timers.append(protocol.timeout_keep_alive_task)
    assert len(transport.writes) == 7
    assert len({id(t) for t in timers}) <= 3  # once per timeout, not per response (uvicorn: 7)
    await asyncio.sleep(0.35)
    assert transport.closed


async def test_a_request_in_progress_is_not_cut_by_the_timer() -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": JSON2})
        await send({"type": "http.response.body", "body": b"{}"})

    protocol, transport = await open_connection(0.1)
    await ask(protocol)  # answered: the idle clock runs
    protocol.app = slow  # the next request takes longer than the keep-alive timeout
    await ask(protocol)
    await asyncio.sleep(0.3)
    assert not transport.closed
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(transport.writes) == 2 and not transport.closed
    await asyncio.sleep(0.25)
    assert transport.closed


async def test_a_lost_connection_leaves_no_timer() -> None:
    protocol, _transport = await open_connection(5)
    await ask(protocol)
    timer = protocol.timeout_keep_alive_task
    assert timer is not None
    protocol.connection_lost(None)
    assert protocol.timeout_keep_alive_task is None and timer.cancelled()
