"""Untrusted JSON, read once with a nesting limit (:data:`MAX_JSON_DEPTH`).

orjson reads documents nested up to 1,024 levels but cannot write more than 254 again, and
lockgate re-encodes what it reads (upstream bodies, cache keys, job input, RAG metadata,
tool inputs). So every reader of client JSON (request bodies, multipart JSON fields, batch
file lines, tool-call arguments, broker messages) goes through :func:`loads_checked`, which
refuses deeper documents at the door; the HTTP adapters turn :class:`JsonTooDeep` into a 400.

Depth counts containers: ``{}`` is 1, ``{"a": [1]}`` is 2. The check is one C-speed count
of ``[`` and ``{`` in the raw text; only a document with more brackets than the limit is
walked (iteratively, containers only).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["MAX_JSON_DEPTH", "JsonTooDeep", "check_depth", "first_too_deep_line",
           "loads_checked"]

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays/objects accepted from a client."""


class JsonTooDeep(ValueError):
    """A JSON document nested deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON is nested more than {limit} levels deep")
        self.limit = limit


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH, raw: bytes | str | None = None) -> None:
    """Raise :class:`JsonTooDeep` if ``value`` nests containers deeper than ``limit``.

    ``raw`` (the text ``value`` was parsed from) lets the common case skip the walk.
    """
    if not isinstance(value, dict | list):
        return
    if raw is not None:
        brackets = (raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes)
                    else raw.count("[") + raw.count("{"))
        if brackets <= limit:
            return
    if _depth_exceeds(value, limit):
        raise JsonTooDeep(limit)


def loads_checked(raw: bytes | bytearray | memoryview | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """``orjson.loads`` plus the depth limit (``orjson.JSONDecodeError`` / :class:`JsonTooDeep`,
    both ``ValueError``)."""
    data = bytes(raw) if isinstance(raw, bytearray | memoryview) else raw
    value = orjson.loads(data)
    check_depth(value, limit, data)
    return value


def first_too_deep_line(data: bytes, limit: int = MAX_JSON_DEPTH) -> int | None:
    """The number (1-based) of the first JSON line of ``data`` (JSONL) nested deeper than
    ``limit``; lines that are not JSON are left to whoever parses the file."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return None
    for lineno, line in enumerate(data.splitlines(), 1):
        if line.count(b"[") + line.count(b"{") <= limit:
            continue
        try:
            loads_checked(line, limit)
        except JsonTooDeep:
            return lineno
        except orjson.JSONDecodeError:
            continue
    return None
