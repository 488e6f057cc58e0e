"""``jobs:`` section of lockgate.yaml (``Config.jobs``): queue, workers, tasks, alerts.

Example::

    jobs:
      queue_url: redis://cache:6379/0?prefix=jobs   # or nats://...?prefix=; default: the store
      embedded_worker: false    # true: every gateway process runs a worker (lockgate up: on)
      max_depth: 50000          # enqueue -> 429 QueueFull beyond this many waiting jobs
      result_ttl: 604800        # seconds; then GET /v1/jobs/{id} -> 410
      lease: 30                 # visibility timeout; heartbeats every lease/3
      concurrency: 8            # jobs in flight per worker process
      default_model: local
      max_attempts: 3           # tries per job unless its task sets max_attempts
      webhook_secret: env:LOCKGATE_WEBHOOK_SECRET   # needed for webhook_url (or allow unsigned)
      webhook_allow: [hooks.internal.example, 10.20.0.0/16]   # SSRF guard exceptions
      alerts: {url: https://ops.example/hooks/lockgate, max_depth: 10000, max_age: 600, max_dlq: 1}
      tasks:
        - {name: ticket_triage, kind: triage, labels: [billing, bug, other], routes: {bug: eng}}

The jobs feature turns these into objects: :func:`lockgate.jobs.queue.queue_options`,
:func:`lockgate.jobs.taskspec.task_specs` (built-ins overlaid with ``tasks``) and
:func:`lockgate.jobs.taskspec.task_chain` (the steps a task runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, model_validator

from lockgate.settings.base import Strict

__all__ = ["AlertSettings", "JobsSettings", "TaskSpec", "TaskStep"]


class TaskStep(Strict):
    name: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    system: str | None = None
    output_schema: dict[str, Any] | None = None
    model: str | None = None
    """Overrides the task's model for this step."""


class TaskSpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["prompt", "classify", "extract", "summarize", "triage"] = "prompt"
    model: str | None = None
    """Public model name (or task route); default: ``jobs.default_model``."""
    system: str | None = None
    prompt: str | None = None
    steps: list[TaskStep] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    confidence_field: str | None = None
    labels: list[str] = Field(default_factory=list)
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routes: dict[str, str] = Field(default_factory=dict)
    default_team: str = "general"
    max_attempts: int = Field(3, ge=1, le=100)
    """Tries per job; when not given, ``jobs.max_attempts``."""
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    json_mode: bool = True
    """Ask for ``response_format: json_schema`` (models that support it answer in shape)."""

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.kind == "prompt" and not (self.prompt or self.steps):
            raise ValueError(f"task '{self.name}' needs 'prompt' or 'steps'")
        if self.kind in ("classify", "triage") and not self.labels:
            raise ValueError(f"task '{self.name}' ({self.kind}) needs 'labels'")
        if self.kind == "extract" and not self.fields and not self.output_schema:
            raise ValueError(f"task '{self.name}' (extract) needs 'fields' or 'output_schema'")
        for schema in [self.output_schema, *(s.output_schema for s in self.steps)]:
            if schema is not None:
                try:
                    Draft202012Validator.check_schema(schema)
                except SchemaError as exc:
                    msg = f"task '{self.name}': invalid JSON schema: {exc.message}"
                    raise ValueError(msg) from None
        return self


class AlertSettings(Strict):
    url: str | None = None
    """Where HMAC-signed alert webhooks go (none: alerts only logged)."""
    max_depth: int | None = Field(None, ge=1)
    max_age: float | None = Field(None, gt=0)
    """Seconds the oldest waiting job may wait."""
    max_dlq: int | None = Field(None, ge=1)
    interval: float = Field(15.0, gt=0)
    """Seconds between checks (and the minimum gap between repeats of one alert)."""


class JobsSettings(Strict):
    queue_url: str | None = None
    """``sqlite:///...``, ``postgresql://...?schema=``, ``redis://...?prefix=``,
    ``nats://...?prefix=``; default: the
    store (``database_url``: its PostgreSQL database, or its SQLite file), so every gateway
    and worker sharing the store shares the queue."""
    max_depth: int = Field(100_000, ge=1)
    result_ttl: float = Field(7 * 24 * 3600.0, gt=0)
    tombstone_ttl: float = Field(30 * 24 * 3600.0, ge=0)
    """Seconds an expired job stays as a 410 tombstone holding its idempotency key."""
    lease: float = Field(30.0, gt=0)
    concurrency: int = Field(8, ge=1, le=1024)
    poll_interval: float = Field(0.2, gt=0)
    grace: float = Field(30.0, ge=0)
    max_attempts: int = Field(3, ge=1, le=100)
    """Tries per job for tasks that do not set their own ``max_attempts``."""
    backoff_base: float = Field(1.0, gt=0)
    backoff_cap: float = Field(300.0, gt=0)
    full_retry_after: float = Field(5.0, gt=0)
    default_model: str = "local"
    webhook_secret: str | None = None
    webhook_attempts: int = Field(5, ge=1, le=20)
    """Delivery attempts of a completion webhook before it goes to the webhook DLQ."""
    allow_unsigned_webhooks: bool = False
    """Send webhooks unsigned when ``webhook_secret`` is unset (off: such jobs get a 400)."""
    allow_private_webhooks: bool = False
    """Turn the SSRF guard off: any address, including loopback/private (tests, one host)."""
    webhook_allow: list[str] = Field(default_factory=list)
    """Host names or CIDR networks webhooks may reach even though they are not public
    (e.g. ``127.0.0.1/32`` for a local receiver); everything else must resolve, at submit
    and at every connection, only to public addresses."""
    embedded_worker: bool = False
    """Run a job worker inside every gateway process (``lockgate up`` turns it on unless
    ``--no-worker``; ``LOCKGATE_EMBEDDED_WORKER=1/0`` overrides). Off: run ``lockgate worker``
    processes beside the gateways."""
    alerts: AlertSettings = AlertSettings()
    tasks: list[TaskSpec] = Field(default_factory=list)

    def effective_queue_url(self, database_url: str, home: str | Path) -> str:
        """``LOCKGATE_QUEUE_URL``, else ``queue_url``, else the store's database
        (an in-memory SQLite store: ``<home>/jobs.db``)."""
        env = os.environ.get("LOCKGATE_QUEUE_URL")
        if env:
            return env
        if self.queue_url:
            return self.queue_url
        scheme, _, rest = database_url.partition(":")
        if scheme.startswith("sqlite") and (not rest.startswith("///") or ":memory:" in rest
                                            or rest == "///"):
            return f"sqlite:///{Path(home) / 'jobs.db'}"
        return database_url
