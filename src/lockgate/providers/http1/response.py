"""One response as the caller sees it: status, headers, and a body buffer fed by the connection.

The connection (:mod:`.connection`) pushes the head, body pieces and the end into a
:class:`Response`; the caller waits on it with an absolute deadline (``loop.time()`` clock):
:meth:`Response.wait_head`, :meth:`Response.read` (the whole body) or
:meth:`Response.read_some` (what has arrived, ``b""`` at the end). A missed deadline raises
:class:`TimeoutError`. Bodies with ``Content-Encoding: gzip``/``x-gzip``/``deflate`` (zlib or
raw) are decoded as they arrive; ``identity`` passes; any other encoding, or a corrupt or
truncated compressed body, is :class:`~.errors.BadResponse`.

Backpressure: above :data:`HIGH_WATER` buffered bytes the connection stops reading from the
socket (``transport.pause_reading``); a read that drains the buffer resumes it. Once the
response is complete the connection is back in the pool and the body is the response's
alone. :meth:`Response.close` before the end drops the connection (never reused).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

from lockgate.providers.http1.errors import BadResponse

if TYPE_CHECKING:
    from lockgate.providers.http1.connection import Connection

__all__ = ["HIGH_WATER", "Response"]

HIGH_WATER = 256 * 1024
"""Buffered, unread body bytes above which the socket is no longer read."""


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class _Deflate:
    """``Content-Encoding: deflate``: zlib-wrapped as the RFC says, or raw as some servers send."""

    __slots__ = ("_d", "_started")

    def __init__(self) -> None:
        self._d: Any = zlib.decompressobj()
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        if not self._started:
            self._started = True
            try:
                return bytes(self._d.decompress(data))
            except zlib.error:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        return bytes(self._d.decompress(data))

    def flush(self) -> bytes:
        return bytes(self._d.flush())

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)


def decoder_for(encoding: str) -> Any:
    """A decompressor for a ``Content-Encoding`` value; None for identity; BadResponse else."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return _Deflate()
    raise BadResponse(f"upstream answer has an unsupported Content-Encoding {encoding!r}")


class Response:
    """Status, raw headers and the body of one HTTP response."""

    __slots__ = ("_chunks", "_conn", "_decoder", "_exc", "_headers", "_loop", "_paused",
                 "_size", "_waiter", "done", "got_bytes", "has_head", "raw_headers", "status")

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn: Connection | None = conn
        self._loop = loop
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._decoder: Any = None
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.has_head = False
        self.done = False
        self.got_bytes = False

    # ------------------------------------------------------------ caller side

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased; repeated headers joined with ``", "``."""
        h = self._headers
        if h is None:
            h = {}
            for name, value in self.raw_headers:
                key = name.decode("latin-1").lower()
                val = value.decode("latin-1")
                h[key] = f"{h[key]}, {val}" if key in h else val
            self._headers = h
        return h

    async def _wait(self, deadline: float) -> None:
        loop = self._loop
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        timer = loop.call_at(deadline, _expire, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    async def wait_head(self, deadline: float) -> None:
        while not self.has_head:
            if self._exc is not None:
                raise self._exc
            await self._wait(deadline)

    async def read(self, deadline: float) -> bytes:
        """The whole (decoded) body."""
        while not self.done:
            if self._exc is not None:
                raise self._exc
            await self._wait(deadline)
        return self.body()

    def body(self) -> bytes:
        """The whole (decoded) body of a response that is :attr:`done` (what :meth:`read`
        returns, without a coroutine)."""
        if self._exc is not None:
            raise self._exc
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks.popleft()
        data = b"".join(chunks)
        chunks.clear()
        return data

    async def read_some(self, deadline: float) -> bytes:
        """Body bytes that have arrived (waiting for some); ``b""`` once the body ended."""
        chunks = self._chunks
        while not chunks:
            if self._exc is not None:
                raise self._exc
            if self.done:
                return b""
            await self._wait(deadline)
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            conn = self._conn
            if conn is not None:
                conn.resume_reading()
        return data

    def close(self) -> None:
        """Done with this response: an unfinished one drops its connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not self.done:
            conn.abandon(self)
        self._chunks.clear()

    # ------------------------------------------------------------ connection side

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def head_done(self, status: int, encoding: str | None) -> None:
        self.status = status
        if encoding is not None:
            try:
                self._decoder = decoder_for(encoding)
            except BadResponse as exc:
                self.fail(exc)
                return
        self.has_head = True
        self._wake()

    def feed(self, data: bytes) -> None:
        if self._exc is not None:
            return
        dec = self._decoder
        if dec is not None:
            try:
                data = dec.decompress(data)
            except zlib.error as exc:
                self.fail(BadResponse(f"upstream body does not decode: {exc}"))
                return
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._paused:
            conn = self._conn
            if conn is not None:
                self._paused = True
                conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        """The body is complete (the connection goes back to the pool, reading resumed)."""
        dec = self._decoder
        if dec is not None and self._exc is None:
            try:
                tail = dec.flush()
            except zlib.error as exc:
                self.fail(BadResponse(f"upstream body does not decode: {exc}"))
                return
            if not dec.eof:
                self.fail(BadResponse("upstream compressed body is truncated"))
                return
            if tail:
                self._chunks.append(tail)
        self.done = True
        self._paused = False
        self._conn = None
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self._wake()
