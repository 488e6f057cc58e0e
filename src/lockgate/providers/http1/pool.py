"""A per-client pool of keep-alive HTTP/1.1 connections with a hard limit and FIFO waiters.

:class:`Pool` belongs to one event loop (the one running when it was made). At most
``limit`` connections are open or opening at once, across origins; a request beyond that
waits in FIFO order, and the wait counts against the caller's deadline. A released
connection goes straight to the first waiter for its origin, else to the idle stack
(last-in first-out, so the oldest expire); a connection closed while a request waits hands
its slot on. Idle connections the server closed (EOF/reset) are forgotten at once and never
handed out; idle ones older than ``idle_timeout`` are closed by one sweep timer.

:meth:`Pool.request` sends one request and returns the response once its head arrived. If
a *reused* connection dies before any response byte (the server closed it between
requests), the request is sent once more on a fresh connection; never after a response
byte arrived. Connects use ``loop.create_connection`` (it resolves names) with TLS for
``https`` (the given ``ssl_context``, else a shared default context with ALPN
``http/1.1``; SNI is the URL's host).

Partial: no HTTP/2, no proxies (``HTTP(S)_PROXY`` is not read), no happy-eyeballs tuning
beyond what ``create_connection`` does, one request per connection at a time.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from lockgate.providers.http1.connection import Connection
from lockgate.providers.http1.errors import ConnectError, ConnectionLost, ConnectTimeout
from lockgate.providers.http1.request import Origin
from lockgate.providers.http1.response import Response

__all__ = ["Pool", "default_ssl_context"]

_DEFAULT_SSL: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """``ssl.create_default_context()`` with ALPN ``http/1.1``, made once per process."""
    global _DEFAULT_SSL
    if _DEFAULT_SSL is None:
        ctx = ssl.create_default_context()
        ctx.set_alpn_protocols(["http/1.1"])
        _DEFAULT_SSL = ctx
    return _DEFAULT_SSL


class Pool:
    """Keep-alive connections for one client, on the running loop."""

    def __init__(
        self,
        *,
        limit: int,
        connect_timeout: float,
        idle_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = max(1, limit)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._ssl = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}
        self._waiters: deque[tuple[asyncio.Future[Connection | None], Origin]] = deque()
        self._conns: set[Connection] = set()
        self._opening = 0
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False
        self.opened = 0
        """Connections opened so far (for tests and stats)."""

    @property
    def open_count(self) -> int:
        """Connections open or being opened (the number the limit bounds)."""
        return len(self._conns) + self._opening

    # ------------------------------------------------------------ request

    async def request(
        self, origin: Origin, head: bytes, payload: bytes, deadline: float
    ) -> Response:
        """Send ``head + payload``; the response once its head arrived (before ``deadline``)."""
        conn = self._idle_connection(origin)  # the usual case, without a coroutine
        reused = conn is not None
        if conn is None:
            conn, reused = await self._acquire(origin, deadline, fresh=False)
        for retry in (False, True):
            if retry:  # the server closed the kept-alive connection between requests
                conn, _ = await self._acquire(origin, deadline, fresh=True)
            try:
                resp = conn.send(head, payload)
                try:
                    await resp.wait_head(deadline)
                except BaseException:
                    resp.close()
                    raise
                return resp
            except ConnectionLost as exc:
                if retry or not reused or exc.got_bytes:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ slots

    async def _acquire(
        self, origin: Origin, deadline: float, *, fresh: bool
    ) -> tuple[Connection, bool]:
        if self.closed:
            raise ConnectionLost("the client is closed", got_bytes=False)
        if not fresh:
            conn = self._idle_connection(origin)
            if conn is not None:
                return conn, True
        waiters = self._waiters
        while waiters and waiters[0][0].done():
            waiters.popleft()
        if not waiters and self.open_count < self.limit:
            self._opening += 1
            return await self._connect(origin, deadline), False
        got = await self._wait_slot(origin, deadline)
        if got is not None:
            return got, True
        return await self._connect(origin, deadline), False  # a slot handed on to us

    def _idle_connection(self, origin: Origin) -> Connection | None:
        """A kept-alive connection to ``origin`` that is still open, taken from the pool."""
        if self.closed:
            return None
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if not conn.closed:
                return conn
        return None

    async def _wait_slot(self, origin: Origin, deadline: float) -> Connection | None:
        loop = self.loop
        fut: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append((fut, origin))
        if self.open_count >= self.limit:
            self._close_other_idle(origin)  # idle connections elsewhere free their slots
        else:
            self._grant()
        timer = loop.call_at(deadline, _expire, fut)
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                got = fut.result()  # handed to us just as we gave up: pass it on
                if got is None:
                    self._opening -= 1
                    self._grant()
                else:
                    self.release(got)
            raise
        finally:
            timer.cancel()

    def _grant(self) -> None:
        """Hand free slots to waiters (a slot is reserved for the waiter it wakes)."""
        waiters = self._waiters
        while waiters and self.open_count < self.limit:
            fut, _origin = waiters.popleft()
            if not fut.done():
                self._opening += 1
                fut.set_result(None)

    def _close_other_idle(self, origin: Origin) -> None:
        for other, conns in self._idle.items():
            if other != origin and conns:
                conn = conns.pop(0)
                conn.in_pool = False
                conn.close()  # forget() hands its slot to the first waiter
                return

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        """Open a connection for a slot already counted in ``_opening``."""
        loop = self.loop
        conn = Connection(self, origin, loop)
        connect_dl = loop.time() + self.connect_timeout
        ssl_ctx = (self._ssl or default_ssl_context()) if origin.tls else None
        try:
            async with asyncio.timeout_at(min(connect_dl, deadline)):
                await loop.create_connection(
                    lambda: conn, origin.host, origin.port, ssl=ssl_ctx,
                    server_hostname=origin.host if ssl_ctx is not None else None,
                )
        except TimeoutError:
            self._connect_failed(conn)
            if connect_dl <= deadline:
                raise ConnectTimeout(
                    f"could not connect within {self.connect_timeout}s"
                ) from None
            raise
        except OSError as exc:
            self._connect_failed(conn)
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc!r}") from None
        except BaseException:
            self._connect_failed(conn)
            raise
        self._opening -= 1
        self.opened += 1
        if conn.closed:  # lost during the handshake: connection_lost already ran
            self._grant()
            raise ConnectionLost("upstream closed the new connection", got_bytes=False)
        self._conns.add(conn)
        if self.closed:
            conn.close()
            raise ConnectionLost("the client is closed", got_bytes=False)
        return conn

    def _connect_failed(self, conn: Connection | None = None) -> None:
        # a connect cancelled after the transport was made (a timeout or a caller giving up
        # in the last step) would otherwise leave that socket open: nobody holds ``conn``
        if conn is not None:
            conn.close()
        self._opening -= 1
        self._grant()

    # ------------------------------------------------------------ connection events

    def release(self, conn: Connection) -> None:
        """A connection whose response is complete and that may be reused."""
        if self.closed or conn.closed:
            conn.close()
            return
        waiters = self._waiters
        if waiters:
            for i, (fut, origin) in enumerate(waiters):
                if not fut.done() and origin == conn.origin:
                    del waiters[i]
                    fut.set_result(conn)
                    return
        conn.in_pool = True
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if waiters:  # only waiters for other origins: this connection makes room
            self._close_other_idle_for_waiters()
        if self._sweep is None:
            self._sweep = self.loop.call_at(conn.idle_since + self.idle_timeout, self._sweep_idle)

    def _close_other_idle_for_waiters(self) -> None:
        for fut, origin in self._waiters:
            if not fut.done():
                self._close_other_idle(origin)
                return

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed (by either side): drop it and hand its slot on."""
        if conn in self._conns:
            self._conns.discard(conn)
            if conn.in_pool:
                conn.in_pool = False
                idle = self._idle.get(conn.origin)
                if idle is not None and conn in idle:
                    idle.remove(conn)
            self._grant()

    def _sweep_idle(self) -> None:
        self._sweep = None
        now = self.loop.time()
        limit = now - self.idle_timeout
        oldest: float | None = None
        for conns in self._idle.values():
            n = 0
            while n < len(conns) and conns[n].idle_since <= limit:
                n += 1
            expired, conns[:n] = conns[:n], []
            for conn in expired:
                conn.in_pool = False
                conn.close()
            if conns and (oldest is None or conns[0].idle_since < oldest):
                oldest = conns[0].idle_since
        if oldest is not None and not self.closed:
            self._sweep = self.loop.call_at(oldest + self.idle_timeout, self._sweep_idle)

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Close every connection (idle and busy) and fail waiters; the pool is done."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in self._idle.values():
            for conn in conns:
                conn.in_pool = False
        self._idle.clear()
        for conn in list(self._conns):
            conn.close()
        while self._waiters:
            fut, _origin = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionLost("the client is closed", got_bytes=False))


def _expire(fut: asyncio.Future[Connection | None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
