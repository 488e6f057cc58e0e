"""Queue alerts once per incident: two monitors (two gateways) on one PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from lockgate.alerts import Alert, AlertCenter
from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import NewJob
from lockgate.jobs.monitor import QueueMonitor
from lockgate.jobs.queue import QueueOptions
from lockgate.settings import AlertSettings
from lockgate.store import Store
from tests.support.postgres import fresh_database


async def test_two_monitors_one_postgres_alert_once_per_incident() -> None:
    gen = fresh_database("lg_qmon")
    url = next(gen)
    queue_url = f"postgresql://postgres@127.0.0.1:5432/test?schema=lgq_{uuid.uuid4().hex[:10]}"
    stores = [await Store.open(url), await Store.open(url)]
    queues = [open_queue(queue_url, QueueOptions(max_depth=1000)) for _ in range(2)]
    delivered: list[tuple[str, str]] = []

    async def hook(event: str, alert: Alert) -> None:
        delivered.append((event, alert.subject))

    try:
        for q in queues:
            await q.open()
        monitors = []
        for i, (s, q) in enumerate(zip(stores, queues, strict=True)):
            center = AlertCenter(s.engine)
            center.hooks.append(hook)
            monitors.append(QueueMonitor(q, AlertSettings(max_depth=2, max_dlq=1),
                                         center=center, name="default"))
            assert monitors[i].center is center
        await asyncio.gather(*(m.check() for m in monitors))
        assert delivered == []
        for i in range(3):
            await queues[0].enqueue(NewJob(task="t", input=i, max_attempts=1))
        for _ in range(3):  # several rounds, both monitors at once
            await asyncio.gather(*(m.check() for m in monitors))
        assert delivered == [("alert.raised", "default:depth")]
        sent: list[dict[str, Any]] = monitors[0].sent + monitors[1].sent
        assert [p["event"] for p in sent] == ["alert.raised"]
        [row] = await AlertCenter(stores[0].engine).list()
        assert row.kind == "queue" and row.raised_count == 6 and row.state == "open"
        for d in await queues[1].claim("w", limit=5):
            await queues[1].complete(d, 1)
        await asyncio.gather(*(m.check() for m in monitors))
        await asyncio.gather(*(m.check() for m in monitors))
        assert delivered == [("alert.raised", "default:depth"),
                             ("alert.resolved", "default:depth")]
        assert [a.state for a in await AlertCenter(stores[1].engine).list()] == ["resolved"]
    finally:
        await queues[0].drop()
        for q in queues:
            await q.aclose()
        for s in stores:
            await s.close()
        for _ in gen:
            pass
