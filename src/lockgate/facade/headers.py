"""Which headers a reverse proxy forwards: everything but hop-by-hop ones (RFC 9110 7.6.1).

Headers named in ``Connection`` are hop-by-hop too. Multiple headers of one name
(``Set-Cookie``) are kept, in order, as raw bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

__all__ = ["HOP_BY_HOP", "forward_headers", "media_type"]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})


def forward_headers(
    raw: Iterable[tuple[bytes, bytes]], *, drop: Iterable[str] = (),
) -> CIMultiDict[str]:
    """The headers to send on: ``raw`` minus hop-by-hop, ``Connection``-listed and ``drop``
    (lower-case names)."""
    pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    skip = set(HOP_BY_HOP)
    skip.update(drop)
    for name, value in pairs:
        if name.lower() == "connection":
            skip.update(t.strip().lower() for t in value.split(",") if t.strip())
    return CIMultiDict((k, v) for k, v in pairs if k.lower() not in skip)


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
