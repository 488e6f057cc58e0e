"""A lean HTTP/1.1 client for the providers: asyncio Protocols + httptools, keep-alive pool.

Built for :class:`~lockgate.providers.upstream_http.UpstreamHTTP` (``POST`` of a JSON body,
answers read whole or streamed) and nothing more general: see :mod:`.pool` (limits,
waiters, reuse and the one retry), :mod:`.connection` (framing, keep-alive rules),
:mod:`.response` (body buffer, decoding, backpressure), :mod:`.request` (request heads and
header checks) and :mod:`.errors`.
"""

from lockgate.providers.http1.errors import (
    BadResponse,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    InvalidHeader,
)
from lockgate.providers.http1.pool import Pool, default_ssl_context
from lockgate.providers.http1.request import USER_AGENT, Origin, check_header, origin_of, post_head
from lockgate.providers.http1.response import HIGH_WATER, Response

__all__ = [
    "HIGH_WATER",
    "USER_AGENT",
    "BadResponse",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "InvalidHeader",
    "Origin",
    "Pool",
    "Response",
    "check_header",
    "default_ssl_context",
    "origin_of",
    "post_head",
]
