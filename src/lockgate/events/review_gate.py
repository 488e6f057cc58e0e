"""Events meet the review queue: an event whose task has a review policy waits for a person.

:func:`reviewed_enricher` runs the task like :func:`~lockgate.events.consumer.task_enricher`;
when the task's policy (``review.policies.<task>``) sends the output to a person, it stores a
review item holding the event (``source = "events"``, ``source_ref = <event id>``, the id
derived from the task and event id, so a redelivered event finds its item instead of making
a second one) and raises :class:`~lockgate.jobs.model.ParkForReview`: the consumer marks the
event handled and acknowledges it (the review table now holds it durably).

:func:`event_resumer` is registered by ``lockgate consume``: after the decision the review
sweeper of a consumer process publishes the enriched event to the sink under its original
id (approved or edited output, with ``enrichment.review``), or dead-letters it with the
rejection reason. Delivery is at least once with a stable event id: a lease on the item
lets exactly one consumer publish it; one that dies after publishing and before recording
it lets the lease lapse and another publishes again (downstream deduplicates on the id).
"""

from __future__ import annotations

import hashlib
from typing import Any

from lockgate.events.consumer import Enricher
from lockgate.events.transports import EventTransport
from lockgate.jobs.model import ParkForReview
from lockgate.jobs.tasks import TaskOutputInvalid, TaskRunner
from lockgate.pipeline.call import Principal
from lockgate.review import ReviewItem, ReviewNotFound, ReviewService, build_item
from lockgate.review.model import new_review_id

__all__ = ["event_resumer", "review_id_for_event", "reviewed_enricher"]

EVENTS_PRINCIPAL = Principal(key_id="system:events", team_id=None, is_master=True)


def review_id_for_event(task: str, event_id: str) -> str:
    return "rev_" + hashlib.sha256(f"events:{task}:{event_id}".encode()).hexdigest()[:32]


def _event_id(event: Any, id_field: str) -> str | None:
    if isinstance(event, dict) and isinstance(event.get(id_field), str | int):
        return str(event[id_field])
    return None


def reviewed_enricher(
    runner: TaskRunner, task: str, review: ReviewService, *, id_field: str = "id",
) -> Enricher:
    runner.spec(task)  # unknown task: fail at start, not per event
    policy = review.policy_for(task)

    async def enrich(event: Any) -> dict[str, Any]:
        if policy is None:
            res = await runner.run(task, event)
            return {"task": task, "output": res.output, "confidence": res.confidence}
        event_id = _event_id(event, id_field)
        item_id = review_id_for_event(task, event_id) if event_id else new_review_id()
        if event_id is not None:
            try:
                await review.repo.get(item_id)
                raise ParkForReview(item_id)  # redelivered: published once decided
            except ReviewNotFound:
                pass
        contract_failed = False
        try:
            res = await runner.run(task, event)
            output: Any = res.output
            confidence = res.confidence
        except TaskOutputInvalid as exc:
            if not policy.when.contract_failed:
                raise
            contract_failed, output, confidence = True, {"contract_error": str(exc)}, None
        enrichment = {"task": task, "output": output, "confidence": confidence}
        verdict = review.assess(task, policy, output=output, request=event,
                                confidence=confidence, contract_failed=contract_failed)
        if not verdict.review:
            return enrichment
        new = build_item(
            task=task, source="events", policy=policy, reasons=verdict.reasons,
            principal=EVENTS_PRINCIPAL, request=event, output=output, confidence=confidence,
            response={"event": event, "enrichment": enrichment}, source_ref=event_id or item_id,
            contract=runner.spec(task).output_schema,
        )
        new.id = item_id
        await review.submit(new)
        raise ParkForReview(item_id)

    return enrich


def event_resumer(source: EventTransport, sink: EventTransport, id_field: str = "id") -> Any:
    """Publish (or dead-letter) a reviewed event after the decision."""

    async def resume(item: ReviewItem) -> None:
        held = item.response if isinstance(item.response, dict) else {}
        event = held.get("event")
        enrichment = dict(held.get("enrichment") or {"task": item.task})
        event_id = item.source_ref or item.id
        if item.state == "rejected":
            reason = (item.decision or {}).get("reason", "")
            await source.dead_letter({
                "id": event_id, "event": event, "attempts": 1,
                "error": f"rejected in review {item.id} by {item.decided_by}: {reason}",
            }, event_id=event_id)
            return
        enrichment["output"] = item.final_output()
        enrichment["review"] = {"id": item.id, "state": item.state,
                                "decided_by": item.decided_by, "decided_at": item.decided_at}
        base = event if isinstance(event, dict) else {"value": event}
        out = {**base, "enrichment": enrichment}
        out.setdefault(id_field, event_id)
        await sink.publish(out, event_id=event_id)

    return resume
