"""AlertCenter: one row and one delivery per open incident, across engines (processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from lockgate.alerts import (
    SIGNATURE_HEADER,
    Alert,
    AlertCenter,
    AlertCounter,
    WebhookSender,
    verify,
)
from lockgate.store import InvalidInput, NotFoundError, Store


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any], bool]] = []
        self.url = ""

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            ok = verify("s3cret", body, request.headers[SIGNATURE_HEADER])
            self.got.append((request.headers["X-Lockgate-Event"], await request.json(), ok))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.runner.cleanup()


def center_for(store: Store, receiver: Receiver | None = None,
               registry: CollectorRegistry | None = None) -> AlertCenter:
    sender = WebhookSender("s3cret", attempts=1) if receiver else None
    return AlertCenter(store.engine, sender=sender, url=receiver.url if receiver else None,
                       counter=AlertCounter(registry or CollectorRegistry()))


async def test_raise_once_dedups_then_resolve_frees_the_key(store: Store) -> None:
    center = center_for(store)
    seen: list[tuple[str, Alert]] = []

    async def hook(event: str, alert: Alert) -> None:
        seen.append((event, alert))

    center.hooks.append(hook)
    assert await center.raise_once("queue", "default:depth", "depth 12 >= 10", {"value": 12})
    assert not await center.raise_once("queue", "default:depth", "depth 13 >= 10")
    assert not await center.raise_once("queue", "default:depth", "depth 14 >= 10")
    [alert] = await center.list()
    assert (alert.state, alert.raised_count, alert.details) == ("open", 3, {"value": 12})
    assert [e for e, _ in seen] == ["alert.raised"]
    assert await center.is_open("queue", "default:depth")
    assert await center.resolve("queue", "default:depth")
    assert not await center.resolve("queue", "default:depth")  # nothing open any more
    assert [e for e, _ in seen] == ["alert.raised", "alert.resolved"]
    # a later raise is a new incident, with a new row
    assert await center.raise_once("queue", "default:depth", "again")
    rows = await center.list()
    assert [a.state for a in rows] == ["open", "resolved"]
    assert rows[0].id != rows[1].id
    assert [a.id for a in await center.list("resolved")] == [rows[1].id]


async def test_many_raisers_on_two_engines_give_one_row_and_one_delivery(
    store: Store, db_url: str, receiver: Receiver
) -> None:
    """Two engines on one database stand for two gateways: 40 concurrent raises."""
    other = await Store.open(db_url)
    try:
        a, b = center_for(store, receiver), center_for(other, receiver)
        results = await asyncio.gather(*[
            (a if i % 2 else b).raise_once("drift", "override_rate|task=t|deployment=d",
                                           "override rate up", {"i": i})
            for i in range(40)
        ])
        assert sum(results) == 1
        [alert] = await a.list()
        assert alert.raised_count == 40
        assert [(e, ok) for e, _, ok in receiver.got] == [("alert.raised", True)]
        assert receiver.got[0][1]["subject"] == "override_rate|task=t|deployment=d"
        assert (await a.get(alert.id)).delivery == "delivered 204 (attempt 1)"
        # resolving from both at once: one resolution, one delivery
        done = await asyncio.gather(a.resolve("drift", alert.subject),
                                    b.resolve("drift", alert.subject))
        assert sorted(done) == [False, True]
        assert [e for e, _, _ in receiver.got] == ["alert.raised", "alert.resolved"]
        await a.sender.aclose()  # type: ignore[union-attr]
        await b.sender.aclose()  # type: ignore[union-attr]
    finally:
        await other.close()


async def test_ack_keeps_the_incident_open_unless_resolve(store: Store) -> None:
    center = center_for(store)
    await center.raise_once("queue", "q:dlq", "dlq 1 >= 1")
    [alert] = await center.list("open")
    acked = await center.ack(alert.id, "alice")
    assert (acked.state, acked.acked_by) == ("acked", "alice")
    assert acked.acked_at is not None
    # still the same incident: raising again does not open a new one
    assert not await center.raise_once("queue", "q:dlq", "dlq 2 >= 1")
    again = await center.ack(alert.id, "bob")  # first acknowledgement is kept
    assert again.acked_by == "alice"
    closed = await center.ack(alert.id, "bob", resolve=True)
    assert closed.state == "resolved" and closed.resolved_at is not None
    assert await center.raise_once("queue", "q:dlq", "dlq 3 >= 1")
    with pytest.raises(NotFoundError):
        await center.ack(999_999, "alice")
    with pytest.raises(InvalidInput):
        await center.ack(alert.id, "  ")


async def test_bad_input_is_invalid_input(store: Store) -> None:
    center = center_for(store)
    with pytest.raises(InvalidInput):
        await center.raise_once("", "x", "m")
    with pytest.raises(InvalidInput):
        await center.raise_once("k", "x" * 600, "m")
    with pytest.raises(InvalidInput):
        await center.list("bogus")
    with pytest.raises(InvalidInput):
        await center.list(limit=0)


async def test_counter_on_metrics(store: Store) -> None:
    registry = CollectorRegistry()
    center = center_for(store, registry=registry)
    await center.raise_once("drift", "cost_per_call|task=-|deployment=d1", "cost up")
    await center.raise_once("drift", "cost_per_call|task=-|deployment=d1", "cost up")
    await center.resolve("drift", "cost_per_call|task=-|deployment=d1")
    text = generate_latest(registry).decode()
    assert 'lockgate_alerts_total{event="raised",kind="drift"} 1.0' in text
    assert 'lockgate_alerts_total{event="resolved",kind="drift"} 1.0' in text
