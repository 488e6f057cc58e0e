"""Completion webhooks from the queue's outbox, on every backend: at least once, a stable
delivery id, retries with backoff, a webhook DLQ, ``webhook_status`` always set, and no
loss when the worker is SIGKILLed between storing a result and sending."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from lockgate.jobs.model import NewJob
from lockgate.jobs.outbox import OutboxDeliverer
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSender, verify
from lockgate.jobs.worker import Worker
from tests.jobs.test_jobs_worker import run_worker_until, wait_for

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


@dataclass
class Receiver:
    """A webhook receiver answering from a script of status codes (then 200)."""

    url: str
    script: list[int] = field(default_factory=list)
    hits: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def bodies(self, job_id: str) -> list[dict[str, object]]:
        return [b for b in (orjson.loads(body) for _, body in self.hits) if b["id"] == job_id]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(url="")

    async def hook(request: web.Request) -> web.Response:
        rec.hits.append((dict(request.headers), await request.read()))
        status = rec.script.pop(0) if rec.script else 200
        if status == 302:
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=status)

    async def elsewhere(request: web.Request) -> web.Response:
        rec.hits.append(({"redirected": "yes"}, b'{"id": "redirected"}'))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def _sender(**kw: object) -> WebhookSender:
    return WebhookSender("s3cret", backoff_base=0.02, backoff_cap=0.05, **kw)  # type: ignore[arg-type]


async def _status(queue: JobQueue, job_id: str) -> str:
    return (await queue.get(job_id)).webhook_status or ""


async def test_retries_keep_one_delivery_id_and_status_is_always_set(
    queue: JobQueue, receiver: Receiver
) -> None:
    receiver.script = [500, 503]
    res = await queue.enqueue(NewJob(task="t", input=4, webhook_url=receiver.url))
    assert res.job.webhook_status == "waiting"
    plain = await queue.enqueue(NewJob(task="t", input=1))
    assert plain.job.webhook_status is None

    async def handler(job: object) -> object:
        return {"double": 8}

    worker = Worker(queue, handler, lease=5, poll_interval=0.02, webhooks=_sender(attempts=5))

    async def delivered() -> bool:
        return (await _status(queue, res.job.id)).startswith("delivered")

    await run_worker_until(worker, delivered)
    assert await _status(queue, res.job.id) == "delivered 200 (attempt 3)"
    ids = {h[DELIVERY_HEADER] for h, _ in receiver.hits}
    assert len(receiver.hits) == 3 and len(ids) == 1  # one delivery, three attempts
    (delivery_id,) = ids
    assert delivery_id.startswith("whd_")
    headers, body = receiver.hits[-1]
    assert verify("s3cret", body, headers[SIGNATURE_HEADER])
    payload = orjson.loads(body)
    assert payload["id"] == res.job.id and payload["delivery_id"] == delivery_id
    assert payload["event"] == "job.completed" and payload["result"] == {"double": 8}
    assert (await queue.get(plain.job.id)).webhook_status is None


async def test_used_up_attempts_go_to_the_webhook_dlq_and_can_be_retried(
    queue: JobQueue, receiver: Receiver
) -> None:
    receiver.script = [500, 500]
    res = await queue.enqueue(NewJob(task="t", input=1, webhook_url=receiver.url))
    (d,) = await queue.claim("w", lease=5)
    assert await queue.complete(d, {"ok": True})
    assert await _status(queue, res.job.id) == "pending"
    deliverer = OutboxDeliverer(queue, _sender(), attempts=2, backoff_base=0.01, backoff_cap=0.02)

    async def dead() -> bool:
        await deliverer.run_once()
        return (await _status(queue, res.job.id)).startswith("failed")

    await wait_for(dead, timeout=10, step=0.03)
    assert "HTTP 500" in await _status(queue, res.job.id)
    assert "dead-lettered" in await _status(queue, res.job.id)
    dlq = await queue.webhook_dlq_list()
    assert [x.job_id for x in dlq] == [res.job.id] and dlq[0].state == "dead"
    first_id = receiver.hits[0][0][DELIVERY_HEADER]
    assert dlq[0].id == first_id
    # nothing more is sent for a dead-lettered delivery
    await deliverer.run_once()
    assert len(receiver.hits) == 2
    again = await queue.webhook_dlq_retry(first_id)
    assert again.state == "pending" and again.attempts == 0

    async def delivered() -> bool:
        await deliverer.run_once()
        return (await _status(queue, res.job.id)).startswith("delivered")

    await wait_for(delivered, timeout=10, step=0.03)
    assert receiver.hits[-1][0][DELIVERY_HEADER] == first_id  # same id: receivers dedupe
    assert await queue.webhook_dlq_list() == []


async def test_client_errors_are_not_retried_and_redirects_not_followed(
    queue: JobQueue, receiver: Receiver
) -> None:
    receiver.script = [302]
    res = await queue.enqueue(NewJob(task="t", input=1, webhook_url=receiver.url))
    (d,) = await queue.claim("w", lease=5)
    assert await queue.complete(d, 1)
    deliverer = OutboxDeliverer(queue, _sender(), attempts=5)
    await deliverer.run_once()
    status = await _status(queue, res.job.id)
    assert status.startswith("failed HTTP 302") and "not retried" in status, status
    assert len(receiver.hits) == 1  # the redirect target was never called


async def test_dead_and_cancelled_jobs_send_their_event(
    queue: JobQueue, receiver: Receiver
) -> None:
    dead = await queue.enqueue(NewJob(task="t", input=1, webhook_url=receiver.url, max_attempts=1))
    (d,) = await queue.claim("w", lease=5)
    assert await queue.fail(d, "boom") == "dead"
    gone = await queue.enqueue(NewJob(task="t", input=2, webhook_url=receiver.url))
    await queue.cancel(gone.job.id)
    deliverer = OutboxDeliverer(queue, _sender(), attempts=2)

    async def both() -> bool:
        await deliverer.run_once()
        return len(receiver.hits) >= 2

    await wait_for(both, timeout=10)
    (failed,) = receiver.bodies(dead.job.id)
    assert failed["event"] == "job.failed" and failed["last_error"] == "boom"
    (cancelled,) = receiver.bodies(gone.job.id)
    assert cancelled["event"] == "job.cancelled" and cancelled["status"] == "cancelled"


async def test_no_sender_dead_letters_with_a_reason(queue: JobQueue) -> None:
    res = await queue.enqueue(NewJob(task="t", input=1, webhook_url="https://hooks.example/x"))
    (d,) = await queue.claim("w", lease=5)
    assert await queue.complete(d, 1)
    await OutboxDeliverer(queue, None).run_once()
    assert "webhook_secret" in await _status(queue, res.job.id)
    assert [x.job_id for x in await queue.webhook_dlq_list()] == [res.job.id]


async def test_unsigned_sender_sends_no_signature(queue: JobQueue, receiver: Receiver) -> None:
    res = await queue.enqueue(NewJob(task="t", input=1, webhook_url=receiver.url))
    (d,) = await queue.claim("w", lease=5)
    assert await queue.complete(d, 1)
    await OutboxDeliverer(queue, WebhookSender(None)).run_once()
    assert (await _status(queue, res.job.id)).startswith("delivered")
    headers, _ = receiver.hits[0]
    assert SIGNATURE_HEADER not in headers and headers[DELIVERY_HEADER]


async def test_a_deliverer_that_dies_mid_send_leaves_the_entry_due_again(
    queue: JobQueue, receiver: Receiver
) -> None:
    res = await queue.enqueue(NewJob(task="t", input=1, webhook_url=receiver.url))
    (d,) = await queue.claim("w", lease=5)
    assert await queue.complete(d, 1)
    (taken,) = await queue.webhooks_due("dies", lease=0.3)  # taken, never settled
    assert await queue.webhooks_due("other", lease=0.3) == []  # leased: not handed out twice
    await asyncio.sleep(0.4)
    await OutboxDeliverer(queue, _sender()).run_once()
    assert (await _status(queue, res.job.id)) == "delivered 200 (attempt 2)"
    assert receiver.hits[0][0][DELIVERY_HEADER] == taken.id


async def test_sigkill_between_storing_the_result_and_sending(
    queue: JobQueue, url: str, tmp_path: Path, receiver: Receiver
) -> None:
    res = await queue.enqueue(NewJob(task="t", input=42, webhook_url=receiver.url))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "jobs_webhook_proc.py"), url, str(tmp_path)], env=env
    )
    try:
        assert await asyncio.to_thread(proc.wait, 60) == -9  # killed itself after storing
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / f"stored-{res.job.id}").read_text() == "True"
    job = await queue.get(res.job.id)
    assert job.state == "succeeded" and job.result == {"answer": 42}
    assert job.webhook_status == "pending" and receiver.hits == []

    async def handler(job: object) -> object:
        raise AssertionError("nothing left to run")

    worker = Worker(queue, handler, lease=5, poll_interval=0.02, webhooks=_sender())

    async def delivered() -> bool:
        return (await _status(queue, res.job.id)).startswith("delivered")

    await run_worker_until(worker, delivered)
    (body,) = receiver.bodies(res.job.id)
    assert body["result"] == {"answer": 42} and body["event"] == "job.completed"
