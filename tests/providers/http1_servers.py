"""Loopback HTTP/1.1 servers for the http1 client tests: raw asyncio streams, one script each.

A :class:`RawServer` runs ``handler(server, conn_index, reader, writer)`` for every accepted
connection, passing itself as ``server`` so the handler can call ``server.read_request``
and look at ``server.requests``. It counts connections and requests, so tests can see
reuse, retries and limits from the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[
    ["RawServer", int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]


@dataclass
class Request:
    conn: int
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawServer:
    handler: Handler
    host: str = "127.0.0.1"
    ssl: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    open_now: int = 0
    max_open: int = 0
    eofs: int = 0
    """Connections on which the server read EOF from the client (client closed them)."""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/v1/chat/completions") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in self.writers:
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        self.writers.append(writer)
        try:
            await self.handler(self, index, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open_now -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def read_request(self, conn: int, reader: asyncio.StreamReader) -> Request | None:
        """One request (Content-Length body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.eofs += 1
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        req = Request(conn, lines[0], headers, body)
        self.requests.append(req)
        return req


def answer(body: bytes, *, status: str = "200 OK", ctype: str = "application/json",
           extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


def chunked(head_extra: str, pieces: list[bytes], *, end: bool = True,
            ctype: str = "application/json") -> bytes:
    out = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
           f"{head_extra}\r\n").encode()
    for p in pieces:
        out += b"%x\r\n%s\r\n" % (len(p), p)
    if end:
        out += b"0\r\n\r\n"
    return out
