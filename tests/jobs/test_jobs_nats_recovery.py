"""NATS JetStream specifics: the crash windows between a state change and its follow-up steps
(the other backends do both in one transaction or script) are closed by whoever next sees
the job's watcher or ready message."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest

from lockgate.jobs.model import JobGone, NewJob
from lockgate.jobs.nats_queue import NatsQueue
from lockgate.jobs.queue import QueueOptions


async def _claim_within(q: NatsQueue, worker: str, seconds: float, lease: float = 30.0
                        ) -> list[Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = await q.claim(worker, limit=5, lease=lease)
        if got:
            return got
        await asyncio.sleep(0.05)
    return []


async def test_duplicate_ready_message_of_a_finished_job_is_not_run(nq: NatsQueue) -> None:
    res = await nq.enqueue(NewJob(task="t", input=1))
    (d,) = await nq.claim("w1")
    assert await nq.complete(d, "done")
    # the broker carries the job again (a producer retry, a replayed message)
    body = orjson.dumps({"id": res.job.id, "c": res.job.created_at})
    await nq.js.publish(f"{nq.prefix}.r.p0.{res.job.id}", body)
    assert await nq.claim("w2", limit=5) == []
    assert (await nq.stats()).depth == 0  # acknowledged, not left waiting
    assert (await nq.get(res.job.id)).result == "done"


async def test_worker_killed_between_finishing_and_the_follow_up_steps(nq: NatsQueue) -> None:
    """The job's record says succeeded but the partition was not advanced and the watcher not
    dropped (the worker died in between): when the lease would have ended, the watcher's next
    reader does the rest, so the partition's next job runs and nothing stays in flight."""
    first = await nq.enqueue(NewJob(task="t", input=1, partition_key="K"))
    second = await nq.enqueue(NewJob(task="t", input=2, partition_key="K"))
    (d,) = await nq.claim("w1", limit=5, lease=0.3)
    assert d.job.id == first.job.id

    def finish(doc: dict[str, Any]) -> bool:  # the compare-and-set alone, nothing after it
        doc.update(state="succeeded", result="r", finished_at=time.time(),
                   expires_at=time.time() + 3600, lease_owner=None, lease_until=None,
                   finish_no=1)
        return True

    await nq._change(first.job.id, finish)
    assert await nq.claim("w2", limit=5, lease=0.3) == []  # second still waits behind it
    got = await _claim_within(nq, "w2", 10)
    assert [g.job.id for g in got] == [second.job.id]
    assert await nq.complete(got[0], "r2")
    st = await nq.stats()
    assert st.in_flight == 0 and st.depth == 0


async def test_killed_worker_with_a_short_lease_is_redelivered_then_dead_lettered(
        nq: NatsQueue) -> None:
    res = await nq.enqueue(NewJob(task="t", input=1, max_attempts=2))
    (d1,) = await nq.claim("w1", lease=0.2)  # w1 "dies": no heartbeat, no answer
    got = await _claim_within(nq, "w2", 10, lease=0.2)
    assert [g.job.id for g in got] == [res.job.id] and got[0].job.attempts == 2
    assert await _claim_within(nq, "w3", 1.0, lease=0.2) == []  # attempts used up
    job = await nq.get(res.job.id)
    assert job.state == "dead" and "lease expired on attempt 2" in (job.last_error or "")
    assert await nq.complete(d1, "too late") is False
    st = await nq.stats()
    assert (st.in_flight, st.dlq) == (0, 1)


async def test_producer_killed_before_publishing_is_healed_by_resubmitting(
        nq: NatsQueue) -> None:
    """A record written without its ready message (the producer died in between) runs once
    the same idempotency key is submitted again."""
    res = await nq.enqueue(NewJob(task="t", input=1, idempotency_key="order-7"))
    (d,) = await nq.claim("w1")  # take the message away, then put the job back as "queued"
    await nq._change(res.job.id, lambda doc: doc.update(
        state="queued", attempts=0, created_at=time.time() - 10, lease_owner=None,
        lease_until=None) is None)
    await nq._let_go((await nq._load(res.job.id))[0])  # type: ignore[index]
    await nq._acks_done()
    assert await nq.claim("w2") == []  # nothing announces it
    again = await nq.enqueue(NewJob(task="t", input=1, idempotency_key="order-7"))
    assert not again.created and again.job.id == res.job.id
    got = await _claim_within(nq, "w2", 5)
    assert [g.job.id for g in got] == [res.job.id]
    assert d.job.id == res.job.id


async def test_forgotten_jobs_leave_nothing_in_the_bucket() -> None:
    q = NatsQueue(f"nats://127.0.0.1:4222?prefix=lgjobs_{uuid.uuid4().hex[:10]}",
                  QueueOptions(result_ttl=0.1))
    await q.open()
    try:
        res = await q.enqueue(NewJob(task="t", input=1, idempotency_key="k-forget"))
        (d,) = await q.claim("w1")
        assert await q.complete(d, "r")
        await asyncio.sleep(0.2)
        assert await q.expire_results() == 1
        assert await q.forget(time.time() + 1) == 1
        info = await q.js.stream_info(f"KV_{q.bucket}", subjects_filter=f"$KV.{q.bucket}.>")
        left = set(info.state.subjects or {})
        assert not any(res.job.id in s or s.startswith(f"$KV.{q.bucket}.i.") for s in left), left
    finally:
        await q.drop()
        await q.aclose()


async def test_completions_share_one_expiry_entry_and_all_expire() -> None:
    q = NatsQueue(f"nats://127.0.0.1:4222?prefix=lgjobs_{uuid.uuid4().hex[:10]}",
                  QueueOptions(result_ttl=0.3))
    await q.open()
    try:
        ids = [(await q.enqueue(NewJob(task="t", input=i))).job.id for i in range(5)]
        got = await q.claim("w1", limit=5)
        assert sorted(d.job.id for d in got) == sorted(ids)
        assert all(await asyncio.gather(*(q.complete(d, i) for i, d in enumerate(got))))
        st = await q.stats()  # sends the batched after-steps first
        assert (st.in_flight, st.depth) == (0, 0)
        entries = (await q.js.stream_info(q.s_expiry)).state.messages
        assert 1 <= entries < 5  # completions in one batch share an index entry
        assert await q.expire_results() == 0  # not due yet
        await asyncio.sleep(0.4)
        assert await q.expire_results() == 5
        for job_id in ids:
            with pytest.raises(JobGone):
                await q.get(job_id)
        assert (await q.js.stream_info(q.s_expiry)).state.messages == 0
    finally:
        await q.drop()
        await q.aclose()


async def test_client_killed_before_its_completion_batch_went_out(nq: NatsQueue) -> None:
    """The result is stored but the expiry entry and the watcher deletion never left the
    client: the watcher comes due when the lease would have ended and its reader does both."""
    res = await nq.enqueue(NewJob(task="t", input=1))
    (d,) = await nq.claim("w1", lease=0.3)
    assert await nq.complete(d, "r")
    assert nq._flush_task is not None and nq._finishing
    nq._flush_task.cancel()  # the client "dies" with the batch unsent
    nq._flush_task = None
    nq._finishing.clear()
    assert (await nq.stats()).in_flight == 1  # the watcher is still there
    assert (await nq.js.stream_info(nq.s_expiry)).state.messages == 0
    deadline = time.monotonic() + 10
    while (await nq.stats()).in_flight and time.monotonic() < deadline:
        assert await nq.claim("w2", limit=5, lease=0.3) == []  # nothing to run again
        await asyncio.sleep(0.05)
    assert (await nq.stats()).in_flight == 0
    assert (await nq.js.stream_info(nq.s_expiry)).state.messages == 1
    job = await nq.get(res.job.id)
    assert job.state == "succeeded" and job.result == "r" and job.attempts == 1


async def test_scheduled_job_waits_in_the_delay_lane_not_as_running(nq: NatsQueue) -> None:
    res = await nq.enqueue(NewJob(task="t", input=1, run_after=time.time() + 0.5))
    st = await nq.stats()
    assert (st.depth, st.in_flight) == (1, 0)
    assert await nq.claim("w1", limit=5) == []
    st = await nq.stats()  # looked at and put back: still waiting, not running
    assert (st.depth, st.in_flight) == (1, 0) and st.oldest_age > 0
    got = await _claim_within(nq, "w1", 10)
    assert [g.job.id for g in got] == [res.job.id]
    assert time.time() >= res.job.run_after
    assert (await nq.stats()).in_flight == 1
    assert await nq.complete(got[0], "r")
    st = await nq.stats()
    assert (st.depth, st.in_flight) == (0, 0)


async def test_worker_killed_between_a_retry_and_letting_its_timer_go(nq: NatsQueue) -> None:
    """fail() wrote the retry (record queued, delay-lane message) but died before
    acknowledging the message that started the job: that message comes due at the end of
    the lease, and a job is never restarted through its old timer — it goes to the delay
    lane, and runs once from there, with a timer of its own (so a late acknowledgement of
    the old timer by the failing worker takes nothing from the new run)."""
    res = await nq.enqueue(NewJob(task="t", input=1))
    (d,) = await nq.claim("w1", lease=0.3)
    after, won = await nq._change(res.job.id, lambda doc: doc.update(
        state="queued", run_after=time.time(), lease_owner=None, lease_until=None) is None)
    assert won and after is not None
    await nq._publish_delayed(after[0])  # ... and nothing after it
    await asyncio.sleep(0.45)  # the old timer is due
    runs: list[Any] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        runs += await nq.claim("w2", limit=5, lease=30)
        await asyncio.sleep(0.05)
    assert [r.job.id for r in runs] == [res.job.id] and runs[0].job.attempts == 2
    assert runs[0].token != d.token  # started through another message than the old timer
    await nq._let_go(after[0])  # the failing worker's acknowledgement, arriving late
    st = await nq.stats()
    assert (st.depth, st.in_flight) == (0, 1)  # the new run keeps its timer
    assert await nq.complete(runs[0], "r")
    assert not await nq.complete(d, "late")
    st = await nq.stats()
    assert (st.depth, st.in_flight) == (0, 0)


async def test_another_client_finishing_the_job_lets_its_timer_go(nq: NatsQueue) -> None:
    """The message that started a job is acknowledged through the reply subject kept in the
    record, so the client that finishes it need not be the one that pulled it."""
    other = NatsQueue(nq.url, nq.options)
    await other.open()
    try:
        res = await nq.enqueue(NewJob(task="t", input=1))
        (d,) = await nq.claim("w1")
        assert (await nq.stats()).in_flight == 1
        assert await other.complete(d, "r")
        st = await other.stats()
        assert (st.depth, st.in_flight) == (0, 0)
        assert (await nq.get(res.job.id)).result == "r"
    finally:
        await other.aclose()


async def test_plain_job_is_its_ready_message_until_it_starts(nq: NatsQueue) -> None:
    """No record is written at enqueue for a plain job: get() reads it from its message,
    the start's compare-and-set creates the record (one winner), cancel() writes it first."""
    from nats.js.errors import KeyNotFoundError

    res = await nq.enqueue(NewJob(task="t", input={"x": 1}, priority=3))
    with pytest.raises(KeyNotFoundError):
        await nq.cas.kv.get(f"j.{res.job.id}")
    job = await nq.get(res.job.id)
    assert (job.state, job.input, job.priority) == ("queued", {"x": 1}, 3)
    (d,) = await nq.claim("w1")
    assert d.job.id == res.job.id and d.job.attempts == 1
    assert (await nq.get(res.job.id)).state == "running"
    assert await nq.claim("w2", limit=5) == []
    assert await nq.complete(d, "r")
    assert (await nq.get(res.job.id)).result == "r"
    other = await nq.enqueue(NewJob(task="t", input=2))
    assert (await nq.cancel(other.job.id)).state == "cancelled"
    assert (await nq.get(other.job.id)).state == "cancelled"
    assert await nq.claim("w2", limit=5) == []
    st = await nq.stats()
    assert (st.depth, st.in_flight) == (0, 0)


async def test_replayed_plain_message_after_the_job_started_is_not_run(nq: NatsQueue) -> None:
    res = await nq.enqueue(NewJob(task="t", input=1))
    raw = await nq.js.get_msg(nq.s_queue, subject=f"{nq.prefix}.r.p0.{res.job.id}")
    (d,) = await nq.claim("w1")
    assert await nq.claim("w2", limit=5) == []
    # the very message again (a replay): its copy of the job says "queued, revision 0"
    await nq.js.publish(f"{nq.prefix}.r.p0.{res.job.id}", raw.data)
    assert await nq.claim("w2", limit=5) == []  # the start's compare-and-set loses
    assert await nq.complete(d, "r")
    job = await nq.get(res.job.id)
    assert job.state == "succeeded" and job.attempts == 1


async def test_a_watching_client_sees_other_clients_starts_within_the_running_ttl(
        nq: NatsQueue) -> None:
    from lockgate.jobs.nats_queue import RUNNING_TTL

    watcher = NatsQueue(nq.url, nq.options)
    await watcher.open()
    try:
        res = await nq.enqueue(NewJob(task="t", input=1))
        st = await watcher.stats()
        assert (st.depth, st.in_flight) == (1, 0)
        (d,) = await nq.claim("w1")
        await asyncio.sleep(RUNNING_TTL + 0.05)
        st = await watcher.stats()
        assert (st.depth, st.in_flight) == (0, 1)
        assert await nq.complete(d, "r")
        await nq.stats()  # its acknowledgement applied
        await asyncio.sleep(RUNNING_TTL + 0.05)
        st = await watcher.stats()
        assert (st.depth, st.in_flight) == (0, 0)
        assert (await watcher.get(res.job.id)).result == "r"
    finally:
        await watcher.aclose()
