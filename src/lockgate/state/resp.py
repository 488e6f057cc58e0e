"""A lean, multiplexed Redis connection for the request path.

redis-py's asyncio client spends about 80-100 µs of CPU per command on this machine class
(pool checkout, three nested timeouts, the retry wrapper, observability hooks, response
callbacks): with governance on, a request makes five commands (admit, settle, breaker, cache
get and set), which made the controls cost more than the rest of the gateway together. This
connection does what the request path needs and nothing else:

- one socket per state backend (TCP; TLS for ``rediss://``, with redis-py's ``ssl_cert_reqs``,
  ``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile`` query options; or a Unix socket),
  made on first use (``AUTH`` and ``SELECT`` as the URL says) and again after it is lost;
- every coroutine's commands are queued in the order they are made and written together once
  per event-loop turn (auto-pipelining: under concurrency N commands cost one write);
- Redis answers in order, so replies are matched to callers first-in first-out and parsed by
  hiredis; a caller that stopped waiting (timed out) has its reply read and dropped;
- no retries and no timeouts of its own: the caller bounds each call
  (:meth:`lockgate.state.redis_state.RedisState._guard`) and calls :meth:`RespConnection.reset`
  after a timeout, so a blackholed server fails the calls in flight instead of holding the
  next ones behind them. A lost connection fails every call in flight with
  :class:`ConnectionError`.

Error replies raise :class:`RespError` (``NOSCRIPT`` ones :class:`NoScript`). RESP2 only, no
pub/sub and no Redis Cluster: subscriptions and the less frequent callers keep using redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

__all__ = ["NoScript", "RespConnection", "RespError", "RespTarget", "parse_redis_url"]


class RespError(Exception):
    """An error reply from the server (``-ERR ...``)."""


class NoScript(RespError):
    """``NOSCRIPT``: EVALSHA of a script the server does not hold."""


class RespTarget:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    __slots__ = ("ca_certs", "certfile", "db", "host", "keyfile", "password", "path", "port",
                 "tls", "tls_verify", "username")

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 tls: bool = False, tls_verify: bool = True, ca_certs: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.tls, self.tls_verify = tls, tls_verify
        self.ca_certs, self.certfile, self.keyfile = ca_certs, certfile, keyfile


def parse_redis_url(url: str) -> RespTarget:
    """The connection target of a Redis URL (ValueError for an unsupported one)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (redis, rediss, unix)")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if "password" in query:
        password = query["password"][0]
    db_text = query.get("db", [""])[0]
    if scheme != "unix" and parts.path.strip("/"):
        db_text = parts.path.strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"Redis URL database must be a number, not {db_text!r}") from None
    if scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// Redis URL needs a socket path")
        return RespTarget(path=parts.path, db=db, username=username, password=password)
    verify = query.get("ssl_cert_reqs", ["required"])[0].lower() not in ("none", "optional")

    def one(name: str) -> str | None:
        return query[name][0] if name in query else None

    return RespTarget(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=db,
                      username=username, password=password, tls=scheme == "rediss",
                      tls_verify=verify, ca_certs=one("ssl_ca_certs"),
                      certfile=one("ssl_certfile"), keyfile=one("ssl_keyfile"))


class _Protocol(asyncio.Protocol):
    """One socket: queued commands go out once per loop turn, replies resolve futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: RespConnection) -> None:
        self.loop = loop
        self.owner = owner  # counts the writes
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=RespError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.out: list[bytes] = []
        self.scheduled = False
        self.closed = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self.fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            fut = waiting.popleft()
            if fut.done():  # the caller gave up (timeout, cancel): the reply is dropped
                continue
            if isinstance(reply, RespError):
                if str(reply).startswith("NOSCRIPT"):
                    reply = NoScript(str(reply))
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection to Redis lost: {exc}" if exc else "connection to Redis closed"
        self.fail(ConnectionError(reason))

    # -- ours

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        if self.closed:
            fut.set_exception(ConnectionError("connection to Redis closed"))
            return fut
        self.waiting.append(fut)
        self.out.append(packed)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)
        return fut

    def flush(self) -> None:
        self.scheduled = False
        out = self.out
        if not out or self.closed or self.transport is None:
            out.clear()
            return
        self.owner.writes += 1
        if len(out) > 1:
            self.owner.pipelined_writes += 1
            data = b"".join(out)
        else:
            data = out[0]
        out.clear()
        self.transport.write(data)

    def fail(self, exc: Exception) -> None:
        """Close the socket and fail every call in flight (idempotent)."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self.out.clear()
        waiting = self.waiting
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a caller that went away leaves no warning


class RespConnection:
    """One multiplexed connection to one Redis server (see the module docstring)."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        self.target = parse_redis_url(url)
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0
        self.writes = 0
        """Socket writes so far (each carries one or more commands)."""
        self.pipelined_writes = 0
        """Writes that carried more than one command."""

    @property
    def connected(self) -> bool:
        p = self._proto
        return p is not None and not p.closed

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes, int, None, list)."""
        proto = self._proto
        if proto is None or proto.closed or proto.loop is not asyncio.get_running_loop():
            proto = await self._connected()
        return await proto.send(hiredis.pack_command(args))

    def reset(self, reason: str = "reset after a timeout") -> None:
        """Drop the connection (the next call makes a new one); calls in flight fail."""
        proto, self._proto = self._proto, None
        if proto is not None:
            _discard(proto, reason)

    async def close(self) -> None:
        self.reset("closed")

    async def _connected(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock serves one loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            proto = self._proto
            if proto is not None and not proto.closed and proto.loop is loop:
                return proto
            if proto is not None:  # lost, or made on another event loop
                _discard(proto, "replaced")
            proto = await self._connect()
            self._proto = proto
            self.connects += 1
            return proto

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        t = self.target
        async with asyncio.timeout(self.connect_timeout):
            if t.path is not None:
                _, proto = await loop.create_unix_connection(lambda: _Protocol(loop, self), t.path)
            else:
                _, proto = await loop.create_connection(
                    lambda: _Protocol(loop, self), t.host, t.port, ssl=_tls_context(t))
            try:
                if t.password is not None:
                    auth: tuple[str, ...] = (("AUTH", t.username, t.password) if t.username
                                             else ("AUTH", t.password))
                    await proto.send(hiredis.pack_command(auth))  # type: ignore[arg-type]
                if t.db:
                    select: tuple[str, ...] = ("SELECT", str(t.db))
                    await proto.send(hiredis.pack_command(select))  # type: ignore[arg-type]
            except RespError as exc:  # wrong password, no such database
                proto.fail(ConnectionError("Redis refused the connection setup"))
                raise ConnectionError(f"Redis refused the connection setup: {exc}") from exc
            except BaseException:
                proto.fail(ConnectionError("connection to Redis closed during setup"))
                raise
        return proto


def _discard(proto: _Protocol, reason: str) -> None:
    """Close ``proto`` from whichever thread and loop we are on (its loop may be finished)."""
    exc = ConnectionError(f"connection to Redis {reason}")
    if proto.closed:
        return
    if proto.loop.is_closed():  # nothing can run there any more: just let go of it
        proto.closed = True
        proto.waiting.clear()
        proto.out.clear()
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is proto.loop:
        proto.fail(exc)
    else:
        proto.loop.call_soon_threadsafe(proto.fail, exc)


def _tls_context(t: RespTarget) -> ssl.SSLContext | None:
    if not t.tls:
        return None
    ctx = ssl.create_default_context(cafile=t.ca_certs)
    if t.certfile:
        ctx.load_cert_chain(t.certfile, t.keyfile)
    if not t.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
