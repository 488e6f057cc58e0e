"""read_json over the ASGI receive messages: pieces joined, 413 past the limit as the pieces
arrive, ClientDisconnect when the client leaves first, a body read before is reused."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from lockgate.api.request_io import read_json
from lockgate.errors import BadRequest, PayloadTooLarge


def request_of(*messages: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
               ) -> tuple[Request, list[dict[str, Any]]]:
    pending = list(messages)
    received: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = pending.pop(0) if pending else {"type": "http.disconnect"}
        received.append(message)
        return message

    scope = {"type": "http", "method": "POST", "headers": headers or []}
    return Request(scope, receive), received


def piece(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_pieces_are_joined() -> None:
    request, received = request_of(piece(b'{"a"', True), piece(b"", True), piece(b": 1}", False))
    assert await read_json(request, 1000) == {"a": 1}
    assert len(received) == 3  # nothing read past the last piece


async def test_past_the_limit_is_413_before_the_rest_arrives() -> None:
    request, received = request_of(piece(b"x" * 600, True), piece(b"x" * 600, True),
                                   piece(b"never read", False))
    with pytest.raises(PayloadTooLarge):
        await read_json(request, 1000)
    assert len(received) == 2


async def test_a_client_gone_mid_body_is_a_disconnect() -> None:
    request, _ = request_of(piece(b'{"a"', True), {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnect):
        await read_json(request, 1000)


async def test_an_empty_body_is_a_400() -> None:
    request, _ = request_of(piece(b"", False))
    with pytest.raises(BadRequest, match="empty"):
        await read_json(request, 1000)


async def test_a_body_read_before_is_reused() -> None:
    request, received = request_of(piece(b'{"b": 2}', False))
    assert await request.body() == b'{"b": 2}'
    assert await read_json(request, 1000) == {"b": 2}
    assert len(received) == 1
    small, _ = request_of(piece(b'{"b": 2}', False))
    await small.body()
    with pytest.raises(PayloadTooLarge):
        await read_json(small, 4)
