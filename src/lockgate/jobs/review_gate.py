"""Jobs meet the review queue: a job whose task has a review policy may park for a person.

:func:`reviewed_handler` wraps the task handler. After the task ran, the task's policy
(``review.policies.<task>``) is applied to its output; when a person must look, a review
item is stored (``source = "jobs"``, ``source_ref = <job id>``) and the handler raises
:class:`~lockgate.jobs.model.ParkForReview`: the worker parks the job in
``awaiting_review`` (lease dropped, nothing retried). :func:`job_resumer` is registered with
the review service: after the decision it finishes the job exactly once (``succeeded`` with
the approved or edited output, ``dead`` with the rejection reason) and the queue writes the job's
completion webhook to its outbox in the same transaction.

Crash safety: the review id is derived from the job id, so a job re-run after a worker died
between storing the item and parking finds its item instead of making a second one; if the
item was decided meanwhile the re-run finishes with the decision without calling the model
again. A decision whose job could not be finished yet (not parked yet, store down) is
finished by the review sweeper of any process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lockgate.jobs.model import Job, ParkForReview
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import ReviewRejected, TaskOutputInvalid, TaskResult, TaskRunner
from lockgate.jobs.worker import Handler, principal_from_meta
from lockgate.pipeline.call import Principal
from lockgate.review import ReviewItem, ReviewNotFound, ReviewService, build_item
from lockgate.settings.review import ReviewPolicy

__all__ = [
    "TaskGate",
    "decided_result",
    "gate_task",
    "job_resumer",
    "review_id_for_job",
    "reviewed_handler",
]


def review_id_for_job(job_id: str) -> str:
    return "rev_" + hashlib.sha256(f"jobs:{job_id}".encode()).hexdigest()[:32]


def decided_result(item: ReviewItem) -> tuple[Any, str | None]:
    """The job's result (or its error) after a person decided."""
    if item.state == "rejected":
        reason = (item.decision or {}).get("reason", "")
        return None, f"rejected in review {item.id} by {item.decided_by}: {reason}"
    result = dict(item.response) if isinstance(item.response, dict) else {}
    result["output"] = item.final_output()
    result["review"] = {
        "id": item.id, "state": item.state, "decided_by": item.decided_by,
        "decided_at": item.decided_at,
    }
    return result, None


@dataclass(slots=True)
class TaskGate:
    """What the review policy made of one task run (a job or a batch row)."""

    result: Any = None
    """The output document to deliver (the task's answer, or the reviewer's version)."""
    error: str | None = None
    """Set when a person rejected it (the reason, for the job's error or the rejects file)."""
    parked: str | None = None
    """The review item id when the work must wait for a person."""
    run: TaskResult | None = None
    """The model run of this attempt (None when a stored decision was used)."""


async def gate_task(
    runner: TaskRunner, review: ReviewService, policy: ReviewPolicy, task: str, input: Any, *,
    principal: Principal, item_id: str, source: str, source_ref: str, request_id: str,
) -> TaskGate:
    """Run ``task`` on ``input`` under ``policy``; park, deliver, or use a stored decision.

    ``item_id`` is derived from the work's identity, so a re-run (after a crash or for a
    batch row) finds the item it made instead of making a second one, and a decided item is
    used without calling the model again.
    """
    try:
        existing: ReviewItem | None = await review.repo.get(item_id)
    except ReviewNotFound:
        existing = None
    if existing is not None:
        if not existing.decided:
            return TaskGate(parked=item_id)
        result, error = decided_result(existing)
        return TaskGate(result=result, error=error)
    contract_failed = False
    run: TaskResult | None = None
    try:
        run = await runner.run(task, input, principal=principal, request_id=request_id)
    except TaskOutputInvalid as exc:
        if not policy.when.contract_failed:
            raise
        contract_failed = True
        output: Any = {"text": None, "contract_error": str(exc)}
        response: dict[str, Any] = {"output": output}
        confidence = None
        models: list[str] = []
    else:
        output = run.output
        response = run.as_json()
        confidence = run.confidence
        models = run.models
        if policy.confidence.source == "field" and confidence is None:
            raw = output.get(policy.confidence.field) if isinstance(output, dict) else None
            if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 <= raw <= 1:
                confidence = float(raw)
    verdict = review.assess(task, policy, output=output, request=input,
                            confidence=confidence, contract_failed=contract_failed)
    if not verdict.review:
        if verdict.auto_approved:
            review.record_auto(build_item(
                task=task, source=source, policy=policy, reasons=["auto-approved"],
                principal=principal, request=None, output=None, confidence=confidence,
                request_id=request_id, model=models[-1] if models else None,
                source_ref=source_ref,
            ))
        return TaskGate(result=response, run=run)
    new = build_item(
        task=task, source=source, policy=policy, reasons=verdict.reasons,
        principal=principal, request=input, output=output, confidence=confidence,
        response=response, request_id=request_id, model=models[-1] if models else None,
        source_ref=source_ref, contract=runner.spec(task).output_schema,
    )
    new.id = item_id
    await review.submit(new)
    return TaskGate(parked=item_id, run=run)


def reviewed_handler(inner: Handler, runner: TaskRunner, review: ReviewService) -> Handler:
    """``inner`` (the plain task handler) with the review policy of each job's task."""

    async def handle(job: Job) -> Any:
        policy = review.policy_for(job.task)
        if policy is None:
            return await inner(job)
        gate = await gate_task(
            runner, review, policy, job.task, job.input, principal=principal_from_meta(job.meta),
            item_id=review_id_for_job(job.id), source="jobs", source_ref=job.id,
            request_id=f"{job.id}-a{job.attempts}",
        )
        if gate.parked is not None:
            raise ParkForReview(gate.parked)
        if gate.error is not None:
            raise ReviewRejected(gate.error)
        return gate.result

    return handle


def job_resumer(queue: JobQueue) -> Any:
    """The review service's resumer for ``source = "jobs"``: finishes the parked job; the
    queue writes its completion webhook to the outbox in the same transaction."""

    async def resume(item: ReviewItem) -> None:
        job_id = item.source_ref
        if not job_id:
            return
        result, error = decided_result(item)
        job = await queue.finish_review(job_id, result, error)
        if job is None:
            current = await queue.get(job_id)
            if current.state in ("queued", "running", "awaiting_review"):
                # not parked yet (or a store hiccup): the sweeper tries again
                raise RuntimeError(f"job {job_id} is {current.state}, not finished yet")
            # finished already (a re-run used the decision): nothing to do

    return resume
