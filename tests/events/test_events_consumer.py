"""Event consumer on real NATS JetStream, Redis Streams and RabbitMQ: enrich + forward,
poison -> DLQ, redelivered duplicates suppressed, per-key order."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lockgate.events.consumer import EventConsumer
from lockgate.events.transports import EventTransport, open_transport
from lockgate.jobs.tasks import TaskInputInvalid, TaskRunner
from lockgate.jobs.taskspec import task_specs
from lockgate.runtime import Runtime
from lockgate.settings import Config, JobsSettings, ModelDeployment
from lockgate.testing.stub_upstream import StubUpstream


async def read_all(t: EventTransport, n: int, timeout: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for m in await t.fetch(n - len(got), 0.2):
            got.append(m.data)
            await t.ack(m)
    return got


async def run_consumer(consumer: EventConsumer, until: Any, timeout: float = 15.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


async def test_enrich_forward_dlq_and_dedup(
    ends: dict[str, EventTransport], urls: dict[str, str]
) -> None:
    src = ends["src"]
    for i in range(4):
        await src.publish({"id": f"e{i}", "text": f"hello {i}"}, event_id=f"e{i}")
    # a redelivered duplicate of e1 (same event id, another broker message)
    await src.publish({"id": "e1", "text": "hello 1"}, event_id="e1-again")
    await src.publish({"id": "bad", "poison": True}, event_id="bad")
    await src.publish({"id": "flaky", "flaky": True}, event_id="flaky")

    async def enrich(event: Any) -> dict[str, Any]:
        if event.get("poison"):
            raise TaskInputInvalid("template needs 'input.text'")
        if event.get("flaky"):
            raise RuntimeError("upstream keeps failing")
        return {"length": len(event["text"])}

    consumer = EventConsumer(
        open_transport(urls["src"], group="workers"),
        open_transport(urls["dst"], group="workers"),
        enrich,
        concurrency=4,
        max_attempts=3,
        retry_base=0.01,
    )
    s = consumer.stats
    await run_consumer(consumer, lambda: s.forwarded + s.dead + s.duplicates >= 7)
    await consumer.source.aclose()
    await consumer.sink.aclose()
    assert (s.forwarded, s.dead, s.duplicates) == (4, 2, 1)
    assert s.retries == 2  # flaky: 3 attempts; poison: none
    out = await read_all(ends["dst"], 4)
    assert sorted(e["id"] for e in out) == ["e0", "e1", "e2", "e3"]
    e0 = next(e for e in out if e["id"] == "e0")
    assert e0["enrichment"] == {"length": 7} and e0["text"] == "hello 0"
    dead = await read_all(ends["dlq"], 2)
    by_id = {d["id"]: d for d in dead}
    assert set(by_id) == {"bad", "flaky"}
    assert by_id["bad"]["attempts"] == 1 and "TaskInputInvalid" in by_id["bad"]["error"]
    assert by_id["flaky"]["attempts"] == 3 and "upstream keeps failing" in by_id["flaky"]["error"]
    assert await read_all(ends["dst"], 1, timeout=0.5) == []


async def test_per_key_order(ends: dict[str, EventTransport], urls: dict[str, str]) -> None:
    keys = ["a", "b", "c"]
    n = 6
    for i in range(n):
        for k in keys:
            await ends["src"].publish({"id": f"{k}{i}", "acct": k, "i": i}, event_id=f"{k}{i}")
    rng = random.Random(3)
    active: dict[str, bool] = {}

    async def enrich(event: Any) -> dict[str, Any]:
        k = event["acct"]
        assert not active.get(k), "two events of one key at once"
        active[k] = True
        await asyncio.sleep(rng.random() * 0.01)
        active[k] = False
        return {"seen": True}

    consumer = EventConsumer(
        open_transport(urls["src"], group="workers"),
        open_transport(urls["dst"], group="workers"),
        enrich,
        key_field="acct",
        concurrency=6,
    )
    await run_consumer(consumer, lambda: consumer.stats.forwarded >= n * len(keys))
    await consumer.source.aclose()
    await consumer.sink.aclose()
    out = await read_all(ends["dst"], n * len(keys))
    for k in keys:
        assert [e["i"] for e in out if e["acct"] == k] == list(range(n))


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    stub = StubUpstream()
    await stub.start()
    cfg = Config(
        home=str(tmp_path / "home"),
        models=[
            ModelDeployment(
                name="m",
                provider="openai",
                base_url=stub.openai_base,
                model="gpt-stub",
                max_retries=0,
            )
        ],
    )
    rt = await Runtime.start(cfg)
    yield rt
    await rt.aclose()
    await stub.stop()


async def test_triage_task_through_pipeline(
    ends: dict[str, EventTransport], urls: dict[str, str], runtime: Runtime
) -> None:
    await ends["src"].publish({"id": "t1", "text": "charged twice"}, event_id="t1")
    runner = TaskRunner(
        runtime.pipeline,
        task_specs(JobsSettings(default_model="m")),
        default_model="m",
        source="events",
    )
    consumer = EventConsumer(
        open_transport(urls["src"], group="workers"),
        open_transport(urls["dst"], group="workers"),
        runner,
        "triage",
    )
    await run_consumer(consumer, lambda: consumer.stats.forwarded >= 1)
    await consumer.source.aclose()
    await consumer.sink.aclose()
    (out,) = await read_all(ends["dst"], 1)
    assert out["id"] == "t1" and out["enrichment"]["task"] == "triage"
    assert out["enrichment"]["output"]["team"] == "finance"
