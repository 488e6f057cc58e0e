"""A job worker inside the gateway process: ``lockgate up`` runs one by default.

:class:`EmbeddedWorker` wraps a :class:`~lockgate.jobs.worker.Worker` in a background task
that starts with the server and stops with it (in-flight jobs finish within the worker's
grace, the rest go back to the queue). Whether a process runs one is
:func:`embedded_worker_enabled`: the ``LOCKGATE_EMBEDDED_WORKER`` environment variable
(``1``/``0``; ``lockgate up`` sets it, ``--no-worker`` clears it) else the
``jobs.embedded_worker`` setting (off: ``lockgate serve`` deployments run ``lockgate worker``
processes beside the gateways). The worker serves jobs, ``/v1/batches`` rows and review
resumptions exactly as a separate ``lockgate worker`` does: same queue, same handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from lockgate.jobs.worker import Worker
from lockgate.settings.jobs import JobsSettings

__all__ = ["EMBEDDED_WORKER_ENV", "EmbeddedWorker", "embedded_worker_enabled"]

EMBEDDED_WORKER_ENV = "LOCKGATE_EMBEDDED_WORKER"
log = logging.getLogger("lockgate.jobs.embedded")


def embedded_worker_enabled(settings: JobsSettings) -> bool:
    env = os.environ.get(EMBEDDED_WORKER_ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    return settings.embedded_worker


class EmbeddedWorker:
    """One worker running as a task of the current event loop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._stop = asyncio.Event()
        self._task: asyncio.Task[object] | None = None

    def start(self) -> EmbeddedWorker:
        self._task = asyncio.create_task(self.worker.run(self._stop), name="embedded-worker")
        self._task.add_done_callback(self._crashed)
        return self

    def _crashed(self, task: asyncio.Task[object]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._stop.is_set():
            log.error("embedded job worker stopped", exc_info=task.exception())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
