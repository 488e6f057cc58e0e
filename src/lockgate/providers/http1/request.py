"""Request heads: where a URL goes (:class:`Origin`) and its pre-built ``POST`` head.

A head is built once per URL and header set (:func:`post_head`) and reused for every
request: the request line ``POST <path?query> HTTP/1.1``, ``Host`` (with the port when it
is not the scheme's default; IPv6 literals in brackets), the caller's headers (one per
name, case-insensitively; a later one wins), a ``User-Agent: lockgate/<version>`` unless
given, and the ``Content-Length:`` prefix; the caller appends the length digits and
``\\r\\n\\r\\n``. Header names and values holding CR, LF or NUL are refused
(:class:`InvalidHeader`), never sent; ``Host``, ``Content-Length``, ``Transfer-Encoding``
and ``Connection`` from the caller are dropped (framing and routing are the client's).
"""

from __future__ import annotations

from typing import NamedTuple

from yarl import URL

from lockgate import __version__
from lockgate.providers.http1.errors import InvalidHeader

__all__ = ["USER_AGENT", "Origin", "check_header", "origin_of", "post_head"]

USER_AGENT = f"lockgate/{__version__}"
_BAD = ("\r", "\n", "\0")
_TOKEN_BAD = frozenset(' \t"(),/:;<=>?@[\\]{}')


class Origin(NamedTuple):
    """Where connections go; the pool key."""

    host: str
    port: int
    tls: bool


def origin_of(url: URL) -> Origin:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r} (http or https)")
    host = url.raw_host
    if not host:
        raise ValueError(f"URL has no host: {url}")
    tls = scheme == "https"
    return Origin(host, url.port or (443 if tls else 80), tls)


def check_header(name: str, value: str) -> None:
    """Refuse header injection: CR/LF/NUL anywhere, or a name that is not an HTTP token."""
    if not name or any(c in _TOKEN_BAD or ord(c) < 33 or ord(c) > 126 for c in name):
        raise InvalidHeader(f"invalid HTTP header name {name!r}")
    if any(c in value for c in _BAD):
        # the value may be a secret (an API key): name the header only
        raise InvalidHeader(f"header {name!r} holds a CR, LF or NUL character (refused)")


def _host_header(url: URL, origin: Origin) -> str:
    host = origin.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    default = 443 if origin.tls else 80
    return host if origin.port == default else f"{host}:{origin.port}"


def post_head(url: URL, headers: dict[str, str]) -> bytes:
    """``POST`` head for ``url`` up to (and including) ``Content-Length: ``."""
    origin = origin_of(url)
    target = url.raw_path_qs or "/"
    if any(c in target for c in _BAD) or " " in target:
        raise InvalidHeader(f"request target {target!r} holds whitespace or control characters")
    lines = [f"POST {target} HTTP/1.1", f"Host: {_host_header(url, origin)}"]
    chosen: dict[str, tuple[str, str]] = {}  # by lower-cased name: a later one wins
    for name, value in headers.items():
        check_header(name, value)
        low = name.lower()
        if low in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # framing and routing are ours
        chosen[low] = (name, value)
    lines += [f"{name}: {value}" for name, value in chosen.values()]
    if "user-agent" not in chosen:
        lines.append(f"User-Agent: {USER_AGENT}")
    lines.append("Content-Length: ")
    # latin-1: what HTTP/1.1 allows in header values; a non-latin-1 value fails here
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise InvalidHeader(f"a request header is not latin-1 text: {exc.reason}") from None
