"""The per-process jobs objects the HTTP API uses, built once and closed on shutdown.

``JobsServices.start(config, registry)`` opens the job queue named by ``jobs.queue_url``
(or ``LOCKGATE_QUEUE_URL``; default a SQLite file under the lockgate home), builds the
:class:`JobService` (``/v1/jobs``) and the :class:`OpenAIBatchService` (``/v1/files``,
``/v1/batches``, files under ``<home>/batches``), and runs a :class:`QueueMonitor` in the
background (gauges on ``registry``, alerts, result expiry). ``aclose()`` stops the monitor
and closes the queue. The server's lifespan keeps one as ``app.state.jobs``.

Workers are separate (``lockgate worker``): the gateway only enqueues and reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from lockgate.jobs.monitor import JobsGauges, QueueMonitor
from lockgate.jobs.openai_batch import OpenAIBatchService
from lockgate.jobs.queue import JobQueue, open_queue, queue_options
from lockgate.jobs.service import JobService
from lockgate.jobs.taskspec import task_specs
from lockgate.jobs.webhooks import WebhookSender
from lockgate.settings import Config, resolve_secret

__all__ = ["JobsServices"]


@dataclass
class JobsServices:
    queue: JobQueue
    service: JobService
    batches: OpenAIBatchService
    monitor: QueueMonitor
    _stop: asyncio.Event
    _sender: WebhookSender | None = None
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, config: Config, registry: CollectorRegistry | None = None
    ) -> JobsServices:
        settings = config.jobs
        queue = open_queue(settings.effective_queue_url(config.home), queue_options(settings))
        await queue.open()
        secret = resolve_secret(settings.webhook_secret, "jobs.webhook_secret")
        sender = WebhookSender(secret, attempts=settings.webhook_attempts) if secret else None
        monitor = QueueMonitor(
            queue,
            settings.alerts,
            gauges=JobsGauges(registry),
            sender=sender,
            tombstone_ttl=settings.tombstone_ttl,
        )
        self = cls(
            queue=queue,
            service=JobService(
                queue,
                task_specs(settings),
                allow_private_webhooks=settings.allow_private_webhooks,
            ),
            batches=OpenAIBatchService(config.home_path / "batches", queue),
            monitor=monitor,
            _stop=asyncio.Event(),
            _sender=sender,
        )
        self._task = asyncio.create_task(monitor.run(self._stop), name="lockgate-jobs-monitor")
        return self

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(self._task, timeout=5)
                except TimeoutError:
                    self._task.cancel()
                    await self._task
        if self._sender is not None:
            await self._sender.aclose()
        await self.queue.aclose()
