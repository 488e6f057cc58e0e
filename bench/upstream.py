"""A minimal, very fast OpenAI-compatible stand-in upstream for the overhead bench.

It is the yardstick the gateways are measured against, so it must clearly
out-run them: a raw asyncio protocol on uvloop with the httptools parser, no
framework, and pre-rendered responses. It answers:

* ``POST /v1/chat/completions`` -- a fixed ``chat.completion`` with ``usage``;
  with ``"stream": true`` in the body, a short SSE stream (two content chunks,
  a usage chunk and ``[DONE]``).
* ``GET /v1/models`` -- one model, ``bench-model``.
* ``GET /health`` -- ``{"status":"ok"}``.
* anything else -- 404 with an OpenAI-style error body.

HTTP/1.1 keep-alive and pipelining are handled (responses are written in
order, from the parser callback). It does not read the request JSON beyond a
byte search for ``"stream": true``; it is a stand-in, not a model server.

Run: ``python bench/upstream.py --port 9100 [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any, cast

import httptools
import orjson

__all__ = ["CHAT_COMPLETION", "UpstreamProtocol", "main", "serve"]

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    "system_fingerprint": None,
}


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: " + content_type + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def _sse_stream() -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "bench-model"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "o"},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "k"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": CHAT_COMPLETION["usage"]},
    ]
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return _response(b"200 OK", body, b"text/event-stream")


_CHAT = _response(b"200 OK", orjson.dumps(CHAT_COMPLETION))
_STREAM = _sse_stream()
_MODELS = _response(
    b"200 OK",
    orjson.dumps({"object": "list", "data": [
        {"id": "bench-model", "object": "model", "created": 1_700_000_000, "owned_by": "bench"}]}),
)
_HEALTH = _response(b"200 OK", b'{"status":"ok"}')
_NOT_FOUND = _response(
    b"404 Not Found",
    b'{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}',
)
_STREAM_MARKERS = (b'"stream":true', b'"stream": true')


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer each on completion."""

    __slots__ = ("_body", "_parser", "_transport", "_url")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; both have write/close.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_response(b"400 Bad Request", b'{"error":"bad request"}'))
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            body = b"".join(self._body)
            out = _STREAM if any(m in body for m in _STREAM_MARKERS) else _CHAT
        elif method == b"GET" and path.endswith(b"/models"):
            out = _MODELS
        elif method == b"GET" and path == b"/health":
            out = _HEALTH
        else:
            out = _NOT_FOUND
        transport.write(out)
        if not self._parser.should_keep_alive():
            transport.close()


async def serve(host: str, port: int, reuse_port: bool = False) -> None:
    """Serve until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, host, port, reuse_port=reuse_port or None, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(serve(args.host, args.port, args.reuse_port))
    else:
        uvloop.run(serve(args.host, args.port, args.reuse_port))


if __name__ == "__main__":
    main()
