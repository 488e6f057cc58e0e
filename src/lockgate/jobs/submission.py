"""What the HTTP adapter and CLI call to submit and inspect jobs.

``JobService.submit`` checks the task exists, takes its ``max_attempts``,
keeps the submitter's principal with the job (so the worker's model calls are
governed as theirs) and enqueues. A ``webhook_url`` must be http(s), pass the SSRF
guard (:mod:`lockgate.jobs.ssrf`: its host is resolved and every address checked) and
have a signing secret to be sent with (``jobs.webhook_secret``), unless unsigned
webhooks are explicitly allowed (``jobs.allow_unsigned_webhooks``). Errors are
:class:`~lockgate.errors.GatewayError` subclasses the adapter renders as-is:
``BadRequest`` (unknown task, bad webhook URL), ``QueueFull`` (429 + Retry-After),
``JobNotFound`` (404), ``JobGone`` (410).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lockgate.errors import BadRequest
from lockgate.jobs.model import EnqueueResult, Job, JobNotFound, NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.ssrf import AddressPolicy, UnsafeDestination
from lockgate.jobs.worker import principal_to_meta
from lockgate.pipeline.call import Principal
from lockgate.settings.jobs import JobsSettings, TaskSpec

__all__ = ["JobService", "job_service"]


def job_service(
    queue: JobQueue, settings: JobsSettings, tasks: dict[str, TaskSpec], *, secret: str | None
) -> JobService:
    """The JobService of the ``jobs:`` config (``secret``: the resolved webhook secret)."""
    return JobService(
        queue,
        tasks,
        allow_private_webhooks=settings.allow_private_webhooks,
        webhook_allow=tuple(settings.webhook_allow),
        webhooks_signed=bool(secret),
        allow_unsigned_webhooks=settings.allow_unsigned_webhooks,
    )


@dataclass
class JobService:
    queue: JobQueue
    tasks: dict[str, TaskSpec]
    allow_private_webhooks: bool = False
    """Let webhook_url point at loopback/private addresses (tests, single-host setups)."""
    webhook_allow: tuple[str, ...] = ()
    """SSRF guard exceptions: host names and CIDR networks (``jobs.webhook_allow``)."""
    webhooks_signed: bool = False
    """A webhook secret is configured (``jobs.webhook_secret``)."""
    allow_unsigned_webhooks: bool = False
    policy: AddressPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = AddressPolicy.of(self.webhook_allow, self.allow_private_webhooks)

    async def check_webhook_url(self, webhook_url: str) -> None:
        """BadRequest (param ``webhook_url``) unless the URL may receive webhooks."""
        parts = urlsplit(webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest("webhook_url must be an http(s) URL", param="webhook_url")
        if not (self.webhooks_signed or self.allow_unsigned_webhooks):
            raise BadRequest(
                "webhook_url needs jobs.webhook_secret to be configured on the gateway (or"
                " jobs.allow_unsigned_webhooks: true); the job was not queued",
                param="webhook_url",
                code="webhook_secret_missing",
            )
        try:
            await self.policy.check_url(webhook_url)
        except UnsafeDestination as exc:
            raise BadRequest(
                f"webhook_url is not allowed: {exc} (webhooks go to public addresses only,"
                " or to hosts in jobs.webhook_allow)",
                param="webhook_url",
            ) from None

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
            await self.check_webhook_url(webhook_url)
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
