"""The job queue contract (:class:`JobQueue`, :class:`QueueOptions`); the backends
implement it and :func:`lockgate.jobs.backends.open_queue` picks one by URL.

Semantics every backend implements (and ``tests/jobs`` checks on each one):

* ``enqueue``: a repeated ``idempotency_key`` returns the existing job
  (``created=False``) and queues nothing; ``QueueFull`` (HTTP 429 with
  Retry-After) once the number of waiting jobs reaches ``max_depth``.
* ``claim``: hands out jobs under a lease (visibility timeout) and counts an
  attempt. A job whose lease expired is handed out again (to any worker); if it
  already used all its attempts it goes to the dead-letter queue instead.
  Jobs sharing a ``partition_key`` are handed out in submission order, one at
  a time (the next waits until the previous one finished, died or was
  cancelled); different keys run in parallel. ``priority``: a waiting job of higher
  priority is handed out before any of lower priority (every backend; Redis Streams and
  NATS JetStream keep one stream/consumer per priority in use).
* ``complete``: stores the result once. A delivery whose job already has a
  result (a redelivery after a lease expiry, a duplicate stream entry) stores
  nothing and returns False: the effect is exactly-once.
* ``fail``: retry after exponential backoff with jitter (at least the given
  ``retry_in``), or dead-letter with the last error once attempts are used up
  (or at once when ``permanent``).
* completion webhooks: a job with a ``webhook_url`` that becomes ``succeeded``,
  ``dead`` or ``cancelled`` gets an outbox entry in the same atomic step
  (``webhooks_due`` / ``webhook_settle``, delivered by
  :class:`lockgate.jobs.outbox.OutboxDeliverer`): at least once, with a stable
  delivery id, retries with backoff and a webhook DLQ.
* results expire ``result_ttl`` seconds after the job finished; ``get`` then
  raises :class:`~lockgate.jobs.model.JobGone` (HTTP 410).

Leases use wall-clock Unix time: keep worker clocks in sync (NTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from lockgate.jobs.model import (
    Delivery,
    EnqueueResult,
    Job,
    JobState,
    NewJob,
    QueueStats,
    WebhookDelivery,
    WebhookOutcome,
)
from lockgate.settings.jobs import JobsSettings

__all__ = ["JobQueue", "QueueOptions", "queue_options", "split_url_options"]


@dataclass(frozen=True, slots=True)
class QueueOptions:
    max_depth: int = 100_000
    """Waiting jobs at which enqueue raises QueueFull."""
    result_ttl: float = 7 * 24 * 3600.0
    """Seconds a finished job's result is kept; after that ``get`` raises JobGone."""
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    full_retry_after: float = 5.0
    """Retry-After (seconds) suggested when the queue is full."""


def queue_options(settings: JobsSettings) -> QueueOptions:
    """The queue options of the ``jobs:`` config section."""
    return QueueOptions(
        max_depth=settings.max_depth,
        result_ttl=settings.result_ttl,
        backoff_base=settings.backoff_base,
        backoff_cap=settings.backoff_cap,
        full_retry_after=settings.full_retry_after,
    )


@runtime_checkable
class JobQueue(Protocol):
    """A durable job queue. All methods are safe to call from many workers/machines."""

    options: QueueOptions

    async def open(self) -> None:
        """Connect and create the tables/streams if missing (idempotent)."""
        ...

    async def aclose(self) -> None: ...

    async def enqueue(self, new: NewJob) -> EnqueueResult: ...

    async def get(self, job_id: str) -> Job:
        """The job; JobNotFound if unknown, JobGone once its result expired."""
        ...

    async def claim(self, worker_id: str, *, limit: int = 1, lease: float = 30.0) -> list[Delivery]:
        """Up to ``limit`` jobs leased to ``worker_id`` for ``lease`` seconds."""
        ...

    async def heartbeat(self, delivery: Delivery, lease: float) -> bool:
        """Extend the lease; False when the worker no longer holds it."""
        ...

    async def complete(self, delivery: Delivery, result: Any) -> bool:
        """Store the result; False (and nothing stored) if the job was already finished."""
        ...

    async def fail(
        self, delivery: Delivery, error: str, *, retry_in: float = 0.0, permanent: bool = False
    ) -> JobState:
        """Record a failed attempt; returns the new state (``queued`` or ``dead``)."""
        ...

    async def release(self, delivery: Delivery) -> None:
        """Give a leased job back unrun (graceful shutdown); the attempt is not counted."""
        ...

    async def cancel(self, job_id: str) -> Job:
        """Cancel a waiting or running job (a running job's result is then discarded)."""
        ...

    async def dlq_list(self, limit: int = 100) -> list[Job]: ...

    async def dlq_retry(self, job_id: str) -> Job:
        """Put a dead job back in the queue with its attempts reset."""
        ...

    async def dlq_purge(self, job_id: str | None = None) -> int:
        """Delete one dead job, or all of them; returns how many."""
        ...

    async def expire_results(self) -> int:
        """Drop results past their TTL (the job stays as a tombstone -> JobGone)."""
        ...

    async def forget(self, before: float) -> int:
        """Delete tombstones of jobs whose result expired before ``before`` (Unix time).

        Their ids then answer 404 instead of 410 and their idempotency keys are free
        again: this is the end of the idempotency window.
        """
        ...

    async def set_webhook_status(self, job_id: str, status: str) -> None: ...

    async def webhooks_due(
        self, owner: str, *, limit: int = 10, lease: float = 30.0
    ) -> list[WebhookDelivery]:
        """Take up to ``limit`` due outbox entries for ``lease`` seconds (counts an attempt).

        An entry whose taker died becomes due again when the lease runs out.
        """
        ...

    async def webhook_settle(
        self,
        delivery: WebhookDelivery,
        outcome: WebhookOutcome,
        status: str,
        *,
        retry_at: float = 0.0,
        error: str | None = None,
    ) -> None:
        """Record an attempt: ``delivered``, ``retry`` (due again at ``retry_at``) or
        ``dead`` (to the webhook DLQ); ``status`` becomes the job's ``webhook_status``."""
        ...

    async def webhook_dlq_list(self, limit: int = 100) -> list[WebhookDelivery]: ...

    async def webhook_dlq_retry(self, delivery_id: str) -> WebhookDelivery:
        """Send a dead-lettered webhook again (same delivery id, attempts reset)."""
        ...

    async def stats(self) -> QueueStats: ...

    async def park(self, delivery: Delivery, note: Any) -> bool:
        """running -> ``awaiting_review`` (lease dropped, ``note`` kept as the result);
        False when the delivery is stale."""
        ...

    async def finish_review(self, job_id: str, result: Any, error: str | None) -> Job | None:
        """``awaiting_review`` -> succeeded (``result``) or dead (``error``), exactly once:
        None when the job was not awaiting review."""
        ...

    async def drop(self) -> None:
        """Delete every table/key this queue owns (tests and ``--reset``)."""
        ...


def split_url_options(url: str) -> tuple[str, dict[str, str]]:
    """``scheme://...?a=1&b=2`` -> (url without the query, {a: 1, b: 2})."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)), params
