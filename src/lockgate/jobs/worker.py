"""The job worker: N concurrent jobs per process, leases kept alive, graceful stop.

``Worker(queue, handler).run(stop_event)`` claims up to ``concurrency`` jobs
(bounded in-flight work), runs ``handler(job)`` for each, heartbeats its lease
every ``lease / 3`` seconds, then completes or fails the job. Failures are
classified by :func:`classify_error`: permanent ones (bad input, unknown task,
4xx from the gateway) go straight to the dead-letter queue, the rest retry with
backoff (at least the gateway's Retry-After). On stop it claims nothing new,
lets in-flight jobs finish for ``grace`` seconds, then cancels the rest and
gives them back to the queue (``release``: the attempt is not counted).
With only a few slots free it waits ``claim_linger`` seconds so one claim fetches
several jobs (fewer queue round trips under load).

Completion webhooks are not sent from here: the queue writes an outbox entry
with the job's final state, and the worker's :class:`~lockgate.jobs.outbox.OutboxDeliverer`
(run beside the job loop when the worker has ``webhooks`` or an ``outbox``) sends
them, at least once, surviving a crash between storing a result and sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lockgate.errors import GatewayError, RateLimited
from lockgate.jobs.model import Delivery, Job, ParkForReview
from lockgate.jobs.outbox import OutboxDeliverer
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import SYSTEM_PRINCIPAL, TaskError, TaskRunner
from lockgate.jobs.webhooks import WebhookSender
from lockgate.pipeline.call import Principal

__all__ = [
    "Handler",
    "Worker",
    "WorkerStats",
    "classify_error",
    "new_worker_id",
    "principal_from_meta",
    "principal_to_meta",
    "task_handler",
]

log = logging.getLogger("lockgate.jobs.worker")

Handler = Callable[[Job], Awaitable[Any]]


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def classify_error(exc: BaseException) -> tuple[str, bool, float]:
    """(message, permanent, retry_in seconds) for a failed job run."""
    if isinstance(exc, TaskError):
        return f"{type(exc).__name__}: {exc}", exc.permanent, 0.0
    if isinstance(exc, RateLimited):
        try:
            retry_in = float(exc.headers.get("Retry-After", "0"))
        except ValueError:
            retry_in = 0.0
        return f"{exc.error_class}: {exc.message}", False, retry_in
    if isinstance(exc, GatewayError):
        # 4xx (bad request, not allowed, unknown model): the same call fails again
        permanent = 400 <= exc.status < 500 and exc.status not in (408, 409, 425, 429)
        return f"{exc.status} {exc.error_class}: {exc.message}", permanent, 0.0
    return f"{type(exc).__name__}: {exc}"[:2000], False, 0.0


def principal_to_meta(p: Principal) -> dict[str, Any]:
    return {
        "principal": {
            "key_id": p.key_id,
            "team_id": p.team_id,
            "team_name": p.team_name,
            "allowed_models": None if p.allowed_models is None else sorted(p.allowed_models),
            "is_master": p.is_master,
        }
    }


def principal_from_meta(meta: dict[str, Any]) -> Principal:
    """The submitter's principal (governance applies as if they called), else the system one."""
    raw = meta.get("principal")
    if not isinstance(raw, dict) or not raw.get("key_id"):
        return SYSTEM_PRINCIPAL
    allowed = raw.get("allowed_models")
    return Principal(
        key_id=str(raw["key_id"]),
        team_id=raw.get("team_id"),
        team_name=raw.get("team_name"),
        allowed_models=None if allowed is None else frozenset(allowed),
        is_master=bool(raw.get("is_master")),
    )


def task_handler(runner: TaskRunner) -> Handler:
    """A handler running ``job.task`` on ``job.input`` through the pipeline."""

    async def handle(job: Job) -> Any:
        result = await runner.run(
            job.task,
            job.input,
            principal=principal_from_meta(job.meta),
            request_id=f"{job.id}-a{job.attempts}",
        )
        return result.as_json()

    return handle


@dataclass
class WorkerStats:
    completed: int = 0
    duplicates: int = 0
    """Completions refused because the job was already finished (exactly-once)."""
    retried: int = 0
    dead: int = 0
    released: int = 0
    parked: int = 0
    """Jobs handed to a person (``awaiting_review``)."""


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handler: Handler,
        *,
        worker_id: str | None = None,
        concurrency: int = 8,
        lease: float = 30.0,
        poll_interval: float = 0.2,
        grace: float = 30.0,
        webhooks: WebhookSender | None = None,
        outbox: OutboxDeliverer | None = None,
        claim_linger: float = 0.002,
    ) -> None:
        """``webhooks``: deliver the queue's completion webhooks with this sender (an
        :class:`OutboxDeliverer` is built for it); ``outbox``: a ready-made deliverer."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.queue = queue
        self.handler = handler
        self.worker_id = worker_id or new_worker_id()
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.grace = grace
        self.webhooks = webhooks
        if outbox is None and webhooks is not None:
            outbox = OutboxDeliverer(
                queue,
                webhooks,
                attempts=webhooks.attempts,
                backoff_base=webhooks.backoff_base,
                backoff_cap=webhooks.backoff_cap,
                poll_interval=max(poll_interval, 0.05),
                owner=self.worker_id,
            )
        self.outbox = outbox
        self.claim_linger = claim_linger
        self._batch_min = max(1, concurrency // 4)
        self.stats = WorkerStats()
        self._inflight: dict[asyncio.Task[None], Delivery] = {}
        self._wake = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Work until ``stop`` is set, then shut down gracefully."""
        stopper = asyncio.ensure_future(stop.wait())
        outbox_stop = asyncio.Event()
        outbox_task = (
            asyncio.create_task(self.outbox.run(outbox_stop), name="lockgate-webhook-outbox")
            if self.outbox is not None
            else None
        )
        try:
            while not stop.is_set():
                free = self.concurrency - len(self._inflight)
                if 0 < free < self._batch_min and self._inflight and self.claim_linger > 0:
                    # a moment for more slots to free up, so one claim fetches several jobs
                    await asyncio.sleep(self.claim_linger)
                    free = self.concurrency - len(self._inflight)
                got: list[Delivery] = []
                if free > 0:
                    try:
                        got = await self.queue.claim(self.worker_id, limit=free, lease=self.lease)
                    except Exception:  # the queue is down: back off, keep going
                        log.exception("claim failed")
                        got = []
                for d in got:
                    task = asyncio.create_task(self._process(d))
                    self._inflight[task] = d
                    task.add_done_callback(self._done)
                if got and len(got) == free:
                    continue
                # idle or full: wait for a slot, a poll tick, or stop
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {stopper, waker},
                    timeout=self.poll_interval if free > len(got) else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waker.cancel()
        finally:
            stopper.cancel()
            await self._shutdown()
            if outbox_task is not None:
                outbox_stop.set()
                with contextlib.suppress(TimeoutError):  # undelivered entries stay queued
                    await asyncio.wait_for(outbox_task, timeout=max(self.grace, 1.0))
            if self.webhooks is not None:
                await self.webhooks.aclose()
        return self.stats

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()

    async def _shutdown(self) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _heartbeat(self, d: Delivery) -> None:
        every = max(0.05, self.lease / 3)
        while True:
            await asyncio.sleep(every)
            try:
                if not await self.queue.heartbeat(d, self.lease):
                    log.warning("lost the lease on %s", d.job.id)
                    return
            except Exception:
                log.exception("heartbeat failed for %s", d.job.id)

    async def _process(self, d: Delivery) -> None:
        beat = asyncio.create_task(self._heartbeat(d))
        try:
            try:
                result = await self.handler(d.job)
            except asyncio.CancelledError:
                beat.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.queue.release(d))
                self.stats.released += 1
                raise
            except ParkForReview as park:
                beat.cancel()
                try:
                    parked = await self.queue.park(d, {"review_id": park.review_id})
                except Exception:
                    log.exception("could not park %s for review (lease will expire)", d.job.id)
                    return
                if parked:
                    self.stats.parked += 1
                return
            except Exception as exc:
                beat.cancel()
                await self._fail(d, *classify_error(exc))
                return
            beat.cancel()
            try:
                stored = await self.queue.complete(d, result)
            except TypeError as exc:  # the result cannot be stored as JSON: a bug, not bad luck
                await self._fail(d, f"result is not JSON-serialisable: {exc}", True, 0.0)
                return
            except Exception:
                log.exception("could not store the result of %s (lease will expire)", d.job.id)
                return
            if stored:
                self.stats.completed += 1
            else:
                self.stats.duplicates += 1
        finally:
            beat.cancel()

    async def _fail(self, d: Delivery, message: str, permanent: bool, retry_in: float) -> None:
        try:
            state = await self.queue.fail(d, message, retry_in=retry_in, permanent=permanent)
        except Exception:
            log.exception("could not record the failure of %s (lease will expire)", d.job.id)
            return
        if state == "dead":
            self.stats.dead += 1
        else:
            self.stats.retried += 1
