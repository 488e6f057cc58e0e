"""uvicorn's httptools protocol, writing a whole plain response with one ``write``.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two
``transport.write`` calls, each a ``send()`` system call at once (uvloop writes eagerly),
each delivering a segment and waking the client. On loopback, where the kernel's delivery is
charged to the sender, those writes were the largest single item in the gateway's profile
(``RequestResponseCycle.send`` ~11 % of its CPU at c=8; bench/RESULTS.md, issue 12).

:class:`CoalescingHttpToolsProtocol` (``uvicorn.run(http=...)``) holds the head of a response
that has a ``Content-Length`` (every non-streaming response: the body follows in the same
task) and writes it together with the body. Streaming responses (chunked: SSE) still send
their head at once, as before. What a client receives is byte for byte the same; a
connection the client closed meanwhile gets nothing written, as before; a response whose
body never comes (an app error after the head) ends with the connection closed, as before,
just without the head.

The connection (parsing, keep-alive, pipelining, flow control, 100-continue, limits) is
uvicorn's own code. The cycle builds the head itself (:class:`CoalescingCycle`, with uvicorn's
rules and checks) and leaves every other case to uvicorn's ``send``; it also hands over a body
that is already complete without waiting on uvicorn's event.
"""

from __future__ import annotations

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, HTTPResponseStartEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

__all__ = ["HTTP_PROTOCOL", "CoalescingHttpToolsProtocol"]

HTTP_PROTOCOL = "lockgate.serving_protocol:CoalescingHttpToolsProtocol"
"""What ``uvicorn.run(http=...)`` takes (an import string, so workers load it too)."""


_SPECIAL = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_defaults_seen: tuple[object, bytes | None] = (None, None)


def _plain_defaults(default_headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """uvicorn's default headers (``server``, ``date``; a new list each second) rendered as
    head lines, or None when one of them is invalid or framing (``content-length``,
    ``transfer-encoding``, ``connection``) and must go through the full handling."""
    global _defaults_seen
    seen, rendered = _defaults_seen
    if seen is default_headers:
        return rendered
    rendered = b"".join([name.lower() + b": " + value + b"\r\n"
                         for name, value in default_headers])
    if (HEADER_RE.search(b"".join([name for name, _ in default_headers]))
            or HEADER_VALUE_RE.search(b"".join([value for _, value in default_headers]))
            or any(name.lower() in _SPECIAL for name, _ in default_headers)):
        rendered = None
    _defaults_seen = (default_headers, rendered)
    return rendered


class CoalescingCycle(RequestResponseCycle):
    """One request/response: the head of a fixed-length response waits for its body.

    The head is built here rather than by uvicorn's ``send`` (which is used for everything
    else: a paused writer, a disconnected client, a second body part), with uvicorn's own
    rules: the access log line, its default headers first, the same invalid-name/value checks
    (``HEADER_RE``/``HEADER_VALUE_RE``, here one search over all names and one over all
    values, which finds exactly what a search per header finds: the patterns are single
    bytes), ``content-length`` / ``transfer-encoding: chunked`` / ``connection: close``
    handled alike, ``connection: close`` added when the connection is not kept alive and
    ``transfer-encoding: chunked`` when neither length nor encoding is given.
    """

    head: bytes | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.head is not None:
            await self._send_held(message)
        elif (message["type"] == "http.response.start" and not self.response_started
              and not self.disconnected and not self.flow.write_paused):
            self._start(message)  # type: ignore[arg-type]
        else:
            await super().send(message)

    def _start(self, message: HTTPResponseStartEvent) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', get_client_addr(self.scope), self.scope["method"],
                get_path_with_query_string(self.scope), self.scope["http_version"], status_code)
        defaults = _plain_defaults(self.default_headers)
        if defaults is None:  # default headers that need uvicorn's handling: all of it here
            headers = self.default_headers + list(message.get("headers", []))
            content = [STATUS_LINE[status_code]]
        else:  # the server's own (server, date): checked and rendered once per list
            headers = list(message.get("headers", []))
            content = [STATUS_LINE[status_code], defaults]
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content.extend([name, b": ", value, b"\r\n"])
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (self.chunked_encoding is None and self.scope["method"] != "HEAD"
                and status_code not in (204, 304)):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        head = b"".join(content)
        if self.chunked_encoding:
            self.transport.write(head)  # a stream: its head goes out now
        else:
            self.head = head

    async def _send_held(self, message: ASGISendEvent) -> None:
        """The first body part of a fixed-length response, written with the held head."""
        head, self.head = self.head, None
        assert head is not None
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # what uvicorn's send does first
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
        if self.disconnected:
            return
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            body = b""
        else:
            if len(body) > self.expected_content_length:
                self.transport.write(head)  # what uvicorn would have written by now
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
        if not self.transport.is_closing():
            self.transport.write(head + body if body else head)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    async def receive(self) -> ASGIReceiveEvent:
        """uvicorn's, without waiting on the event when the whole body is already here."""
        if (not self.more_body and self.message_event.is_set() and not self.disconnected
                and not self.response_complete and not self.waiting_for_100_continue):
            self.message_event.clear()
            self.flow.resume_reading()
            body, self.body = self.body, bytearray()
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        return await super().receive()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request cycles are :class:`CoalescingCycle`, and whose
    keep-alive timer is armed once per idle stretch instead of once per response.

    uvicorn cancels the keep-alive timer when data arrives and starts a new one (``call_later``)
    after every response. Here a response only moves the idle deadline; one timer, when it
    fires, closes the connection if it is still idle past that deadline, waits for the new
    deadline if requests came and went meanwhile, or does nothing while a request is in
    progress (the next response arms it again). Idle connections still close
    ``timeout_keep_alive`` seconds after their last response, as with uvicorn.
    """

    _idle_deadline: float | None = None
    """Loop time at which this idle connection closes; None while a request is in progress."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # the cycle was just made; its task has not run yet, so it sends as the subclass
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = CoalescingCycle

    def _unset_keepalive_if_required(self) -> None:
        # data arrived (or the connection is going): busy, the armed timer will find so
        self._idle_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        timer, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
        if timer is not None:
            timer.cancel()

    def on_response_complete(self) -> None:
        """uvicorn's, but for how the keep-alive timer is armed."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_deadline = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_deadline = deadline = self.loop.time() + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(deadline, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        deadline = self._idle_deadline
        if deadline is None:
            return  # a request is in progress; its response arms the timer again
        if self.loop.time() < deadline:
            self.timeout_keep_alive_task = self.loop.call_at(deadline, self._keep_alive_due)
            return
        self.timeout_keep_alive_handler()
