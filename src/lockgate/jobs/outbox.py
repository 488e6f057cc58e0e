"""Completion webhooks from the queue's outbox: at least once, deduplicable, retried, dead-lettered.

The queue writes an outbox entry in the same atomic step that stores a job's final state
(``succeeded`` -> ``job.completed``, ``dead`` -> ``job.failed``, ``cancelled`` ->
``job.cancelled``), so a worker killed between saving a result and sending loses nothing:
any worker's :class:`OutboxDeliverer` takes due entries under a lease (an entry whose taker
died is due again when the lease runs out), POSTs them with ``X-Lockgate-Delivery: <id>``
(the same id on every retry, so receivers can drop duplicates), and records the outcome:

* 2xx -> ``delivered``; the job's ``webhook_status`` becomes ``delivered 200 (attempt N)``;
* connection error, timeout, 408, 429, 5xx -> retried with exponential backoff and jitter
  (``retrying: HTTP 500 (attempt N)``) until ``attempts`` are used up;
* anything else, or attempts used up -> the webhook DLQ (``failed HTTP 404 (attempt N,
  dead-lettered)``); ``lockgate webhooks dlq`` lists them, ``webhook_dlq_retry`` resends.

A job's ``webhook_status`` is therefore always set: ``waiting`` (job not finished),
``pending``, ``retrying ...``, ``delivered ...`` or ``failed ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from lockgate.jobs.model import JobGone, JobNotFound, WebhookDelivery
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.webhooks import WebhookSender

__all__ = ["EVENT_STATUS", "OutboxDeliverer", "webhook_payload"]

log = logging.getLogger("lockgate.jobs.outbox")

EVENT_STATUS = {"job.completed": "succeeded", "job.failed": "dead", "job.cancelled": "cancelled"}

NO_SECRET = (
    "failed: no jobs.webhook_secret configured (set it, or jobs.allow_unsigned_webhooks: true)"
    " (dead-lettered)"
)


async def webhook_payload(queue: JobQueue, d: WebhookDelivery) -> dict[str, Any]:
    """The JSON body for one delivery, built from the job as stored now."""
    status = EVENT_STATUS.get(d.event, d.event)
    payload: dict[str, Any] = {
        "id": d.job_id,
        "object": "job",
        "event": d.event,
        "delivery_id": d.id,
        "status": status,
    }
    try:
        job = await queue.get(d.job_id)
    except (JobGone, JobNotFound):
        payload["result_expired"] = True
        return payload
    payload["task"] = job.task
    if d.event == "job.completed":
        payload["result"] = job.result
    elif d.event == "job.failed":
        payload["last_error"] = job.last_error
    return payload


class OutboxDeliverer:
    """Delivers due outbox entries of one queue (run it in every worker process)."""

    def __init__(
        self,
        queue: JobQueue,
        sender: WebhookSender | None,
        *,
        attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        lease: float = 60.0,
        poll_interval: float = 0.5,
        batch: int = 16,
        owner: str = "outbox",
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.lease = lease
        self.poll_interval = poll_interval
        self.batch = batch
        self.owner = owner

    async def run_once(self) -> int:
        """Deliver what is due now; returns how many entries were attempted."""
        due = await self.queue.webhooks_due(self.owner, limit=self.batch, lease=self.lease)
        if due:
            await asyncio.gather(*(self._deliver(d) for d in due))
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.run_once()
            except Exception:  # the queue is down: back off, keep going
                log.exception("webhook outbox poll failed")
                n = 0
            if n >= self.batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)

    async def _deliver(self, d: WebhookDelivery) -> None:
        try:
            await self._attempt(d)
        except Exception:  # recorded nothing: the lease runs out and the entry is due again
            log.exception("webhook delivery %s failed unexpectedly", d.id)

    async def _attempt(self, d: WebhookDelivery) -> None:
        if self.sender is None:
            await self.queue.webhook_settle(d, "dead", NO_SECRET, error="no webhook secret")
            return
        body = orjson.dumps(await webhook_payload(self.queue, d))
        res = await self.sender.attempt(d.url, d.event, body, d.id)
        state, status, retry_at = res.verdict(d.attempts, self.attempts,
                                              backoff_base=self.backoff_base,
                                              backoff_cap=self.backoff_cap)
        error = None if res.ok else res.status
        await self.queue.webhook_settle(d, state, status, retry_at=retry_at, error=error)
