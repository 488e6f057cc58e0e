"""Incremental Server-Sent Events decoding and encoding.

:class:`SSEDecoder` turns arbitrary byte slices of an ``text/event-stream``
body into complete ``(event, data)`` pairs without buffering more than one
unfinished line. ``\\n`` and ``\\r\\n`` line endings are supported (a lone
``\\r`` is not: no model server uses it). ``data`` keeps the raw bytes so the
caller decides whether and how to parse them (``[DONE]`` is not JSON).
"""

from __future__ import annotations

__all__ = ["SSEDecoder", "SSEEvent", "encode_data", "encode_event"]

SSEEvent = tuple[str | None, bytes]
"""``(event name or None, data bytes)`` of one dispatched event."""


class SSEDecoder:
    """Feed bytes, get the events completed by them."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\n" not in buf:
            self._buf = buf
            return []
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    out.append((self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self._data = []
                self._event = None
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
            # comments (":...") and other fields (id, retry) are ignored
        return out

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are held."""
        return bool(self._buf or self._data)


def encode_data(data: bytes) -> bytes:
    """One ``data:`` event (the OpenAI stream framing)."""
    return b"data: " + data + b"\n\n"


def encode_event(event: str, data: bytes) -> bytes:
    """One named event (the Anthropic stream framing)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
