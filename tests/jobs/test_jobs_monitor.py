"""Queue gauges, threshold alerts (signed webhooks) and the expiry sweep."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import generate_latest

from lockgate.jobs.model import NewJob
from lockgate.jobs.monitor import JobsGauges, QueueMonitor
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.webhooks import SIGNATURE_HEADER, WebhookSender, verify
from lockgate.settings import AlertSettings


async def test_gauges_alerts_and_resolution(queue: JobQueue) -> None:
    got: list[tuple[str, bool]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        got.append(
            (
                request.headers["X-Lockgate-Event"],
                verify("k", body, request.headers[SIGNATURE_HEADER]),
            )
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alerts", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        gauges = JobsGauges()
        mon = QueueMonitor(
            queue,
            AlertSettings(url=f"http://127.0.0.1:{port}/alerts", max_depth=2, max_dlq=1),
            name="q1",
            gauges=gauges,
            sender=WebhookSender("k", attempts=1),
        )
        await mon.check()
        assert mon.sent == []
        for i in range(3):
            await queue.enqueue(NewJob(task="t", input=i, max_attempts=1))
        await asyncio.sleep(0.01)
        st = await mon.check()
        assert st.depth == 3
        text = generate_latest(gauges.registry).decode()
        assert 'lockgate_jobs_depth{queue="q1"} 3.0' in text
        assert [p["metric"] for p in mon.sent] == ["depth"]
        await mon.check()  # still breached: no repeat
        assert len(mon.sent) == 1
        d = (await queue.claim("w"))[0]
        await queue.fail(d, "boom")
        await mon.check()  # depth 2 -> still >= 2; dlq 1 -> alert
        assert [p["metric"] for p in mon.sent] == ["depth", "dlq"]
        for d in await queue.claim("w", limit=5):
            await queue.complete(d, 1)
        await mon.check()
        assert mon.sent[-1]["event"] == "queue.resolved" and mon.sent[-1]["metric"] == "depth"
        assert 'lockgate_jobs_dlq{queue="q1"} 1.0' in generate_latest(gauges.registry).decode()
    finally:
        await runner.cleanup()
    assert got == [("queue.alert", True), ("queue.alert", True), ("queue.resolved", True)]
