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
streamed out first. Confidence ``logprobs`` asks the provider for ``logprobs``;
``agreement`` asks the same question ``samples - 1`` more times through the pipeline, or
once on each of ``confidence.deployments`` (pinned: no fallback), billed to the caller
like any call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from starlette.responses import Response

from lockgate.api.request_io import error_response, json_response
from lockgate.errors import BadRequest, Forbidden
from lockgate.guards import ContractViolation
from lockgate.pipeline import Call, Result
from lockgate.pipeline.call import new_request_id
from lockgate.pipeline.contract_repair import contract_for
from lockgate.review import ReviewItem, build_item, measure_confidence, output_of
from lockgate.runtime import Runtime
from lockgate.settings.review import ReviewPolicy

__all__ = ["REVIEW_HEADER", "Reviewed", "review_call", "review_policy_of", "reviewed_chat"]

REVIEW_HEADER = "x-lockgate-review"


def task_of(call: Call) -> str | None:
    if call.task:
        return call.task
    meta = call.body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("task"), str):
        return str(meta["task"])
    return None


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
    if policy.confidence.source == "logprobs" and "logprobs" not in call.body:
        call.body["logprobs"] = True
    request = call.body
    contract_failed = False
    result: Result | None = None
    try:
        result = await rt.pipeline.chat(call)
        output = output_of(result.body)
    except ContractViolation as exc:
        if not policy.when.contract_failed:
            raise
        contract_failed = True
        output = {"text": exc.answer, "contract_errors": list(exc.errors)}
    principal = await rt.pipeline.authenticate(call.api_key)

    async def resample(pin: str | None) -> Any:
        again = replace(call, request_id=new_request_id(), started=time.perf_counter(),
                        started_at=time.time(), no_cache=True, deployment_pin=pin)
        return output_of((await rt.pipeline.chat(again)).body)

    body = result.body if result is not None else None
    confidence: float | None = None
    alternatives: list[dict[str, Any]] = []
    if result is not None:
        confidence, alternatives = await measure_confidence(policy, body, output, resample)
    facts = result.facts if result is not None else None
    flags = tuple(
        name for name, on in (("pii", bool(facts and facts.pii_entities)),
                              ("injection", bool(facts and facts.injection))) if on
    )
    verdict = review.assess(task, policy, output=output, request=request,
                            confidence=confidence, contract_failed=contract_failed,
                            guard_flags=flags)
    headers = headers_of(facts) if facts is not None else {"x-request-id": call.request_id}
    if not verdict.review and not verdict.auto_approved:  # nothing to record
        assert result is not None
        headers[REVIEW_HEADER] = "skipped"
        return Reviewed("skipped", headers, result.body, result.raw)
    guards = rt.pipeline.controls.guards
    contract = contract_for(request, guards.contracts if guards else None)
    schema = dict(contract.schema) if contract is not None else None
    new = build_item(
        task=task, source="http", policy=policy, reasons=verdict.reasons or ["auto-approved"],
        principal=principal, request=request, output=output, confidence=confidence,
        alternatives=alternatives, response=result.body if result else None,
        request_id=facts.request_id if facts else call.request_id,
        model=facts.model if facts else call.model,
        deployment=facts.deployment if facts else None, contract=schema,
    )
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
