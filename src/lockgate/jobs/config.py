"""``jobs:`` section of lockgate.yaml (``Config.jobs``).

Example::

    jobs:
      queue_url: postgresql://lockgate@db:5432/lockgate?schema=jobs   # default: SQLite file
      max_depth: 50000          # enqueue -> 429 QueueFull beyond this many waiting jobs
      result_ttl: 604800        # seconds; then GET /v1/jobs/{id} -> 410
      lease: 30                 # visibility timeout; heartbeats every lease/3
      concurrency: 8            # jobs in flight per worker process
      default_model: local
      webhook_secret: env:LOCKGATE_WEBHOOK_SECRET
      alerts: {url: https://ops.example/hooks/lockgate, max_depth: 10000, max_age: 600, max_dlq: 1}
      tasks:
        - {name: ticket_triage, kind: triage, labels: [billing, bug, other], routes: {bug: eng}}
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from lockgate.jobs.queue import QueueOptions
from lockgate.jobs.taskspec import TaskSpec, builtin_tasks

__all__ = ["AlertSettings", "JobsSettings", "jobs_settings_of"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertSettings(_Strict):
    url: str | None = None
    """Where HMAC-signed alert webhooks go (none: alerts only logged)."""
    max_depth: int | None = Field(None, ge=1)
    max_age: float | None = Field(None, gt=0)
    """Seconds the oldest waiting job may wait."""
    max_dlq: int | None = Field(None, ge=1)
    interval: float = Field(15.0, gt=0)
    """Seconds between checks (and the minimum gap between repeats of one alert)."""


class JobsSettings(_Strict):
    queue_url: str | None = None
    """``sqlite:///...`` (default ``<home>/jobs.db``), ``postgresql://...?schema=``, ``redis://...?prefix=``."""
    max_depth: int = Field(100_000, ge=1)
    result_ttl: float = Field(7 * 24 * 3600.0, gt=0)
    tombstone_ttl: float = Field(30 * 24 * 3600.0, ge=0)
    """Seconds an expired job stays as a 410 tombstone holding its idempotency key."""
    lease: float = Field(30.0, gt=0)
    concurrency: int = Field(8, ge=1, le=1024)
    poll_interval: float = Field(0.2, gt=0)
    grace: float = Field(30.0, ge=0)
    max_attempts: int = Field(3, ge=1, le=100)
    backoff_base: float = Field(1.0, gt=0)
    backoff_cap: float = Field(300.0, gt=0)
    full_retry_after: float = Field(5.0, gt=0)
    default_model: str = "local"
    webhook_secret: str | None = None
    webhook_attempts: int = Field(5, ge=1, le=20)
    allow_private_webhooks: bool = False
    """Accept webhook URLs on loopback/private addresses (off: no SSRF into the network)."""
    alerts: AlertSettings = AlertSettings()
    tasks: list[TaskSpec] = Field(default_factory=list)

    def effective_queue_url(self, home: str | Path) -> str:
        env = os.environ.get("LOCKGATE_QUEUE_URL")
        if env:
            return env
        return self.queue_url or f"sqlite:///{Path(home) / 'jobs.db'}"

    def queue_options(self) -> QueueOptions:
        return QueueOptions(
            max_depth=self.max_depth,
            result_ttl=self.result_ttl,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            full_retry_after=self.full_retry_after,
        )

    def task_specs(self) -> dict[str, TaskSpec]:
        """Built-ins overlaid with the configured tasks.

        A task without ``model`` uses the task route (``Config.tasks[name]``) if any, else
        ``default_model`` (the TaskRunner resolves it).
        """
        specs = builtin_tasks()
        for spec in self.tasks:
            specs[spec.name] = spec
        return specs


def jobs_settings_of(config: object) -> JobsSettings:
    """``config.jobs`` if the main Config has the section yet, else defaults."""
    value = getattr(config, "jobs", None)
    return value if isinstance(value, JobsSettings) else JobsSettings()
