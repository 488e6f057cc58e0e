"""The facade's front: a lean HTTP/1.1 router on raw asyncio protocols (httptools parsing).

Every client connection is parsed here. A request whose method + path matches no rule is
proxied directly to the upstream over pooled keep-alive connections: the request head is
rewritten (hop-by-hop headers dropped, ``Host`` set to the upstream's unless
``preserve_host``), bodies stream through in both directions (chunked bodies are re-framed
chunk for chunk, fixed-length ones pass as bytes), status line, reason and headers come
back as sent (minus hop-by-hop), and responses stream as they arrive. A request that
matches a rule is sent unchanged to the facade's rule engine (:class:`FacadeProxy` on an
internal aiohttp listener on a Unix socket), which applies the rules and answers.

Requests on one client connection are handled one at a time (pipelined requests wait,
their bodies buffered). A client that half-closes (shuts its sending side) still gets the
answer to what it asked, then the connection closes; in a tunnel the half-close is passed
on. The upstream's silence beyond ``read_timeout`` ends the exchange (504 before the answer
started, a cut connection after). Trailers are dropped.

Upgrades (``Connection: Upgrade``, e.g. WebSocket) always go to the upstream, never to the
rules: the request head is forwarded with its ``Connection: Upgrade`` and ``Upgrade``
headers; after the upstream's ``101`` the connection becomes a byte tunnel both ways (frames,
close frames and all, untouched) until either side closes, then the other side is closed
too. A tunnel silent both ways for ``idle_timeout`` is closed; at most ``max_tunnels`` are
open per process (more: 503). Any other answer to an upgrade request is relayed and the
client connection closed. ``CONNECT`` is refused (405).

Each answered request goes to ``call_log`` (when given, a :class:`CallLog`) as one tuple:
times, method, raw path, status, the correlation header's value (else client + path), the
client address, the names of the rules that matched, whether it was upgraded. Nothing is
written on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson
from yarl import URL

from lockgate.facade.calllog import CallLog
from lockgate.facade.headers import HOP_BY_HOP

__all__ = ["FastFront", "Target"]

_NO_BODY_STATUS = frozenset({204, 304})
_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
_HOP_NO_HOST = _HOP | {b"host"}


def _tokens(value: bytes) -> set[bytes]:
    """``Connection: close, X-Foo`` -> {b"close", b"x-foo"}."""
    out = {t.strip().lower() for t in value.split(b",")}
    out.discard(b"")
    return out



def _error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "facade_error", "code": code}})
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Target:
    """Where requests go: the upstream (TCP) or the rule engine (a Unix socket)."""

    host: str = ""
    port: int = 0
    path: str | None = None
    prefix: bytes = b""
    host_header: bytes = b""
    ssl: bool = False
    idle: list[_UpConn] = field(default_factory=list)

    async def connect(self, timeout: float) -> _UpConn:
        loop = asyncio.get_running_loop()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        conn = _UpConn(self)
        if self.path is not None:
            coro = loop.create_unix_connection(lambda: conn, self.path)
        else:
            coro = loop.create_connection(lambda: conn, self.host, self.port,
                                          ssl=True if self.ssl else None)
        await asyncio.wait_for(coro, timeout)
        return conn


class _Exchange:
    """One request/response pair."""

    __slots__ = ("body", "case", "chunked", "client", "done_reading", "had_body", "head",
                 "is_head", "keep_alive", "method", "path", "recorded", "ruled", "started",
                 "status", "t0", "target", "upgrade")

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.head = b""
        self.body: deque[bytes] = deque()
        self.chunked = False
        self.done_reading = False
        self.is_head = False
        self.keep_alive = True
        self.started = False
        self.had_body = False
        self.target: Target | None = None
        self.t0 = time.time()
        self.method = b""
        self.path = ""
        self.case: bytes | None = None
        self.status = 0
        self.ruled = False
        self.upgrade = False
        self.recorded = False


class _UpConn(asyncio.Protocol):
    """A pooled connection to a target; parses one response at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.exchange: _Exchange | None = None
        self.parser: Any = None
        self.after_head = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.resp_chunked = False
        self.resp_length: bytes | None = None
        self.head_sent = False
        self.close_after = False
        self.got_bytes = False
        self.timer: asyncio.TimerHandle | None = None
        self.timeout = 300.0
        self.activity = 0.0
        """Last time bytes came (monotonic): the read timeout counts from here."""
        self.held: bytes | None = None
        """The response head, sent with the first body bytes of the same read (one write)."""
        self.tunnel = False
        """After a 101 answer to an upgrade: raw bytes both ways."""

    # -- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None:
            self._cancel_timer()
            self.exchange = None
            if self.tunnel:
                ex.client.tunnel_closed(ex)
            else:
                ex.client.upstream_lost(self, ex)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading()

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            if self.transport is not None:
                self.transport.close()  # unsolicited bytes: not reusable
            return
        if self.tunnel:
            ex.client.tunnel_bytes(data)
            return
        self.got_bytes = True
        self.activity = time.monotonic()
        try:
            self.parser.feed_data(data)
            if self.held is not None:  # no body in this read: the head goes alone
                self._release()
        except httptools.HttpParserUpgrade as exc:
            if self.tunnel:  # the 101 head went out: what follows it is the tunnel's
                rest = data[int(exc.args[0]):]
                if rest:
                    ex.client.tunnel_bytes(rest)
            else:
                self._fail()
        except httptools.HttpParserError:
            self._fail()

    # -- exchange
    def start(self, ex: _Exchange, timeout: float) -> None:
        self.exchange = ex
        self.timeout = timeout
        if self.parser is None or self.after_head:
            # a parser goes on from message to message on a kept-alive connection; after a
            # HEAD it would wait for the body the head announced: a new one
            self.parser = httptools.HttpResponseParser(self)
        self.after_head = ex.is_head
        self.status, self.headers, self.reason = 0, [], b""
        self.resp_chunked, self.resp_length = False, None
        self.head_sent = self.close_after = self.got_bytes = False
        self.held = None
        self.activity = time.monotonic()
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._check_timeout)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _check_timeout(self) -> None:
        """One timer per connection, re-armed for the rest of the window only when it fires
        (cheaper than re-arming on every chunk); idle in the pool, it just lapses."""
        self.timer = None
        if self.exchange is None or self.tunnel:
            return
        left = self.timeout - (time.monotonic() - self.activity)
        if left > 0:
            self.timer = asyncio.get_running_loop().call_later(left, self._check_timeout)
            return
        self._timed_out()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _release(self) -> None:
        held, self.held = self.held, None
        if held is not None and self.exchange is not None:
            self.exchange.client.write(held)

    def _emit(self, ex: _Exchange, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            data = held + data
        ex.client.write(data)

    def _timed_out(self) -> None:
        self._release()
        ex = self.exchange
        self.exchange = None
        if self.transport is not None:
            self.transport.close()
        if ex is not None:
            ex.client.upstream_failed(ex, self.head_sent, 504, "Gateway Timeout",
                                      "upstream_timeout",
                                      "The service behind the facade timed out.")

    def _fail(self) -> None:
        self._release()
        ex = self.exchange
        self.exchange = None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
        if ex is not None:
            ex.client.upstream_failed(ex, self.head_sent, 502, "Bad Gateway", "upstream_invalid",
                                      "The service behind the facade sent an invalid answer.")

    # -- httptools callbacks
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        self.status = self.parser.get_status_code()
        if ex.upgrade and self.status == 101:
            self._switch(ex)
            return
        skip = _HOP
        for name, value in self.headers:
            low = name.lower()
            if low == b"connection":
                tokens = _tokens(value)
                skip = skip | tokens
                if b"close" in tokens:
                    self.close_after = True
            elif low == b"transfer-encoding" and b"chunked" in value.lower():
                self.resp_chunked = True
            elif low == b"content-length":
                self.resp_length = value
        if self.parser.get_http_version() == "1.0":
            self.close_after = True
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)]
        lines += [n + b": " + v + b"\r\n" for n, v in self.headers if n.lower() not in skip]
        interim = 100 <= self.status < 200
        bodyless = ex.is_head or interim or self.status in _NO_BODY_STATUS
        if not bodyless and self.resp_chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        elif not bodyless and self.resp_length is None:
            ex.keep_alive = False  # read to the upstream's close: close the client after
            self.close_after = True
        if not interim and not ex.keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        if interim:
            ex.client.write(b"".join(lines))
            self.headers, self.reason = [], b""
            return
        self.held = b"".join(lines)
        ex.status = self.status
        self.head_sent = True
        if ex.is_head:
            self._complete()

    def _switch(self, ex: _Exchange) -> None:
        """The upstream accepted the upgrade: its 101 head goes to the client as sent
        (``Connection``/``Upgrade`` included), then bytes flow both ways untouched."""
        lines = [b"HTTP/1.1 101 %s\r\n" % (self.reason or b"Switching Protocols")]
        lines += [n + b": " + v + b"\r\n" for n, v in self.headers]
        lines.append(b"\r\n")
        self._cancel_timer()
        self.tunnel = True
        self.head_sent = True
        self.close_after = True
        ex.status = 101
        ex.client.start_tunnel(self, ex, b"".join(lines))

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None or ex.is_head:
            return
        if self.resp_chunked:
            self._emit(ex, b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self._emit(ex, body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is None or not self.head_sent or self.tunnel:
            return  # an interim (1xx) answer: the final one follows; a tunnel goes on
        if self.resp_chunked and not ex.is_head:
            self._emit(ex, b"0\r\n\r\n")
        self._complete()

    def _complete(self) -> None:
        self._release()
        ex = self.exchange
        self.exchange = None
        if ex is None:
            return
        reusable = not self.close_after and not self.closed
        if reusable and ex.done_reading:
            self.target.idle.append(self)
        elif self.transport is not None:
            self.transport.close()
        ex.client.exchange_done(ex)


class _Client(asyncio.Protocol):
    def __init__(self, front: FastFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Exchange] = deque()
        self.parsing: _Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.up: _UpConn | None = None
        self.closing = False
        self._paused = False
        self.peer: str | None = None
        self.upgrading: _Exchange | None = None
        """An upgrade request was read: later bytes belong to the tunnel, never the parser."""
        self.early = bytearray()
        """Tunnel bytes the client sent before the upstream's 101 (held, then forwarded)."""
        self.tunnel: _UpConn | None = None
        self.last_activity = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.half_closed = False
        """The client shut its sending side: answer what it asked, then close."""

    # -- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
        elif peer:
            self.peer = str(peer)

    def data_received(self, data: bytes) -> None:
        if self.upgrading is not None:
            self._upgrade_bytes(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[int(exc.args[0]):]
            if self.upgrading is None:  # CONNECT or an upgrade refused before routing
                return
            if rest:
                self._upgrade_bytes(rest)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_error_bytes(400, "Bad Request", "bad_request",
                                                  "Malformed HTTP request."))
                self.transport.close()

    def eof_received(self) -> bool | None:
        """The client half-closed: a tunnel passes the EOF on; a request in flight is still
        answered (then the connection closes); otherwise close now."""
        self.half_closed = True
        up = self.tunnel
        if up is not None:
            if up.transport is not None and up.transport.can_write_eof():
                up.transport.write_eof()
            return True
        return True if self.queue else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.queue:
            self.front.record(self.queue[0])  # the client left before the answer ended
        up = self.up
        if up is not None and up.exchange is not None:
            if up.tunnel:
                self.tunnel_closed(up.exchange)
            up.exchange = None
            if up.transport is not None:
                up.transport.close()

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    # -- request parsing
    def on_message_begin(self) -> None:
        self.parsing = _Exchange(self)
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        method = self.parser.get_method()
        ex.method = method
        ex.is_head = method == b"HEAD"
        ex.keep_alive = self.parser.should_keep_alive()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        ex.path = path
        front = self.front
        upgrade = self.parser.should_upgrade()
        if upgrade and not self._upgrade_allowed(ex, method):
            return
        ruled = not upgrade and front.is_ruled(method.decode("latin-1"), path)
        ex.ruled = ruled
        ex.target = front.rules_target if ruled else front.upstream
        if not ruled:
            front.count()
        lines = [b"%s %s%s HTTP/1.1\r\n" % (method, ex.target.prefix, self.url)]
        case_header = front.case_header
        if ruled:  # the rule engine sees the request as it came
            lines += [n + b": " + v + b"\r\n" for n, v in self.headers]
            for n, v in self.headers:
                low = n.lower()
                if low == b"transfer-encoding" and b"chunked" in v.lower():
                    ex.chunked = True
                elif low == case_header:
                    ex.case = v
        else:
            skip = _HOP if front.preserve_host else _HOP_NO_HOST
            for n, v in self.headers:
                low = n.lower()
                if low == b"connection":
                    skip = skip | _tokens(v)
                elif low == b"transfer-encoding" and b"chunked" in v.lower():
                    ex.chunked = True
                elif low == case_header:
                    ex.case = v
            if upgrade:  # the handshake needs them: Connection: Upgrade + Upgrade
                skip = skip - {b"upgrade", b"connection"}
            lines += [n + b": " + v + b"\r\n" for n, v in self.headers if n.lower() not in skip]
            if not front.preserve_host:
                lines.append(b"Host: " + ex.target.host_header + b"\r\n")
            if ex.chunked:
                lines.append(b"Transfer-Encoding: chunked\r\n")
        lines.append(b"\r\n")
        ex.head = b"".join(lines)
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._begin(ex)
        else:
            self.pause_reading()  # pipelined: one at a time

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        ex.had_body = True
        data = b"%x\r\n%s\r\n" % (len(body), body) if ex.chunked else body
        if ex.started and self.up is not None and self.queue and self.queue[0] is ex:
            self.up.write(data)
        else:
            ex.body.append(data)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        self.parsing = None
        ex.done_reading = True
        if ex.chunked:
            if ex.started and self.up is not None and self.queue and self.queue[0] is ex:
                self.up.write(b"0\r\n\r\n")
            else:
                ex.body.append(b"0\r\n\r\n")
        if not ex.keep_alive:
            self.pause_reading()

    # -- upgrades (WebSocket): a byte tunnel after the upstream's 101
    def _upgrade_allowed(self, ex: _Exchange, method: bytes) -> bool:
        """Refuse what cannot be tunnelled; else mark ``ex`` as the upgrade."""
        front = self.front
        if method == b"CONNECT":
            reply = _error_bytes(405, "Method Not Allowed", "method_not_allowed",
                                 "The facade does not tunnel CONNECT.")
        elif front.tunnels >= front.max_tunnels:
            reply = _error_bytes(503, "Service Unavailable", "too_many_tunnels",
                                 f"The facade has {front.max_tunnels} upgraded connections "
                                 "open; try again later.")
        else:
            ex.upgrade = True
            ex.keep_alive = False  # after an upgrade attempt the connection is not HTTP
            self.upgrading = ex
            return True
        ex.status = int(reply[9:12])
        front.count_error()
        front.record(ex)
        self.parsing = None
        self.closing = True
        if self.transport is not None:
            self.transport.write(reply)
            self.transport.close()
        return False

    def _upgrade_bytes(self, data: bytes) -> None:
        up = self.tunnel
        if up is not None:
            self.last_activity = time.monotonic()
            up.write(data)
        else:
            self.early += data
            if len(self.early) > self.front.max_early_bytes:
                self.closing = True
                if self.transport is not None:
                    self.transport.close()

    def start_tunnel(self, up: _UpConn, ex: _Exchange, head: bytes) -> None:
        front = self.front
        front.tunnels += 1
        self.tunnel = up
        self.write(head)
        self.resume_reading()  # paused after the upgrade request (it ends the HTTP part)
        if self.early:
            up.write(bytes(self.early))
            self.early.clear()
        if self.half_closed and up.transport is not None and up.transport.can_write_eof():
            up.transport.write_eof()
        self.last_activity = time.monotonic()
        self.idle_timer = asyncio.get_running_loop().call_later(front.idle_timeout,
                                                                self._idle_check)

    def tunnel_bytes(self, data: bytes) -> None:
        """From the upstream, in the tunnel."""
        self.last_activity = time.monotonic()
        self.write(data)

    def _idle_check(self) -> None:
        self.idle_timer = None
        if self.tunnel is None:
            return
        idle = self.front.idle_timeout
        quiet = time.monotonic() - self.last_activity
        if quiet < idle:
            self.idle_timer = asyncio.get_running_loop().call_later(idle - quiet,
                                                                    self._idle_check)
            return
        up = self.tunnel
        if up.transport is not None:
            up.transport.close()  # connection_lost closes the client side
        elif self.transport is not None:
            self.transport.close()

    def tunnel_closed(self, ex: _Exchange) -> None:
        """Either side of the tunnel closed: close the other (after what is buffered)."""
        up = self.tunnel
        if up is None:
            return
        self.tunnel = None
        self.front.tunnels -= 1
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.front.record(ex)
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        self.up = None
        self.closing = True
        if self.transport is not None:
            self.transport.close()
        if up.transport is not None:
            up.transport.close()

    # -- exchanges
    def _begin(self, ex: _Exchange) -> None:
        """Start ``ex`` at once on a pooled connection (no task, no loop turn), else connect
        in a task."""
        assert ex.target is not None
        idle = ex.target.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                up.reused = True
                self._attach(ex, up)
                return
        self.front.spawn(self._start(ex))

    async def _start(self, ex: _Exchange) -> None:
        assert ex.target is not None
        front = self.front
        try:
            up = await ex.target.connect(front.connect_timeout)
        except (OSError, TimeoutError):
            self._reply_error(ex, 502, "Bad Gateway", "upstream_unreachable",
                              "The service behind the facade is unreachable.")
            return
        if self.closing:
            ex.target.idle.append(up)
            return
        self._attach(ex, up)

    def _attach(self, ex: _Exchange, up: _UpConn) -> None:
        front = self.front
        self.up = up
        up.start(ex, front.read_timeout)
        ex.started = True
        up.write(ex.head)
        while ex.body:
            up.write(ex.body.popleft())

    def upstream_lost(self, up: _UpConn, ex: _Exchange) -> None:
        """The upstream closed during the exchange."""
        if not up.got_bytes and up.reused and ex.done_reading and not ex.had_body:
            # a kept-alive connection the server had closed meanwhile: once more, on a new one
            ex.started = False
            self._begin(ex)
            return
        if up.head_sent and not up.resp_chunked and up.resp_length is None:
            self.exchange_done(ex, close=True)  # a close-delimited body ends here
            return
        self.upstream_failed(ex, up.head_sent, 502, "Bad Gateway", "upstream_unreachable",
                             "The service behind the facade closed the connection.")

    def upstream_failed(self, ex: _Exchange, head_sent: bool, status: int, reason: str,
                        code: str, message: str) -> None:
        if head_sent:
            self.front.record(ex)
            if self.transport is not None:
                self.transport.close()  # cut: the client sees an incomplete answer
            return
        self._reply_error(ex, status, reason, code, message)

    def _reply_error(self, ex: _Exchange, status: int, reason: str, code: str,
                     message: str) -> None:
        self.front.count_error()
        ex.status = status
        self.write(_error_bytes(status, reason, code, message))
        ex.keep_alive = ex.keep_alive and ex.done_reading
        self.exchange_done(ex)

    def exchange_done(self, ex: _Exchange, close: bool = False) -> None:
        self.front.record(ex)
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        self.up = None
        if close or not ex.keep_alive or not ex.done_reading or self.half_closed:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        if self.queue:  # pipelined: the next one on the next loop turn (we are inside the
            self.front.spawn(self._start(self.queue[0]))  # upstream parser's callback here)
        self.resume_reading()


class FastFront:
    """The listener's protocol factory: route by rules, proxy the rest."""

    def __init__(
        self,
        upstream: str,
        rules_socket: str,
        is_ruled: Callable[[str, str], bool],
        *,
        preserve_host: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        on_pass: Callable[[], None] | None = None,
        on_error: Callable[[], None] | None = None,
        call_log: CallLog | None = None,
        case_header: str = "x-correlation-id",
        rules_of: Callable[[str, str], list[str]] | None = None,
        idle_timeout: float | None = None,
        max_tunnels: int = 1000,
        max_early_bytes: int = 1024 * 1024,
    ) -> None:
        u = URL(upstream)
        host = u.raw_host or "127.0.0.1"
        port = u.port or 80
        default = (u.scheme == "http" and port == 80) or (u.scheme == "https" and port == 443)
        host_header = host if default else f"{host}:{port}"
        prefix = u.raw_path.rstrip("/").encode()
        if u.port is None and u.scheme == "https":
            port = 443
        self.upstream = Target(host, port, None, prefix, host_header.encode(),
                               ssl=u.scheme == "https")
        self.rules_target = Target(path=rules_socket)
        self.is_ruled = is_ruled
        self.preserve_host = preserve_host
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._on_pass = on_pass
        self._on_error = on_error
        self.call_log = call_log
        self.case_header = case_header.lower().encode("latin-1")
        self._rules_of = rules_of
        self.idle_timeout = idle_timeout if idle_timeout is not None else read_timeout
        self.max_tunnels = max_tunnels
        self.max_early_bytes = max_early_bytes
        self.tunnels = 0
        """Upgraded connections open now."""
        self._tasks: set[asyncio.Future[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task, holding a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def count(self) -> None:
        if self._on_pass is not None:
            self._on_pass()

    def count_error(self) -> None:
        if self._on_error is not None:
            self._on_error()

    def record(self, ex: _Exchange) -> None:
        """Hand the finished exchange to the call log (once; O(1), no I/O)."""
        log = self.call_log
        if log is None or ex.recorded or not ex.method:
            return
        ex.recorded = True
        method = ex.method.decode("latin-1")
        peer = ex.client.peer
        rules = None
        if ex.ruled and self._rules_of is not None:
            rules = ",".join(self._rules_of(method, ex.path)) or None
        case = ex.case.decode("latin-1") if ex.case else f"{peer or '-'} {ex.path}"
        log.add((ex.t0, time.time(), method, ex.path, ex.status, case, peer, rules,
                 ex.upgrade))

    def __call__(self) -> _Client:
        return _Client(self)

    def close(self) -> None:
        if self.call_log is not None:
            self.call_log.close()
        for target in (self.upstream, self.rules_target):
            for conn in target.idle:
                if conn.transport is not None:
                    with contextlib.suppress(Exception):
                        conn.transport.close()
            target.idle.clear()
