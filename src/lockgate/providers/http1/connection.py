"""One keep-alive HTTP/1.1 connection: an asyncio Protocol parsing responses with httptools.

A :class:`Connection` carries one request at a time (no pipelining). :meth:`Connection.send`
writes a request and returns the :class:`~.response.Response` that the parser callbacks
fill: 1xx interim answers are skipped; the body ends by ``Content-Length``, the chunked
terminator, or (neither given) the server's close. When a response completes, the
connection goes back to its pool if it may be reused: the server did not say
``Connection: close``, the answer was not HTTP/1.0 without keep-alive, and the body was
not close-delimited; otherwise it is closed.

Bytes arriving while no request is outstanding are a protocol error: the connection is
closed. An EOF or reset while idle closes it too (the pool forgets it). A loss before the
response ended fails the response with :class:`~.errors.ConnectionLost` (``got_bytes``
telling whether any response byte had arrived, for the pool's one retry on a stale reused
connection); a parser error fails it with :class:`~.errors.BadResponse`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools

from lockgate.providers.http1.errors import BadResponse, ConnectionLost
from lockgate.providers.http1.request import Origin
from lockgate.providers.http1.response import Response

if TYPE_CHECKING:
    from lockgate.providers.http1.pool import Pool

__all__ = ["Connection"]

_NO_BODY = frozenset({204, 304})


class Connection(asyncio.Protocol):
    """A pooled connection to one origin."""

    __slots__ = ("_close_delimited", "_encoding", "_framed", "_interim", "_loop", "_parser",
                 "_paused", "_pool", "closed", "idle_since", "in_pool", "origin", "response",
                 "transport")

    def __init__(self, pool: Pool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        """No longer usable (closed by us, or EOF/reset seen)."""
        self.in_pool = False
        self.idle_since = 0.0
        self.response: Response | None = None
        self._parser: Any = httptools.HttpResponseParser(self)
        self._paused = False
        self._interim = False
        self._framed = False
        self._close_delimited = False
        self._encoding: str | None = None

    # ------------------------------------------------------------ use

    def send(self, head: bytes, payload: bytes) -> Response:
        """Write one request (``head`` ends with the blank line); its response to wait on."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            self.closed = True
            raise ConnectionLost("connection closed before the request was sent",
                                 got_bytes=False)
        resp = Response(self, self._loop)
        self.response = resp
        self._framed = self._close_delimited = self._interim = False
        self._encoding = None
        if len(payload) <= 65536:
            transport.write(head + payload)
        else:
            transport.writelines((head, payload))
        return resp

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abandon(self, resp: Response) -> None:
        """The caller gave up on ``resp`` before its end: never reuse this connection."""
        if self.response is resp:
            self.response = None
        self.close()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None:
            self.close()  # unsolicited bytes: the framing can no longer be trusted
            return
        resp.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # an upgrade (101) was never asked for: as invalid as a malformed answer
            self.response = None
            resp.fail(BadResponse(f"upstream sent an invalid HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.response
        if resp is not None:
            self.response = None
            if resp.has_head and self._close_delimited and exc is None:
                resp.finish()  # a body without length or chunking ends at the close
            else:
                got = resp.got_bytes
                what = "mid-answer" if got else "before answering"
                detail = f": {exc!r}" if exc is not None else ""
                resp.fail(ConnectionLost(f"upstream closed the connection {what}{detail}",
                                         got_bytes=got))
        self._pool.forget(self)

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.response is None:
            self.close()  # a second answer nobody asked for

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.response
        if resp is None:
            return
        resp.raw_headers.append((name, value))
        if len(name) in (14, 16, 17):
            low = name.lower()
            if low == b"content-length" or low == b"transfer-encoding":
                self._framed = True
            elif low == b"content-encoding":
                self._encoding = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        resp = self.response
        if resp is None:
            return
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: an interim answer, the final one follows
            self._interim = True
            resp.raw_headers = []
            self._framed = False
            self._encoding = None
            return
        self._interim = False
        self._close_delimited = not self._framed and status not in _NO_BODY
        resp.head_done(status, self._encoding)

    def on_body(self, body: bytes) -> None:
        resp = self.response
        if resp is not None:
            resp.feed(body)

    def on_message_complete(self) -> None:
        resp = self.response
        if resp is None or self._interim:
            return
        self.response = None
        keep = self._parser.should_keep_alive() and not self._close_delimited
        resp.finish()
        self.resume_reading()
        if keep and not self.closed:
            self._pool.release(self)
        else:
            self.close()
