"""Job records, job states and the errors the queue raises.

A :class:`Job` is a plain snapshot of one queued unit of work as a backend
stored it. Every backend (SQLite, PostgreSQL, Redis Streams) returns the same
shape, so workers, HTTP adapters and the CLI never look at backend details.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from lockgate.errors import GatewayError, NotFound, RateLimited

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "Delivery",
    "EnqueueResult",
    "Job",
    "JobGone",
    "JobNotFound",
    "JobState",
    "NewJob",
    "ParkForReview",
    "QueueFull",
    "QueueStats",
    "WebhookDelivery",
    "WebhookOutcome",
    "backoff_delay",
    "new_delivery_id",
    "new_job_id",
]

JobState = Literal[
    "queued", "running", "awaiting_review", "succeeded", "dead", "cancelled", "expired"
]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "dead", "cancelled", "expired"})


class ParkForReview(Exception):
    """Raised by a handler: the job waits for a person (``awaiting_review``) instead of
    finishing; the review service finishes it exactly once after the decision."""

    def __init__(self, review_id: str) -> None:
        super().__init__(review_id)
        self.review_id = review_id


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def new_delivery_id() -> str:
    return "whd_" + uuid.uuid4().hex


@dataclass(slots=True)
class NewJob:
    """What a caller submits."""

    task: str
    input: Any
    idempotency_key: str | None = None
    partition_key: str | None = None
    priority: int = 0
    run_after: float | None = None
    """Unix time before which the job must not start (None: now)."""
    max_attempts: int = 3
    webhook_url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Opaque caller data kept with the job (e.g. the principal's key id)."""


@dataclass(slots=True)
class Job:
    """A stored job, as read back from a backend."""

    id: str
    task: str
    input: Any
    state: JobState
    attempts: int
    max_attempts: int
    created_at: float
    idempotency_key: str | None = None
    partition_key: str | None = None
    priority: int = 0
    run_after: float = 0.0
    lease_owner: str | None = None
    lease_until: float | None = None
    result: Any = None
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)
    finished_at: float | None = None
    expires_at: float | None = None
    webhook_url: str | None = None
    webhook_status: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The JSON shape shown by ``GET /v1/jobs/{id}`` and ``lockgate dlq show``."""
        return {
            "id": self.id,
            "object": "job",
            "task": self.task,
            "status": self.state,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "partition_key": self.partition_key,
            "priority": self.priority,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "result": self.result,
            "last_error": self.last_error,
            "errors": list(self.errors),
            "webhook_status": self.webhook_status,
        }


@dataclass(slots=True)
class Delivery:
    """A job handed to one worker under a lease.

    ``token`` identifies this delivery to the backend (a stream message id for
    Redis); pass the Delivery back to heartbeat/complete/fail.
    """

    job: Job
    worker_id: str
    lease_until: float
    token: str = ""


WebhookOutcome = Literal["delivered", "retry", "dead"]


@dataclass(slots=True)
class WebhookDelivery:
    """One completion webhook waiting in (or taken from) a queue's outbox.

    The queue writes it in the same transaction (SQL) or script (Redis) that moves
    the job to ``succeeded``/``dead``/``cancelled``, so a worker killed right after
    storing a result cannot lose it. ``id`` is stable across retries: receivers
    deduplicate on the ``X-Lockgate-Delivery`` header.
    """

    id: str
    job_id: str
    event: str
    """``job.completed``, ``job.failed`` or ``job.cancelled``."""
    url: str
    attempts: int
    """Attempts taken so far, counting the one this delivery was handed out for."""
    state: str = "pending"
    """``pending`` (due or retrying), ``delivered`` or ``dead`` (the webhook DLQ)."""
    last_error: str | None = None
    created_at: float = 0.0


@dataclass(slots=True)
class EnqueueResult:
    job: Job
    created: bool
    """False when the idempotency key matched an existing job (nothing new queued)."""


@dataclass(slots=True)
class QueueStats:
    depth: int
    """Jobs waiting (queued, including those delayed for a retry)."""
    oldest_age: float
    """Seconds since the oldest waiting job was created (0 when empty)."""
    in_flight: int
    dlq: int


class QueueFull(RateLimited):
    """Enqueue refused: the queue's depth passed its limit (HTTP 429 + Retry-After)."""

    code = "queue_full"

    def __init__(self, depth: int, limit: int, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(
            f"job queue is full ({depth} waiting, limit {limit}); retry after {seconds}s",
            headers={"Retry-After": str(seconds)},
        )
        self.depth = depth
        self.limit = limit
        self.retry_after = float(seconds)


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobGone(GatewayError):
    """The job finished and its result passed its time-to-live (HTTP 410)."""

    status = 410
    type = "invalid_request_error"
    code = "job_expired"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} finished and its result has expired")
        self.job_id = job_id


def backoff_delay(
    attempt: int, *, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter after the ``attempt``-th failure (1-based).

    Returns a delay in ``[base * 2**(attempt-1) / 2, base * 2**(attempt-1)]``
    capped at ``cap``: half fixed, half random ("equal jitter"), so retries
    spread out but never fire immediately.
    """
    r = rng or random
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(ceiling / 2 + r.random() * ceiling / 2)
