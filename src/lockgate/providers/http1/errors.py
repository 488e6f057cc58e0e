"""Failures of the lean HTTP/1.1 client, as plain exceptions (no lockgate error kinds here).

:class:`~lockgate.providers.upstream_http.UpstreamHTTP` maps them to
:class:`~lockgate.providers.base.ProviderError` kinds. Timeouts of a phase are the builtin
:class:`TimeoutError`; only a connect attempt that outlived its own ``connect`` timeout is
:class:`ConnectTimeout`.
"""

from __future__ import annotations

__all__ = ["BadResponse", "ConnectError", "ConnectTimeout", "ConnectionLost", "InvalidHeader"]


class ConnectTimeout(TimeoutError):
    """The TCP (+TLS) connect did not finish within the connect timeout."""


class ConnectError(OSError):
    """The connection could not be opened (refused, DNS, TLS handshake, ...)."""


class ConnectionLost(OSError):
    """The connection closed or broke before the response was complete.

    ``got_bytes`` says whether any byte of the response had arrived: a reused connection
    lost before that is retried once on a fresh one; never after.
    """

    def __init__(self, message: str, *, got_bytes: bool) -> None:
        super().__init__(message)
        self.got_bytes = got_bytes


class BadResponse(Exception):
    """The upstream's bytes are not a valid HTTP/1.x response (or an undecodable body)."""


class InvalidHeader(ValueError):
    """A request header name or value holds CR, LF or NUL (header injection): refused."""
