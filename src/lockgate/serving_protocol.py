"""uvicorn's httptools protocol, writing a whole plain response with one ``write``.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two
``transport.write`` calls, each a ``send()`` system call at once (uvloop writes eagerly),
each delivering a segment and waking the client. On loopback, where the kernel's delivery is
charged to the sender, those writes were the largest single item in the gateway's profile
(``RequestResponseCycle.send`` ~11 % of its CPU at c=8; bench/RESULTS.md, issue 12).

:class:`CoalescingHttpToolsProtocol` (``uvicorn.run(http=...)``) holds the head of a response
that has a ``Content-Length`` (every non-streaming response: the body follows in the same
task) and writes it together with the body. Streaming responses (chunked: SSE) still send
their head at once, as before. What a client receives is byte for byte the same; a
connection the client closed meanwhile gets nothing written, as before; a response whose
body never comes (an app error after the head) ends with the connection closed, as before,
just without the head.

Everything else is uvicorn's own code: the head is built and validated by
``RequestResponseCycle.send`` itself, which writes into a stand-in for the transport.
"""

from __future__ import annotations

from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["HTTP_PROTOCOL", "CoalescingHttpToolsProtocol"]

HTTP_PROTOCOL = "lockgate.serving_protocol:CoalescingHttpToolsProtocol"
"""What ``uvicorn.run(http=...)`` takes (an import string, so workers load it too)."""


class _HeldWrites:
    """Stands in for the transport while uvicorn writes: collects, flushes on ``close``."""

    __slots__ = ("parts", "transport")

    def __init__(self, transport: Any, parts: list[bytes] | None = None) -> None:
        self.transport = transport
        self.parts: list[bytes] = parts if parts is not None else []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        parts, self.parts = self.parts, []
        if parts and not self.transport.is_closing():
            self.transport.write(b"".join(parts))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingCycle(RequestResponseCycle):
    """One request/response: the head of a fixed-length response waits for its body."""

    held: list[bytes] | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            real = self.transport
            hold = _HeldWrites(real)
            self.transport = hold  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = real
            if self.chunked_encoding or not self.response_started:
                hold.flush()  # a stream: its head goes out now
            else:
                self.held = hold.parts
            return
        held = self.held
        if held is None:
            await super().send(message)
            return
        self.held = None
        real = self.transport
        hold = _HeldWrites(real, held)
        self.transport = hold  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = real
            hold.flush()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request cycles are :class:`CoalescingCycle`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # the cycle was just made; its task has not run yet, so it sends as the subclass
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = CoalescingCycle
