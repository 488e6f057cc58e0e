"""Event consumer inputs go through the pipeline's guards (issue 11): an event carrying an
e-mail address reaches the model redacted, and with ``block`` it is dead-lettered without
reaching the model. Real Redis Streams broker, real pipeline, stand-in upstream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.events.consumer import EventConsumer
from lockgate.events.transports import EventTransport, open_transport
from lockgate.jobs.tasks import TaskRunner
from lockgate.jobs.taskspec import task_specs
from lockgate.runtime import Runtime
from lockgate.settings import Config, JobsSettings, ModelDeployment
from lockgate.settings.guards import GuardsConfig, PiiPolicy
from lockgate.testing.stub_upstream import StubUpstream
from tests.events.test_events_consumer import read_all, run_consumer

EMAIL = "jane.doe@example.com"


@pytest.fixture
def redis_urls() -> dict[str, str]:
    tag = "lgevg" + uuid.uuid4().hex[:8]
    base = "redis://127.0.0.1:6379/0/"
    return {"src": f"{base}{tag}:in", "dst": f"{base}{tag}:out", "dlq": f"{base}{tag}:in:dlq"}


@pytest.fixture
async def redis_ends(redis_urls: dict[str, str]) -> AsyncIterator[dict[str, EventTransport]]:
    made = {n: open_transport(u, group="g-" + n, lease=2.0) for n, u in redis_urls.items()}
    for t in made.values():
        await t.open()
    yield made
    for t in made.values():
        await t.drop()
        await t.aclose()


async def _runtime(tmp_path: Path, action: str) -> tuple[Runtime, StubUpstream]:
    stub = StubUpstream()
    await stub.start()
    cfg = Config(
        home=str(tmp_path / "home"),
        guards=GuardsConfig(pii=PiiPolicy(action=action, entities=("EMAIL",))),  # type: ignore[arg-type]
        models=[ModelDeployment(name="m", provider="openai", base_url=stub.openai_base,
                                model="gpt-stub", max_retries=0)],
    )
    return await Runtime.start(cfg), stub


def _consumer(rt: Runtime, urls: dict[str, str]) -> EventConsumer:
    runner = TaskRunner(rt.pipeline, task_specs(JobsSettings(default_model="m")),
                        default_model="m", source="events")
    return EventConsumer(open_transport(urls["src"], group="workers"),
                         open_transport(urls["dst"], group="workers"), runner, "summarize")


def _sent(stub: StubUpstream, marker: str) -> list[Any]:
    return [r for r in stub.requests if marker in orjson.dumps(r).decode()]


@pytest.mark.parametrize("action", ["redact", "block"])
async def test_event_input_is_guarded(
    redis_ends: dict[str, EventTransport], redis_urls: dict[str, str], tmp_path: Path,
    action: str,
) -> None:
    rt, stub = await _runtime(tmp_path, action)
    try:
        marker = uuid.uuid4().hex
        await redis_ends["src"].publish({"id": "e1", "text": f"{marker} mail {EMAIL}"},
                                        event_id="e1")
        consumer = _consumer(rt, redis_urls)
        await run_consumer(consumer, lambda: consumer.stats.forwarded + consumer.stats.dead >= 1)
        await consumer.source.aclose()
        await consumer.sink.aclose()
        sent = _sent(stub, marker)
        if action == "redact":
            (out,) = await read_all(redis_ends["dst"], 1)
            assert out["id"] == "e1"
            assert sent and all(EMAIL not in orjson.dumps(r).decode() for r in sent)
            assert "[EMAIL]" in orjson.dumps(sent).decode()
        else:
            assert consumer.stats.dead == 1 and sent == []
            (dead,) = await read_all(redis_ends["dlq"], 1)
            assert dead["id"] == "e1" and "personal data" in dead["error"]
    finally:
        await rt.aclose()
        await stub.stop()
