"""Shared HTTP plumbing for providers that talk JSON/SSE over HTTP.

:class:`UpstreamHTTP` owns one pooled keep-alive :class:`aiohttp.ClientSession`
(created lazily inside the running loop, re-created if the loop changed) and
implements, once for every HTTP provider:

* the four timeouts of :class:`~lockgate.settings.Timeouts`, each reported as its
  own :data:`~lockgate.providers.base.ErrorKind`: ``connect`` via aiohttp's
  socket-connect timeout, ``first_token`` (response headers and, for streams,
  the first SSE event), ``idle`` (gap between SSE events; also the body read of
  a non-stream answer) and ``total``, with one asyncio timer per phase;
* mapping of HTTP error statuses to :class:`ProviderError` kinds, with the
  upstream's own error message and ``retry_after`` parsed from
  ``retry-after-ms``, ``Retry-After`` seconds or an HTTP date;
* connection failures (``connection``), unparseable bodies (``bad_response``)
  and streams cut before EOF (``stream_cut``).

Wire-format knowledge (what ends a stream, what a body means) stays in the
provider modules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from lockgate.providers.base import ErrorKind, ProviderError
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


def parse_retry_after(headers: CIMultiDictProxy[str] | dict[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date)."""
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
    status: int, headers: CIMultiDictProxy[str] | dict[str, str], raw: bytes
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


class UpstreamHTTP:
    """One pooled HTTP client for one deployment, with lockgate's timeout and error rules."""

    __slots__ = ("_headers", "_limit", "_loop", "_session", "timeouts")

    def __init__(self, *, timeouts: Timeouts, headers: dict[str, str], max_connections: int = 64):
        self.timeouts = timeouts
        self._headers = {"Content-Type": "application/json", **headers}
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ session

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop and not session.closed:
            return session
        connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
        session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect),
            auto_decompress=True,
        )
        self._session, self._loop = session, loop
        return session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    # ------------------------------------------------------------ requests

    async def _open(
        self, url: URL, payload: bytes, deadline: float, kind: ErrorKind
    ) -> aiohttp.ClientResponse:
        """POST and wait for the response headers; HTTP errors become ProviderError."""
        session = self._get_session()
        try:
            async with asyncio.timeout_at(deadline):
                resp = await session.post(url, data=payload)
                if resp.status < 400:
                    return resp
                try:
                    raw = await resp.read()
                except aiohttp.ClientError:
                    raw = b""
                finally:
                    resp.release()
        except aiohttp.ConnectionTimeoutError:
            raise ProviderError(
                "timeout_connect", f"could not connect to upstream within {self.timeouts.connect}s"
            ) from None
        except TimeoutError:
            raise ProviderError(kind, _TIMEOUT_TEXT[kind]) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError("connection", f"upstream connection failed: {exc!r}") from None
        raise error_from_response(resp.status, resp.headers, raw)

    async def post_json(self, url: URL, payload: bytes) -> tuple[bytes, dict[str, Any]]:
        """POST ``payload`` and return ``(raw body, parsed JSON object)``."""
        t = self.timeouts
        now = asyncio.get_running_loop().time()
        total_dl = now + t.total
        first_dl = now + t.first_token
        resp = await self._open(
            url,
            payload,
            min(first_dl, total_dl),
            _timeout_kind(first_dl, total_dl, "timeout_first_token"),
        )
        idle_dl = asyncio.get_running_loop().time() + t.idle
        kind = _timeout_kind(idle_dl, total_dl, "timeout_idle")
        try:
            async with asyncio.timeout_at(min(idle_dl, total_dl)):
                raw = await resp.read()
        except TimeoutError:
            raise ProviderError(kind, _TIMEOUT_TEXT[kind]) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError(
                "connection", f"upstream connection failed while reading the answer: {exc!r}"
            ) from None
        finally:
            resp.release()
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
            ctype = resp.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                # a JSON document instead of an event stream (some servers ignore
                # ``stream``); other content types are parsed as SSE, leniently
                try:
                    async with asyncio.timeout_at(min(phase_dl, total_dl)):
                        raw = await resp.read()
                except (TimeoutError, aiohttp.ClientError, OSError):
                    raw = b""
                raise ProviderError(
                    "bad_response",
                    f"upstream did not stream (Content-Type {ctype!r}): "
                    f"{raw[:200].decode('utf-8', 'replace')!r}",
                    upstream_status=resp.status,
                )
            decoder = SSEDecoder()
            content = resp.content
            idle = False
            while True:
                if idle:
                    # measured from when we start waiting, so a slow consumer never
                    # turns into a spurious idle timeout
                    phase_dl = loop.time() + t.idle
                try:
                    async with asyncio.timeout_at(min(phase_dl, total_dl)):
                        data = await content.readany()
                except TimeoutError:
                    kind = _timeout_kind(phase_dl, total_dl, phase)
                    raise ProviderError(kind, _TIMEOUT_TEXT[kind]) from None
                except (aiohttp.ClientError, OSError) as exc:
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
            resp.release()
