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
from typing import Any

from lockgate.jobs.model import Job, ParkForReview
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import ReviewRejected, TaskOutputInvalid, TaskRunner
from lockgate.jobs.worker import Handler, principal_from_meta
from lockgate.review import ReviewItem, ReviewNotFound, ReviewService, build_item

__all__ = ["job_resumer", "review_id_for_job", "reviewed_handler"]


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


def reviewed_handler(inner: Handler, runner: TaskRunner, review: ReviewService) -> Handler:
    """``inner`` (the plain task handler) with the review policy of each job's task."""

    async def handle(job: Job) -> Any:
        policy = review.policy_for(job.task)
        if policy is None or "batch_id" in (job.meta or {}):
            return await inner(job)
        item_id = review_id_for_job(job.id)
        try:
            existing: ReviewItem | None = await review.repo.get(item_id)
        except ReviewNotFound:
            existing = None
        if existing is not None:
            if not existing.decided:
                raise ParkForReview(item_id)
            result, error = decided_result(existing)
            if error is not None:
                raise ReviewRejected(error)
            return result
        principal = principal_from_meta(job.meta)
        contract_failed = False
        try:
            out = await runner.run(job.task, job.input, principal=principal,
                                   request_id=f"{job.id}-a{job.attempts}")
        except TaskOutputInvalid as exc:
            if not policy.when.contract_failed:
                raise
            contract_failed = True
            output: Any = {"text": None, "contract_error": str(exc)}
            response: dict[str, Any] = {"output": output}
            confidence = None
            models: list[str] = []
        else:
            output = out.output
            response = out.as_json()
            confidence = out.confidence
            models = out.models
            if policy.confidence.source == "field" and confidence is None:
                raw = output.get(policy.confidence.field) if isinstance(output, dict) else None
                if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 <= raw <= 1:
                    confidence = float(raw)
        verdict = review.assess(job.task, policy, output=output, request=job.input,
                                confidence=confidence, contract_failed=contract_failed)
        if not verdict.review:
            if verdict.auto_approved:
                review.record_auto(build_item(
                    task=job.task, source="jobs", policy=policy, reasons=["auto-approved"],
                    principal=principal, request=None, output=None, confidence=confidence,
                    request_id=job.id, model=models[-1] if models else None, source_ref=job.id,
                ))
            return response
        spec = runner.spec(job.task)
        new = build_item(
            task=job.task, source="jobs", policy=policy, reasons=verdict.reasons,
            principal=principal, request=job.input, output=output, confidence=confidence,
            response=response, request_id=job.id, model=models[-1] if models else None,
            source_ref=job.id, contract=spec.output_schema,
        )
        new.id = item_id
        await review.submit(new)
        raise ParkForReview(item_id)

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
