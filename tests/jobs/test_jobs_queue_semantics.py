"""Queue semantics, the same tests on every backend (SQLite, PostgreSQL, Redis Streams)."""

from __future__ import annotations

import asyncio
import time

import pytest

from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import Delivery, JobGone, JobNotFound, NewJob, QueueFull
from lockgate.jobs.queue import JobQueue, QueueOptions


async def claim_one(q: JobQueue, worker: str, lease: float = 30.0):  # type: ignore[no-untyped-def]
    """One job, as a polling worker gets it: the broker backends hand a message to a
    consumer a moment after storing it (and a nak'd timer at its delay's end, by the
    broker's clock), so an empty claim is tried again for a while."""
    deadline = time.time() + 5
    got = await q.claim(worker, limit=1, lease=lease)
    while not got and time.time() < deadline:
        await asyncio.sleep(0.02)
        got = await q.claim(worker, limit=1, lease=lease)
    assert len(got) == 1, got
    return got[0]


async def test_enqueue_claim_complete(queue: JobQueue) -> None:
    res = await queue.enqueue(NewJob(task="echo", input={"x": 1}))
    assert res.created and res.job.state == "queued"
    d = await claim_one(queue, "w1")
    assert d.job.id == res.job.id and d.job.input == {"x": 1} and d.job.attempts == 1
    assert await queue.claim("w2") == []
    assert await queue.complete(d, {"ok": True}) is True
    job = await queue.get(res.job.id)
    assert job.state == "succeeded" and job.result == {"ok": True}
    assert await queue.claim("w2") == []


async def test_idempotency_key_returns_same_job_and_runs_once(queue: JobQueue) -> None:
    a = await queue.enqueue(NewJob(task="echo", input=1, idempotency_key="k-1"))
    b = await queue.enqueue(NewJob(task="echo", input=2, idempotency_key="k-1"))
    assert a.created and not b.created and a.job.id == b.job.id
    assert b.job.input == 1
    d = await claim_one(queue, "w1")
    await queue.complete(d, "done")
    c = await queue.enqueue(NewJob(task="echo", input=3, idempotency_key="k-1"))
    assert not c.created and c.job.state == "succeeded" and c.job.result == "done"
    assert await queue.claim("w1") == []


async def test_redelivery_after_result_is_not_stored_twice(queue: JobQueue) -> None:
    await queue.enqueue(NewJob(task="echo", input=1))
    first = await claim_one(queue, "w1", lease=0.2)
    await asyncio.sleep(0.35)
    second = await claim_one(queue, "w2", lease=30)  # lease expired: redelivered
    assert second.job.id == first.job.id and second.job.attempts == 2
    assert await queue.complete(first, "from-w1") is True
    assert await queue.complete(second, "from-w2") is False
    job = await queue.get(first.job.id)
    assert job.result == "from-w1" and job.state == "succeeded"
    assert await queue.claim("w3", lease=0.1) == []


async def test_fail_retries_with_backoff_then_dead_letters(queue: JobQueue) -> None:
    res = await queue.enqueue(NewJob(task="echo", input="poison", max_attempts=3))
    for attempt in range(1, 4):
        deadline = time.time() + 5
        got: list[Delivery] = []
        while not got and time.time() < deadline:
            got = await queue.claim("w1")
            if not got:
                await asyncio.sleep(0.02)
        assert got, f"attempt {attempt} never delivered"
        assert got[0].job.attempts == attempt
        state = await queue.fail(got[0], f"bad input #{attempt}")
        assert state == ("dead" if attempt == 3 else "queued")
    job = await queue.get(res.job.id)
    assert job.state == "dead" and job.last_error == "bad input #3"
    assert job.errors == ["bad input #1", "bad input #2", "bad input #3"]
    dead = await queue.dlq_list()
    assert [j.id for j in dead] == [res.job.id]
    assert (await queue.stats()).dlq == 1
    await asyncio.sleep(0.3)
    assert await queue.claim("w1") == []


async def test_retry_waits_for_backoff(queue: JobQueue) -> None:
    await queue.enqueue(NewJob(task="echo", input=1))
    d = await claim_one(queue, "w1")
    assert await queue.fail(d, "flaky", retry_in=30.0) == "queued"
    assert await queue.claim("w1") == []  # not before 30 s
    st = await queue.stats()
    assert st.depth == 1 and st.in_flight == 0


async def test_permanent_failure_goes_straight_to_dlq(queue: JobQueue) -> None:
    await queue.enqueue(NewJob(task="echo", input=1, max_attempts=5))
    d = await claim_one(queue, "w1")
    assert await queue.fail(d, "schema violation", permanent=True) == "dead"


async def test_dlq_retry_and_purge(queue: JobQueue) -> None:
    a = await queue.enqueue(NewJob(task="echo", input="a", max_attempts=1))
    b = await queue.enqueue(NewJob(task="echo", input="b", max_attempts=1))
    for _ in range(2):
        d = await claim_one(queue, "w1")
        assert await queue.fail(d, "boom") == "dead"
    assert {j.id for j in await queue.dlq_list()} == {a.job.id, b.job.id}
    retried = await queue.dlq_retry(a.job.id)
    assert retried.state == "queued" and retried.attempts == 0
    d = await claim_one(queue, "w1")
    assert d.job.id == a.job.id
    assert await queue.complete(d, "ok")
    assert await queue.dlq_purge() == 1
    assert await queue.dlq_list() == []
    with pytest.raises(JobNotFound):
        await queue.get(b.job.id)


async def test_lease_expiry_on_last_attempt_dead_letters(queue: JobQueue) -> None:
    res = await queue.enqueue(NewJob(task="echo", input=1, max_attempts=1))
    await claim_one(queue, "w1", lease=0.2)
    await asyncio.sleep(0.35)
    deadline = time.time() + 5
    while True:  # (NATS: the timer comes due by the broker's clock, seen at a claim)
        assert await queue.claim("w2") == []
        job = await queue.get(res.job.id)
        if job.state != "running" or time.time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert job.state == "dead" and "lease expired" in (job.last_error or "")


async def test_heartbeat_keeps_the_lease(queue: JobQueue) -> None:
    await queue.enqueue(NewJob(task="echo", input=1))
    d = await claim_one(queue, "w1", lease=0.3)
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await queue.heartbeat(d, 0.3)
    assert await queue.claim("w2", lease=0.3) == []
    assert await queue.complete(d, 1)


async def test_release_returns_job_without_counting_attempt(queue: JobQueue) -> None:
    await queue.enqueue(NewJob(task="echo", input=1))
    d = await claim_one(queue, "w1")
    await queue.release(d)
    d2 = await claim_one(queue, "w2")
    assert d2.job.id == d.job.id and d2.job.attempts == 1


async def test_cancel_queued_and_running(queue: JobQueue) -> None:
    a = await queue.enqueue(NewJob(task="echo", input=1))
    assert (await queue.cancel(a.job.id)).state == "cancelled"
    assert await queue.claim("w1") == []
    b = await queue.enqueue(NewJob(task="echo", input=2))
    d = await claim_one(queue, "w1")
    await queue.cancel(b.job.id)
    assert await queue.complete(d, "late") is False
    assert (await queue.get(b.job.id)).state == "cancelled"
    with pytest.raises(JobNotFound):
        await queue.cancel("job_nope")


async def test_result_expiry_is_gone(url: str) -> None:
    q = open_queue(url, QueueOptions(result_ttl=0.2))
    await q.open()
    try:
        res = await q.enqueue(NewJob(task="echo", input=1, idempotency_key="exp"))
        d = await claim_one(q, "w1")
        await q.complete(d, "secret")
        assert (await q.get(res.job.id)).result == "secret"
        await asyncio.sleep(0.3)
        with pytest.raises(JobGone):
            await q.get(res.job.id)
        assert await q.expire_results() >= 1
        with pytest.raises(JobGone):
            await q.get(res.job.id)
        again = await q.enqueue(NewJob(task="echo", input=1, idempotency_key="exp"))
        assert not again.created  # the key still maps to the (gone) job: no second run
        assert await q.claim("w1") == []
        assert await q.forget(time.time() - 3600) == 0  # tombstone younger than that: kept
        assert await q.forget(time.time() + 1) == 1
        with pytest.raises(JobNotFound):
            await q.get(res.job.id)
        fresh = await q.enqueue(NewJob(task="echo", input=1, idempotency_key="exp"))
        assert fresh.created and fresh.job.id != res.job.id  # the idempotency window ended
    finally:
        await q.drop()
        await q.aclose()


async def test_backpressure_queue_full(url: str) -> None:
    q = open_queue(url, QueueOptions(max_depth=3, full_retry_after=7))
    await q.open()
    try:
        for i in range(3):
            await q.enqueue(NewJob(task="echo", input=i))
        with pytest.raises(QueueFull) as info:
            await q.enqueue(NewJob(task="echo", input=99))
        assert info.value.status == 429 and info.value.headers["Retry-After"] == "7"
        d = await claim_one(q, "w1")
        await q.complete(d, 1)
        await asyncio.sleep(0.6)  # SQL backends cache the depth for 0.5 s
        await q.enqueue(NewJob(task="echo", input=4))
    finally:
        await q.drop()
        await q.aclose()


async def test_partition_order_one_at_a_time(queue: JobQueue) -> None:
    ids = [
        (await queue.enqueue(NewJob(task="echo", input=i, partition_key="A"))).job.id
        for i in range(3)
    ]
    other = (await queue.enqueue(NewJob(task="echo", input=9, partition_key="B"))).job.id
    got = await queue.claim("w1", limit=10)
    assert sorted(d.job.id for d in got) == sorted([ids[0], other])
    assert await queue.claim("w2", limit=10) == []
    first = next(d for d in got if d.job.id == ids[0])
    # a retry of the head keeps later jobs of its partition waiting
    assert await queue.fail(first, "flaky", retry_in=0.2) == "queued"
    assert await queue.claim("w2", limit=10) == []
    await asyncio.sleep(0.3)
    again = await claim_one(queue, "w2")
    assert again.job.id == ids[0]
    await queue.complete(again, 0)
    nxt = await claim_one(queue, "w2")
    assert nxt.job.id == ids[1]


async def test_priority(queue: JobQueue) -> None:
    low = await queue.enqueue(NewJob(task="echo", input=1, priority=0))
    high = await queue.enqueue(NewJob(task="echo", input=2, priority=5))
    got = await queue.claim("w1", limit=2)
    assert [d.job.id for d in got] == [high.job.id, low.job.id]


async def test_priority_orders_bands_and_keeps_fifo_within_one(queue: JobQueue) -> None:
    """Several priorities (negative too), submitted lowest first: claimed one at a time they
    come out highest first, in submission order within a priority; a retry keeps its band."""
    order = [-2, 0, 3, 0, 7, 3, -2]
    ids = [(await queue.enqueue(NewJob(task="echo", input=i, priority=p))).job.id
           for i, p in enumerate(order)]
    expected = [ids[i] for i in sorted(range(len(order)), key=lambda i: (-order[i], i))]
    first = await claim_one(queue, "w1")
    assert first.job.id == expected[0] and first.job.priority == 7
    assert await queue.fail(first, "flaky", retry_in=0.0) == "queued"
    await asyncio.sleep(0.25)  # the retry's backoff (0.05-0.2 s here) has passed
    got = [first.job.id]
    while len(got) < len(order) + 1:
        deadline = time.time() + 5
        batch: list[Delivery] = []
        while not batch and time.time() < deadline:
            batch = await queue.claim("w1", limit=1)
        assert batch, got
        got.append(batch[0].job.id)
        assert await queue.complete(batch[0], "ok")
    assert got == [expected[0], *expected]  # the retried top job first, then by priority


async def test_stats(queue: JobQueue) -> None:
    for i in range(3):
        await queue.enqueue(NewJob(task="echo", input=i))
    await asyncio.sleep(0.05)
    await claim_one(queue, "w1")
    st = await queue.stats()
    assert st.depth == 2 and st.in_flight == 1 and st.dlq == 0 and st.oldest_age > 0


async def test_park_for_review_then_finish_exactly_once(queue: JobQueue) -> None:
    """A parked job leaves the lease and its partition (the next job runs), is not handed out
    again, and the review decision finishes it once (success or dead letter)."""
    a = await queue.enqueue(NewJob(task="echo", input="a", partition_key="P",
                                   webhook_url="https://hooks.example/a"))
    b = await queue.enqueue(NewJob(task="echo", input="b", partition_key="P"))
    c = await queue.enqueue(NewJob(task="echo", input="c"))
    d = await claim_one(queue, "w1")
    d2 = await claim_one(queue, "w1")
    assert {d.job.id, d2.job.id} == {a.job.id, c.job.id}
    da = d if d.job.id == a.job.id else d2
    dc = d2 if da is d else d
    assert await queue.park(da, {"review_id": "rv_1"}) is True
    assert await queue.park(da, {"review_id": "rv_1"}) is False  # no longer running
    parked = await queue.get(a.job.id)
    assert parked.state == "awaiting_review" and parked.result == {"review_id": "rv_1"}
    nxt = await claim_one(queue, "w2")  # the partition moved on to b
    assert nxt.job.id == b.job.id
    assert await queue.complete(nxt, "b-done")
    st = await queue.stats()
    assert st.in_flight == 1 and st.depth == 0  # only c runs; the parked job is neither
    assert await queue.complete(da, "late") is False  # the parked delivery cannot finish it
    done = await queue.finish_review(a.job.id, {"label": "ok"}, None)
    assert done is not None and done.state == "succeeded" and done.result == {"label": "ok"}
    assert await queue.finish_review(a.job.id, {"label": "again"}, None) is None
    assert (await queue.get(a.job.id)).result == {"label": "ok"}
    due = await queue.webhooks_due("o1", limit=10)
    assert [(w.job_id, w.event) for w in due] == [(a.job.id, "job.completed")]
    # a rejected review dead-letters the job
    assert await queue.park(dc, {"review_id": "rv_2"}) is True
    dead = await queue.finish_review(c.job.id, None, "rejected by reviewer")
    assert dead is not None and dead.state == "dead" and dead.last_error == "rejected by reviewer"
    assert [j.id for j in await queue.dlq_list()] == [c.job.id]
    assert await queue.claim("w3", limit=5) == []


async def test_prioritised_job_is_redelivered_after_its_lease_and_heartbeats(
        queue: JobQueue) -> None:
    """Leases, heartbeats and redelivery behave the same for a job outside the default
    priority (its own stream/consumer on the broker backends)."""
    res = await queue.enqueue(NewJob(task="echo", input=1, priority=4))
    d = await claim_one(queue, "w1", lease=0.3)
    for _ in range(2):
        await asyncio.sleep(0.15)
        assert await queue.heartbeat(d, 0.3)
    assert await queue.claim("w2", lease=0.3) == []  # still held
    await asyncio.sleep(0.45)  # w1 stops heartbeating: the lease runs out
    again = await claim_one(queue, "w2", lease=30)
    assert again.job.id == res.job.id and again.job.attempts == 2
    assert await queue.heartbeat(d, 0.3) is False
    assert await queue.complete(again, "ok")
    st = await queue.stats()
    assert (st.depth, st.in_flight) == (0, 0)
