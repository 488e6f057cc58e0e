"""Fixtures: source/sink/dead-letter URLs with unique names on each real broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from lockgate.events.transports import EventTransport, open_transport


@pytest.fixture(params=["nats", "redis", "amqp"])
def urls(request: pytest.FixtureRequest) -> dict[str, str]:
    tag = "lgev" + uuid.uuid4().hex[:8]
    kind = request.param
    if kind == "nats":
        base = "nats://127.0.0.1:4222/"
        src, dst = f"{tag}.in", f"{tag}.out"
        return {
            "src": base + src,
            "dst": base + dst,
            "dlq": f"{base}{src}.dlq?stream=LG_{tag.upper()}_IN",
        }
    if kind == "redis":
        base = "redis://127.0.0.1:6379/0/"
        return {"src": f"{base}{tag}:in", "dst": f"{base}{tag}:out", "dlq": f"{base}{tag}:in:dlq"}
    base = "amqp://guest:guest@127.0.0.1:5672/"
    return {"src": f"{base}{tag}.in", "dst": f"{base}{tag}.out", "dlq": f"{base}{tag}.in.dlq"}


@pytest.fixture
async def ends(urls: dict[str, str]) -> AsyncIterator[dict[str, EventTransport]]:
    made = {name: open_transport(u, group="g-" + name, lease=2.0) for name, u in urls.items()}
    for t in made.values():
        await t.open()
    yield made
    for name in ("src", "dst", "dlq"):
        await made[name].drop()
    for t in made.values():
        await t.aclose()
