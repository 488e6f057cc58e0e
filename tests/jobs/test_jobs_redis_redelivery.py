"""Redis Streams specifics: a stale or duplicate stream entry for a finished job is
acknowledged and skipped (never run again), and orphaned pending entries are reclaimed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from lockgate.jobs.model import NewJob
from lockgate.jobs.queue import QueueOptions
from lockgate.jobs.redis_queue import GROUP, RedisQueue


@pytest.fixture
async def rq() -> AsyncIterator[RedisQueue]:
    q = RedisQueue(
        f"redis://127.0.0.1:6379/0?prefix=lgjobs_{uuid.uuid4().hex[:10]}", QueueOptions()
    )
    await q.open()
    yield q
    await q.drop()
    await q.aclose()


async def test_duplicate_entry_of_finished_job_is_acked_not_run(rq: RedisQueue) -> None:
    res = await rq.enqueue(NewJob(task="t", input=1))
    (d,) = await rq.claim("w1")
    assert await rq.complete(d, "done")
    # the broker hands the same job out again (e.g. a producer retry, a replayed entry)
    await rq.r.xadd(f"{rq.prefix}:stream", {"id": res.job.id})
    await rq.r.xadd(f"{rq.prefix}:stream", {"id": res.job.id})
    assert await rq.claim("w2", limit=5) == []
    pending = await rq.r.xpending(f"{rq.prefix}:stream", GROUP)
    assert pending["pending"] == 0  # acknowledged, not left to be redelivered forever
    assert (await rq.get(res.job.id)).result == "done"


async def test_entry_orphaned_before_start_is_reclaimed(rq: RedisQueue) -> None:
    res = await rq.enqueue(NewJob(task="t", input=1))
    # a consumer read the entry and died before starting the job (no lease was recorded)
    got = await rq.r.xreadgroup(GROUP, "ghost", {f"{rq.prefix}:stream": ">"}, count=1)
    assert got and (await rq.get(res.job.id)).state == "queued"
    assert await rq.claim("w1", lease=0.2) == []  # still within the idle threshold
    await asyncio.sleep(0.35)
    (d,) = await rq.claim("w1", lease=0.2)
    assert d.job.id == res.job.id and d.job.attempts == 1
