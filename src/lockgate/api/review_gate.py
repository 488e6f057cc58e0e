"""A chat call whose task has a review policy: answer, wait for a person, or 202.

Used by ``/v1/chat/completions`` when ``review.policies`` names the call's task
(``x-lockgate-task`` or ``metadata.task``). The pipeline answers as usual; the policy
decides whether a person must look. Then:

- no review needed: the answer, with ``x-lockgate-review: auto_approved`` when a confidence
  threshold was checked (and an ``auto_approved`` row recorded in the background) or
  ``x-lockgate-review: skipped``;
- ``mode: sync_wait``: wait up to ``wait_s`` for a decision: approved -> the answer,
  edited -> the answer with the corrected output as its content, rejected -> 403
  ``review_rejected`` with the reason; still pending -> 202 with the review item and
  ``Location: /v1/reviews/<id>`` (poll it: ``completion`` appears once approved);
- ``mode: async``: 202 at once.

Streams are refused for such tasks (400): an answer a person may still reject cannot be
streamed out first. Running the call and applying the policy is
:func:`lockgate.review.chat_gate.gate_chat` (shared with batch rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from lockgate.api.request_io import error_response, json_response
from lockgate.errors import BadRequest, Forbidden
from lockgate.pipeline import Call
from lockgate.pipeline.contract_repair import contract_for
from lockgate.review import ReviewItem
from lockgate.review.chat_gate import gate_chat, task_of
from lockgate.runtime import Runtime
from lockgate.settings.review import ReviewPolicy

__all__ = ["REVIEW_HEADER", "Reviewed", "review_call", "review_policy_of", "reviewed_chat"]

REVIEW_HEADER = "x-lockgate-review"


def review_policy_of(rt: Runtime, call: Call) -> tuple[str, ReviewPolicy] | None:
    review = rt.review
    if review is None or not review.settings.policies:
        return None
    task = task_of(call)
    policy = review.policy_for(task)
    return (task, policy) if task is not None and policy is not None else None


@dataclass(slots=True)
class Reviewed:
    """What the review step decided for one call; each API renders it in its own shape."""

    state: str
    """``auto_approved``, ``skipped``, ``approved``, ``edited``, ``rejected`` or ``pending``."""
    headers: dict[str, str]
    completion: dict[str, Any] | None = None
    """The (OpenAI-shaped) answer to return, unless rejected or pending."""
    raw: bytes | None = None
    """The upstream's own bytes when the answer is returned unchanged."""
    item: ReviewItem | None = None

    def rejection(self) -> Forbidden:
        reason = ((self.item.decision if self.item else None) or {}).get("reason", "")
        return Forbidden(f"A reviewer rejected this answer: {reason}", code="review_rejected")


async def reviewed_chat(
    rt: Runtime, call: Call, task: str, policy: ReviewPolicy, headers_of: Any,
) -> Response:
    """``/v1/chat/completions`` of a reviewed task, rendered in OpenAI's shape."""
    out = await review_call(rt, call, task, policy, headers_of)
    if out.state == "rejected":
        return error_response(out.rejection(), out.headers)
    if out.state == "pending":
        assert out.item is not None
        return json_response(out.item.public(time.time()), status=202, headers=out.headers)
    return json_response(out.raw or out.completion, headers=out.headers)


async def review_call(
    rt: Runtime, call: Call, task: str, policy: ReviewPolicy, headers_of: Any,
) -> Reviewed:
    """Run the call, apply the task's policy, submit and wait as the policy says."""
    review = rt.review
    assert review is not None
    if call.body.get("stream") is True:
        raise BadRequest(
            f"Task '{task}' is reviewed by a person before its answer counts; "
            "ask without 'stream'.", param="stream", code="review_requires_non_stream",
        )
    principal = await rt.pipeline.authenticate(call.api_key)
    guards = rt.pipeline.controls.guards
    contract = contract_for(call.body, guards.contracts if guards else None)
    gate = await gate_chat(
        rt.pipeline.chat, review, call, task, policy, principal=principal, source="http",
        contract=dict(contract.schema) if contract is not None else None,
    )
    result, verdict, new = gate.result, gate.verdict, gate.item
    facts = result.facts if result is not None else None
    headers = headers_of(facts) if facts is not None else {"x-request-id": call.request_id}
    if new is None:  # nothing to record
        assert result is not None
        headers[REVIEW_HEADER] = "skipped"
        return Reviewed("skipped", headers, result.body, result.raw)
    if not verdict.review:  # auto-approved: on record, off the hot path
        assert result is not None
        review.record_auto(new)
        headers[REVIEW_HEADER] = "auto_approved"
        return Reviewed("auto_approved", headers, result.body, result.raw)
    item = await review.submit(new)
    if policy.mode == "sync_wait" and policy.wait_s > 0:
        item = await review.wait(item.id, policy.wait_s)
    headers["x-lockgate-review-id"] = item.id
    if item.state in ("approved", "edited", "rejected"):
        headers[REVIEW_HEADER] = item.state
        completion = item.public_with_answer(time.time())["completion"]
        return Reviewed(item.state, headers, completion, None, item)
    headers[REVIEW_HEADER] = "pending"
    headers["location"] = f"/v1/reviews/{item.id}"
    return Reviewed("pending", headers, None, None, item)
