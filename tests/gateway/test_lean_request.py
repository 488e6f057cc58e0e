"""The lean routes' request: the same header answers as Starlette's; no body deadline armed
once the server holds the whole body."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.datastructures import Headers

from lockgate.api.lean_request import IndexedHeaders, LeanRequest
from lockgate.api.middleware import BodyReadTimeout, bounded_receive

RAW = [(b"content-length", b"12"), (b"authorization", b"Bearer a"), (b"x-dup", b"first"),
       (b"x-dup", b"second"), (b"x-latin", "é".encode("latin-1")), (b"x-empty", b"")]


def scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/", "headers": list(RAW)}


@pytest.mark.parametrize("name", ["content-length", "Content-Length", "AUTHORIZATION", "x-dup",
                                  "x-latin", "x-empty", "absent", ""])
def test_answers_as_starlette(name: str) -> None:
    ours, theirs = IndexedHeaders(scope()), Headers(scope=scope())
    assert ours.get(name) == theirs.get(name)
    assert ours.get(name, "d") == theirs.get(name, "d")
    assert (name in ours) == (name in theirs)
    assert ours.getlist(name) == theirs.getlist(name)
    if name in theirs:
        assert ours[name] == theirs[name]
    else:
        with pytest.raises(KeyError):
            ours[name]
    assert ours.raw == theirs.raw and ours.items() == theirs.items()


def test_the_request_uses_them_once() -> None:
    request = LeanRequest(scope())
    assert isinstance(request.headers, IndexedHeaders)
    assert request.headers is request.headers
    assert request.headers.get("x-dup") == "first"


class Cycle:
    """Stands in for uvicorn's request cycle: ``more_body`` False once the body is in."""

    def __init__(self, more_body: bool) -> None:
        self.more_body = more_body

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"{}", "more_body": False}


async def test_a_whole_body_held_by_the_server_arms_no_deadline() -> None:
    receive = bounded_receive(Cycle(more_body=False).receive, timeout=0.001)
    assert (await receive())["body"] == b"{}"


async def test_a_body_still_arriving_keeps_its_deadline() -> None:
    receive = bounded_receive(Cycle(more_body=True).receive, timeout=0.001)
    with pytest.raises(BodyReadTimeout):
        await receive()
