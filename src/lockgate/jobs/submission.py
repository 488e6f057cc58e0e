"""What the HTTP adapter and CLI call to submit and inspect jobs.

``JobService.submit`` checks the task exists, takes its ``max_attempts``,
keeps the submitter's principal with the job (so the worker's model calls are
governed as theirs) and enqueues. Errors are :class:`~lockgate.errors.GatewayError`
subclasses the adapter renders as-is: ``BadRequest`` (unknown task, bad
webhook URL), ``QueueFull`` (429 + Retry-After), ``JobNotFound`` (404),
``JobGone`` (410).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lockgate.errors import BadRequest
from lockgate.jobs.model import EnqueueResult, Job, JobNotFound, NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.worker import principal_to_meta
from lockgate.pipeline.call import Principal
from lockgate.settings.jobs import TaskSpec

__all__ = ["JobService"]


def _private_host(host: str) -> bool:
    """Loopback/private/link-local IP literals and ``localhost`` (DNS names are not resolved)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved


@dataclass
class JobService:
    queue: JobQueue
    tasks: dict[str, TaskSpec]
    allow_private_webhooks: bool = False
    """Let webhook_url point at loopback/private addresses (tests, single-host setups)."""

    async def submit(
        self,
        task: str,
        input: Any,
        *,
        principal: Principal | None = None,
        idempotency_key: str | None = None,
        partition_key: str | None = None,
        priority: int = 0,
        webhook_url: str | None = None,
        run_after: float | None = None,
    ) -> EnqueueResult:
        spec = self.tasks.get(task)
        if spec is None:
            raise BadRequest(
                f"unknown task '{task}' (known: {', '.join(sorted(self.tasks))})",
                param="task",
                code="unknown_task",
            )
        if webhook_url is not None:
            parts = urlsplit(webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise BadRequest("webhook_url must be an http(s) URL", param="webhook_url")
            if not self.allow_private_webhooks and _private_host(parts.hostname):
                raise BadRequest(
                    "webhook_url may not point at a private or loopback address",
                    param="webhook_url",
                )
        if idempotency_key is not None and principal is not None:
            # keys are scoped to the submitter: two teams never share a job
            idempotency_key = f"{principal.key_id}:{idempotency_key}"
        return await self.queue.enqueue(
            NewJob(
                task=task,
                input=input,
                idempotency_key=idempotency_key,
                partition_key=partition_key,
                priority=priority,
                run_after=run_after,
                max_attempts=spec.max_attempts,
                webhook_url=webhook_url,
                meta=principal_to_meta(principal) if principal is not None else {},
            )
        )

    async def get(self, job_id: str, principal: Principal | None = None) -> Job:
        """The job; JobNotFound also when it belongs to another key/team."""
        job = await self.queue.get(job_id)
        self._check_owner(job, principal)
        return job

    async def cancel(self, job_id: str, principal: Principal | None = None) -> Job:
        if principal is not None and not principal.is_master:
            self._check_owner(await self.queue.get(job_id), principal)
        return await self.queue.cancel(job_id)

    @staticmethod
    def _check_owner(job: Job, principal: Principal | None) -> None:
        if principal is None or principal.is_master:
            return
        owner = job.meta.get("principal") or {}
        same_key = owner.get("key_id") == principal.key_id
        same_team = principal.team_id is not None and owner.get("team_id") == principal.team_id
        if not (same_key or same_team):
            raise JobNotFound(job.id)
