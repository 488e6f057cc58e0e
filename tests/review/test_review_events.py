"""An event of a reviewed task waits for a person, then is published (or dead-lettered) once.

Real broker (Redis Streams), real store, the stand-in upstream: the event is acknowledged
and held by the review queue; a redelivery of the same event id makes no second item; after
the decision the consumer's sweeper publishes the edited enrichment under the original id,
and a rejected event goes to the dead-letter stream with the reason.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lockgate.events.consumer import EventConsumer
from lockgate.events.review_gate import event_resumer, review_id_for_event, reviewed_enricher
from lockgate.events.transports import EventTransport, open_transport
from lockgate.pipeline.call import Principal
from lockgate.runtime import Runtime
from lockgate.settings import parse_config

ADMIN = Principal(key_id="alice", team_id=None, is_master=True)


async def read_all(t: EventTransport, n: int, timeout: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for m in await t.fetch(n - len(got), 0.2):
            got.append(m.data)
            await t.ack(m)
    return got


@pytest.mark.asyncio
async def test_reviewed_events(upstream: str, database_url: str, tmp_path: Path) -> None:
    tag = "lgrev" + uuid.uuid4().hex[:8]
    base = "redis://127.0.0.1:6379/0/"
    urls = {"src": f"{base}{tag}:in", "dst": f"{base}{tag}:out", "dlq": f"{base}{tag}:in:dlq"}
    cfg = parse_config(json.dumps({
        "home": str(tmp_path), "database_url": database_url,
        "models": [{"name": "fast", "provider": "openai", "base_url": upstream + "/v1",
                    "model": "stub-fast"}],
        "jobs": {"default_model": "fast", "tasks": [{
            "name": "refund", "prompt": "echo:{{input.doc}}",
            "output_schema": {"type": "object", "required": ["amount"]}}]},
        "review": {"sweep_interval_s": 0.1, "policies": {"refund": {
            "when": {"predicates": ["$.amount > 100"]}, "mode": "async"}}},
    }))
    rt = await Runtime.start(cfg, jobs=False, warm_up=False)
    readers = {n: open_transport(u, group="reader-" + n, lease=2.0) for n, u in urls.items()}
    for t in readers.values():
        await t.open()
    src = open_transport(urls["src"], group="workers", lease=2.0)
    dst = open_transport(urls["dst"], group="workers", lease=2.0)
    try:
        assert rt.review is not None
        runner = rt.task_runner("events")
        rt.review.resumers["events:refund"] = event_resumer(src, dst)
        consumer = EventConsumer(src, dst, reviewed_enricher(runner, "refund", rt.review))

        async def run_until(pred: Any, timeout: float = 15.0) -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(consumer.run(stop))
            sweeper = asyncio.create_task(rt.review.run_sweeper(stop))
            deadline = time.monotonic() + timeout
            try:
                while not await pred() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await task
                await sweeper

        small = {"id": "e-small", "doc": json.dumps({"amount": 20})}
        big = {"id": "e-big", "doc": json.dumps({"amount": 900})}
        bad = {"id": "e-bad", "doc": json.dumps({"amount": 5000})}
        for ev in (small, big, bad):
            await readers["src"].publish(ev, event_id=ev["id"])

        async def parked_two() -> bool:
            return consumer.stats.parked >= 2 and consumer.stats.forwarded >= 1

        await run_until(parked_two)
        assert consumer.stats.parked == 2 and consumer.stats.forwarded == 1
        (first,) = await read_all(readers["dst"], 1)
        assert first["id"] == "e-small" and first["enrichment"]["output"] == {"amount": 20}
        big_id = review_id_for_event("refund", "e-big")
        bad_id = review_id_for_event("refund", "e-bad")
        item = await rt.review.repo.get(big_id)
        assert item.source == "events" and item.input == big and item.state == "pending"

        # the broker redelivers e-big (a new message, same event id): no second item
        consumer.dedup = type(consumer.dedup)()  # as if a fresh consumer with no dedup memory
        await readers["src"].publish(big, event_id="e-big")

        async def parked_three() -> bool:
            return consumer.stats.parked >= 3

        await run_until(parked_three)
        pending = await rt.review.repo.find(task="refund")
        assert sorted(i.id for i in pending) == sorted([big_id, bad_id])

        await rt.review.decide(big_id, ADMIN, "edit", output={"amount": 90}, has_output=True)
        await rt.review.decide(bad_id, ADMIN, "reject", reason="not a customer")
        # this process has the resumer: published at once; the sweeper would do it otherwise
        (out,) = await read_all(readers["dst"], 1)
        assert out["id"] == "e-big" and out["enrichment"]["output"] == {"amount": 90}
        assert out["enrichment"]["review"]["state"] == "edited"
        (dead,) = await read_all(readers["dlq"], 1)
        assert dead["id"] == "e-bad" and "not a customer" in dead["error"]
        # resumed exactly once: a later sweep publishes nothing more
        assert (await rt.review.sweep())["resumed"] == 0
        assert await read_all(readers["dst"], 1, timeout=1.0) == []
        for rid in (big_id, bad_id):
            assert (await rt.review.repo.get(rid)).resumed_at is not None
    finally:
        for name in ("src", "dst", "dlq"):
            await readers[name].drop()
        for t in (*readers.values(), src, dst):
            await t.aclose()
        await rt.aclose()


@pytest.mark.asyncio
async def test_decided_elsewhere_is_published_by_the_consumers_sweeper(
    upstream: str, database_url: str, tmp_path: Path,
) -> None:
    """A gateway (no events resumer) decides; the consumer's sweeper publishes it."""
    from lockgate.review import NewReview

    tag = "lgrev" + uuid.uuid4().hex[:8]
    url = f"redis://127.0.0.1:6379/0/{tag}:out"
    cfg = parse_config(json.dumps({"home": str(tmp_path), "database_url": database_url}))
    gateway = await Runtime.start(cfg, jobs=False, warm_up=False)
    consumer_rt = await Runtime.start(cfg, jobs=False, warm_up=False)
    sink = open_transport(url, group="w", lease=2.0)
    reader = open_transport(url, group="r", lease=2.0)
    await reader.open()
    await sink.open()
    try:
        assert gateway.review is not None and consumer_rt.review is not None
        item = await gateway.review.submit(NewReview(
            task="t2", source="events", source_ref="ev-9", input={"id": "ev-9"},
            output={"x": 1}, reasons=["r"],
            response={"event": {"id": "ev-9"}, "enrichment": {"task": "t2", "output": {"x": 1}}}))
        await gateway.review.decide(item.id, ADMIN, "approve")
        assert (await gateway.review.repo.get(item.id)).resumed_at is None  # not its job
        consumer_rt.review.resumers["events:t2"] = event_resumer(sink, sink)
        consumer_rt.review.resumers["events:other"] = event_resumer(sink, sink)
        results = await asyncio.gather(consumer_rt.review.sweep(), consumer_rt.review.sweep())
        assert sum(r["resumed"] for r in results) >= 1
        (out,) = await read_all(reader, 1)
        assert out["id"] == "ev-9" and out["enrichment"]["review"]["state"] == "approved"
        assert await read_all(reader, 1, timeout=1.0) == []  # the lease let only one publish
    finally:
        await reader.drop()
        await reader.aclose()
        await sink.aclose()
        await consumer_rt.aclose()
        await gateway.aclose()
