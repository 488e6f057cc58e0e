"""NATS: what the server does after it has acknowledged a publish or an acknowledgement.

* JetStream tells a consumer about a new message after acknowledging the publish, so a
  no-wait pull sent right after it can, on a loaded server, find the consumer empty. A claim
  that has just moved a due retry into its priority band must not then take a job of a lower
  band first (seen once in CI: the retried top-priority job came out second).
* A worker acknowledges the timer of a job's finished run fire-and-forget. A due retry (or a
  dead-letter retry) that meets that old timer still in the ready subject must wait for it
  to go, not count it as the job's carrier: the late acknowledgement removes it, and with it
  the job's only message (the job was lost before the fix)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.msg import Msg

from lockgate.jobs.model import NewJob
from lockgate.jobs.nats_queue import NatsQueue
from lockgate.jobs.nats_wire import Pulls, ensure_consumer, ensure_stream


async def test_waited_pull_answers_with_a_message_published_while_it_waits(nq: NatsQueue
                                                                            ) -> None:
    stream = f"{nq.prefix}_PT"
    await ensure_stream(nq.js, stream, [f"{nq.prefix}.pt.>"], work_queue=True)
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        await ensure_consumer(nq.js, stream, "c", f"{nq.prefix}.pt.*", 5.0)
        pulls = Pulls(nc)
        assert await pulls.pull(stream, "c", 4) == []  # no wait: nothing there now
        assert await pulls.pull(stream, "c", 4, wait=0.1) == []  # waited, nothing came

        async def later() -> None:
            await asyncio.sleep(0.2)
            await nq.js.publish(f"{nq.prefix}.pt.one", b"hello")

        task = asyncio.create_task(later())
        got = await pulls.pull(stream, "c", 4, wait=3.0)
        await task
        assert [m.data for m in got] == [b"hello"]  # answered at the first message
        await got[0].ack()
    finally:
        await nc.close()
        await nq.js.delete_stream(stream)


class _LaggingPulls:
    """The server's lag made certain: a no-wait pull of the given band sees nothing."""

    def __init__(self, inner: Pulls, consumer: str) -> None:
        self.inner, self.consumer, self.waits = inner, consumer, []

    async def pull(self, stream: str, consumer: str, batch: int, timeout: float = 5.0,
                   wait: float = 0.0) -> list[Msg]:
        if consumer == self.consumer:
            self.waits.append(wait)
            if wait <= 0:
                return []
        return await self.inner.pull(stream, consumer, batch, timeout, wait)


async def test_a_retry_moved_into_its_band_goes_before_lower_bands(nq: NatsQueue) -> None:
    top = await nq.enqueue(NewJob(task="t", input=0, priority=7))
    low = await nq.enqueue(NewJob(task="t", input=1, priority=3))
    (d,) = await nq.claim("w1", limit=1)
    assert d.job.id == top.job.id
    assert await nq.fail(d, "flaky") == "queued"
    await asyncio.sleep(0.3)  # backoff over, housekeeping due
    lagging = _LaggingPulls(nq.pulls, "b_p7")
    nq._pulls = lagging  # type: ignore[assignment]
    got: list[Any] = await nq.claim("w1", limit=1)
    assert [x.job.id for x in got] == [top.job.id], "the lower band went first"
    assert lagging.waits[0] > 0
    nq._pulls = lagging.inner
    (nxt,) = await nq.claim("w1", limit=1)
    assert nxt.job.id == low.job.id


async def test_a_late_timer_acknowledgement_does_not_lose_the_retry(nq: NatsQueue) -> None:
    """The worker that failed the job acknowledges its old timer fire-and-forget; if that
    acknowledgement reaches the server only after another client moved the due retry (a
    blocked event loop, a slow flush), the move finds the old timer still in the ready
    subject. The retry must wait for the subject to clear, not be dropped as a duplicate
    (the late acknowledgement then removes the job's only message)."""
    res = await nq.enqueue(NewJob(task="t", input=1))
    (d,) = await nq.claim("w1", limit=1)
    held = await _holding_acks(nq, nq.fail(d, "flaky"))
    assert held[0] == "queued"
    await asyncio.sleep(0.3)  # backoff over
    assert await nq.claim("w2", limit=1) == []  # the move meets the old timer
    got = await _late_acks_then_claim(nq, held[1])
    assert [x.job.id for x in got] == [res.job.id]
    assert got[0].job.attempts == 2


async def test_a_dlq_retry_right_after_the_death_is_not_lost(nq: NatsQueue) -> None:
    """The same for a dead-letter retry published while the dead run's timer is still
    there (its acknowledgement late)."""
    res = await nq.enqueue(NewJob(task="t", input=1))
    (d,) = await nq.claim("w1", limit=1)
    held = await _holding_acks(nq, nq.fail(d, "broken", permanent=True))
    assert held[0] == "dead"
    assert (await nq.dlq_retry(res.job.id)).state == "queued"
    got = await _late_acks_then_claim(nq, held[1])
    assert [x.job.id for x in got] == [res.job.id]


async def _holding_acks(nq: NatsQueue, step: Any) -> tuple[Any, list[str]]:
    """Run ``step`` with this client's fire-and-forget acknowledgements held back."""
    held: list[str] = []

    async def hold(reply: str) -> None:
        held.append(reply)

    nq._ack_via = hold  # type: ignore[method-assign]
    try:
        out = await step
        await asyncio.sleep(0.05)  # (a batched after-step acknowledges a moment later)
    finally:
        del nq._ack_via  # the class's own from here on
    assert held  # the old timer's acknowledgement, not sent yet
    return out, held


async def _late_acks_then_claim(nq: NatsQueue, held: list[str]) -> list[Any]:
    for reply in held:  # now the late acknowledgements arrive
        await nq._ack_via(reply)
    got: list[Any] = []
    for _ in range(60):
        got = await nq.claim("w2", limit=1)
        if got:
            break
        await asyncio.sleep(0.1)
    return got
