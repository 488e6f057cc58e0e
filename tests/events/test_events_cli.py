"""``lockgate consume`` as a process: SIGKILL it while its model call hangs -> the broker
redelivers the event and a second consumer forwards it exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lockgate.events.consumer import EventConsumer
from lockgate.events.transports import EventTransport, open_transport
from lockgate.jobs.tasks import TaskRunner
from lockgate.jobs.taskspec import task_specs
from lockgate.runtime import Runtime
from lockgate.settings import Config, JobsSettings, ModelDeployment
from lockgate.testing.stub_upstream import StubUpstream
from tests.events.test_events_consumer import read_all, run_consumer

SRC = Path(__file__).parent.parent.parent / "src"


async def test_killed_consumer_event_is_redelivered_and_forwarded_once(
    ends: dict[str, EventTransport], urls: dict[str, str], tmp_path: Path
) -> None:
    stub = StubUpstream()
    await stub.start()
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'home'}\nmodels:\n  - name: local\n    provider: openai\n"
        f"    base_url: {stub.openai_base}\n    model: gpt-stub\n    max_retries: 0\n"
        "    timeouts: {first_token: 120, total: 120}\n"
    )
    await ends["src"].publish({"id": "ev1", "text": "refund me"}, event_id="ev1")
    stub.script(["stall-before:120"])
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lockgate",
            "consume",
            "--source",
            urls["src"],
            "--sink",
            urls["dst"],
            "--task",
            "summarize",
            "--group",
            "workers",
            "--lease",
            "1",
            "--dedup",
            "redis://127.0.0.1:6379/0",
            "-c",
            str(cfg),
        ],
        env=env,
    )
    rt = None
    try:
        deadline = time.monotonic() + 60
        while int(stub.stats()["total"]) < 1:
            assert proc.poll() is None, "consumer exited"
            assert time.monotonic() < deadline, "consumer never called the model"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rt = await Runtime.start(
            Config(
                home=str(tmp_path / "home2"),
                models=[
                    ModelDeployment(
                        name="local",
                        provider="openai",
                        base_url=stub.openai_base,
                        model="gpt-stub",
                        max_retries=0,
                    )
                ],
            )
        )
        runner = TaskRunner(rt.pipeline, task_specs(JobsSettings()), source="events")
        consumer = EventConsumer(
            open_transport(urls["src"], group="workers", lease=1.0),
            open_transport(urls["dst"], group="workers", lease=1.0),
            runner,
            "summarize",
        )
        await run_consumer(consumer, lambda: consumer.stats.forwarded >= 1, timeout=30)
        await consumer.source.aclose()
        await consumer.sink.aclose()
        assert consumer.stats.forwarded == 1
        out = await read_all(ends["dst"], 2, timeout=1.5)
        assert [e["id"] for e in out] == ["ev1"]
        assert out[0]["enrichment"]["output"]["summary"].startswith("stub reply")
        assert stub.stats()["total"] == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if rt is not None:
            await rt.aclose()
        await stub.stop()
