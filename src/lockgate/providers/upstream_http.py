"""Shared HTTP plumbing for providers that talk JSON/SSE over HTTP.

:class:`UpstreamHTTP` owns one pool of keep-alive HTTP/1.1 connections
(:mod:`lockgate.providers.http1`: asyncio protocols + httptools, created lazily inside
the running loop, re-created if the loop changed; at most ``max_connections`` open,
callers beyond that wait in FIFO order within their phase deadline) and implements,
once for every HTTP provider:

* the four timeouts of :class:`~lockgate.settings.Timeouts`, each reported as its
  own :data:`~lockgate.providers.base.ErrorKind`: ``connect`` (TCP + TLS connect of a
  new connection), ``first_token`` (pool wait + response headers and, for streams, the
  first SSE event), ``idle`` (gap between SSE events; also the body read of a non-stream
  answer) and ``total``, with one loop timer per wait;
* mapping of HTTP error statuses to :class:`ProviderError` kinds, with the
  upstream's own error message and ``retry_after`` parsed from
  ``retry-after-ms``, ``Retry-After`` seconds or an HTTP date;
* connection failures (``connection``), malformed HTTP or unparseable bodies
  (``bad_response``) and streams cut before EOF (``stream_cut``);
* a 3xx answer is ``bad_response`` naming its ``Location``: redirects are not followed
  (a POST with credentials is not re-sent elsewhere; aiohttp, used before, followed them).

Requests are ``POST`` with ``Content-Type: application/json``, ``Content-Length``, a
``User-Agent: lockgate/<version>`` and the deployment's headers, which are checked for
CR/LF/NUL when the client is built (:class:`~lockgate.errors.ConfigError`, never sent).
An abandoned stream (the iterator closed early) drops its connection instead of reusing
it. Wire-format knowledge (what ends a stream, what a body means) stays in the provider
modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncGenerator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from yarl import URL

from lockgate.errors import ConfigError
from lockgate.providers.base import ErrorKind, ProviderError
from lockgate.providers.http1 import (
    BadResponse,
    ConnectTimeout,
    InvalidHeader,
    Origin,
    Pool,
    Response,
    check_header,
    origin_of,
    post_head,
)
from lockgate.providers.sse import SSEDecoder, SSEEvent
from lockgate.settings import Timeouts

__all__ = [
    "UpstreamHTTP",
    "error_from_response",
    "join_url",
    "kind_for_status",
    "parse_retry_after",
]


def join_url(base: str, path: str) -> URL:
    """``base`` (with or without trailing slash) + ``path`` as a pre-parsed URL."""
    return URL(base.rstrip("/") + "/" + path.lstrip("/"))


def kind_for_status(status: int) -> ErrorKind:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 402:
        return "payment"
    if status == 404:
        return "not_found"
    if status >= 500 or status == 408:
        return "server_error"
    return "bad_request"


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date).

    ``headers`` has lower-case names (as :attr:`Response.headers`)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(raw: bytes) -> str:
    """The upstream's own message from OpenAI, Anthropic or ad-hoc error bodies."""
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return text[:500] or "(empty body)"
    if isinstance(doc, dict):
        err = doc.get("error", doc)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                etype = err.get("type") or err.get("code")
                return f"{msg} ({etype})" if isinstance(etype, str) and etype else str(msg)
        elif isinstance(err, str):
            return err
        if isinstance(doc.get("detail"), str):
            return str(doc["detail"])
    return raw.decode("utf-8", "replace")[:500]


def error_from_response(
    status: int, headers: Mapping[str, str], raw: bytes
) -> ProviderError:
    """The ProviderError for an HTTP error answer."""
    return ProviderError(
        kind_for_status(status),
        f"upstream returned {status}: {_error_message(raw)}",
        upstream_status=status,
        retry_after=parse_retry_after(headers),
    )


def _timeout_kind(phase_deadline: float, total_deadline: float, phase: ErrorKind) -> ErrorKind:
    return "timeout_total" if total_deadline <= phase_deadline else phase


_TIMEOUT_TEXT: dict[str, str] = {
    "timeout_first_token": "no answer from upstream within first_token timeout",
    "timeout_idle": "upstream went silent beyond the idle timeout",
    "timeout_total": "upstream call exceeded the total timeout",
}


_MAX_HEADS = 64
"""Pre-built request heads kept per client (one per URL; providers use one or two)."""


def _discard(pool: Pool) -> None:
    """Close ``pool``'s connections from whatever loop is running now."""
    loop = pool.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        pool.close()
    elif not loop.is_closed():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(pool.close)
    # a closed loop's transports cannot be closed any more: dropped with the pool


class UpstreamHTTP:
    """One pooled HTTP client for one deployment, with lockgate's timeout and error rules."""

    __slots__ = ("_headers", "_heads", "_idle_timeout", "_limit", "_pool", "_ssl", "timeouts")

    def __init__(
        self,
        *,
        timeouts: Timeouts,
        headers: dict[str, str],
        max_connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        pool_idle_timeout: float = 60.0,
    ):
        self.timeouts = timeouts
        self._headers = {"Content-Type": "application/json", **headers}
        for name, value in self._headers.items():
            try:
                check_header(name, value)
            except InvalidHeader as exc:
                raise ConfigError(f"upstream request headers: {exc}") from None
        self._limit = max_connections
        self._ssl = ssl_context
        self._idle_timeout = pool_idle_timeout
        self._pool: Pool | None = None
        self._heads: dict[URL, tuple[Origin, bytes]] = {}

    # ------------------------------------------------------------ pool

    def _get_pool(self) -> Pool:
        pool = self._pool
        if pool is not None and not pool.closed and pool.loop is asyncio.get_running_loop():
            return pool
        if pool is not None:
            _discard(pool)
        pool = Pool(
            limit=self._limit,
            connect_timeout=self.timeouts.connect,
            idle_timeout=self._idle_timeout,
            ssl_context=self._ssl,
        )
        self._pool = pool
        return pool

    @property
    def pool(self) -> Pool | None:
        """The current connection pool (None before the first request or after aclose)."""
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            _discard(pool)
            await asyncio.sleep(0)  # let the transports run their close callbacks

    def _head(self, url: URL) -> tuple[Origin, bytes]:
        got = self._heads.get(url)
        if got is None:
            try:
                got = (origin_of(url), post_head(url, self._headers))
            except ValueError as exc:
                # as aiohttp did (an unusable URL is a ClientError there): "connection"
                raise ProviderError("connection", f"cannot send to {url}: {exc}") from None
            if len(self._heads) >= _MAX_HEADS:
                self._heads.clear()
            self._heads[url] = got
        return got

    # ------------------------------------------------------------ requests

    async def _open(
        self, url: URL, payload: bytes, deadline: float, kind: ErrorKind
    ) -> Response:
        """POST and wait for the response headers; HTTP errors become ProviderError."""
        pool = self._get_pool()
        origin, prefix = self._head(url)
        head = prefix + b"%d\r\n\r\n" % len(payload)
        try:
            resp = await pool.request(origin, head, payload, deadline)
            if resp.status < 300:
                return resp
            try:
                raw = await resp.read(deadline)
            except (BadResponse, OSError):
                raw = b""
            finally:
                resp.close()
        except ConnectTimeout:
            raise ProviderError(
                "timeout_connect", f"could not connect to upstream within {self.timeouts.connect}s"
            ) from None
        except TimeoutError:
            raise ProviderError(kind, _TIMEOUT_TEXT[kind]) from None
        except BadResponse as exc:
            raise ProviderError("bad_response", str(exc)) from None
        except OSError as exc:
            raise ProviderError("connection", f"upstream connection failed: {exc!r}") from None
        if resp.status < 400:
            raise ProviderError(
                "bad_response",
                f"upstream answered {resp.status} (redirect to "
                f"{resp.headers.get('location', '?')!r}); redirects are not followed: "
                "point base_url at the final URL",
                upstream_status=resp.status,
            )
        raise error_from_response(resp.status, resp.headers, raw)

    async def post_json(self, url: URL, payload: bytes) -> tuple[bytes, dict[str, Any]]:
        """POST ``payload`` and return ``(raw body, parsed JSON object)``."""
        t = self.timeouts
        loop = asyncio.get_running_loop()
        now = loop.time()
        total_dl = now + t.total
        first_dl = now + t.first_token
        resp = await self._open(
            url,
            payload,
            min(first_dl, total_dl),
            _timeout_kind(first_dl, total_dl, "timeout_first_token"),
        )
        try:
            if resp.done:
                raw = resp.body()  # all there: no wait, no idle timer
            else:
                idle_dl = loop.time() + t.idle
                kind = _timeout_kind(idle_dl, total_dl, "timeout_idle")
                try:
                    raw = await resp.read(min(idle_dl, total_dl))
                except TimeoutError:
                    raise ProviderError(kind, _TIMEOUT_TEXT[kind]) from None
        except BadResponse as exc:
            raise ProviderError("bad_response", str(exc), upstream_status=resp.status) from None
        except OSError as exc:
            raise ProviderError(
                "connection", f"upstream connection failed while reading the answer: {exc!r}"
            ) from None
        finally:
            resp.close()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(
                "bad_response",
                f"upstream answer is not JSON: {raw[:200].decode('utf-8', 'replace')!r}",
                upstream_status=resp.status,
            ) from None
        if not isinstance(doc, dict):
            raise ProviderError(
                "bad_response", "upstream answer is not a JSON object", upstream_status=resp.status
            )
        return raw, doc

    async def stream(self, url: URL, payload: bytes) -> AsyncGenerator[SSEEvent, None]:
        """POST ``payload`` and yield SSE events as they arrive.

        Ends normally at a clean EOF (the caller checks for its end marker and
        raises ``stream_cut`` itself when it is missing); a connection error
        mid-body raises ``stream_cut``. Close the iterator (``aclosing``) when
        done early: the connection is then dropped instead of reused.
        """
        t = self.timeouts
        loop = asyncio.get_running_loop()
        now = loop.time()
        total_dl = now + t.total
        phase_dl = now + t.first_token
        phase: ErrorKind = "timeout_first_token"
        resp = await self._open(
            url, payload, min(phase_dl, total_dl), _timeout_kind(phase_dl, total_dl, phase)
        )
        try:
            ctype = resp.headers.get("content-type", "")
            if ctype.startswith("application/json"):
                # a JSON document instead of an event stream (some servers ignore
                # ``stream``); other content types are parsed as SSE, leniently
                try:
                    raw = await resp.read(min(phase_dl, total_dl))
                except (TimeoutError, BadResponse, OSError):
                    raw = b""
                raise ProviderError(
                    "bad_response",
                    f"upstream did not stream (Content-Type {ctype!r}): "
                    f"{raw[:200].decode('utf-8', 'replace')!r}",
                    upstream_status=resp.status,
                )
            decoder = SSEDecoder()
            idle = False
            while True:
                if idle:
                    # measured from when we start waiting, so a slow consumer never
                    # turns into a spurious idle timeout
                    phase_dl = loop.time() + t.idle
                try:
                    data = await resp.read_some(min(phase_dl, total_dl))
                except TimeoutError:
                    kind = _timeout_kind(phase_dl, total_dl, phase)
                    raise ProviderError(kind, _TIMEOUT_TEXT[kind]) from None
                except BadResponse as exc:
                    raise ProviderError("bad_response", str(exc)) from None
                except OSError as exc:
                    raise ProviderError(
                        "stream_cut", f"upstream stream broke off: {exc!r}"
                    ) from None
                if not data:
                    return
                events = decoder.feed(data)
                if events:
                    if not idle:
                        idle, phase = True, "timeout_idle"
                    for event in events:
                        yield event
        finally:
            resp.close()
