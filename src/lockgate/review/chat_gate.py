"""One chat call under a task's review policy: run it, measure, assess, build the item.

Shared by every place a chat call can be reviewed: ``/v1/chat/completions`` and
``/v1/messages`` (:mod:`lockgate.api.review_gate`, which then waits or answers 202) and the
rows of an OpenAI-style batch (:mod:`lockgate.jobs.openai_batch`, which parks the row).
What happens after (submit, wait, park) is the caller's; this module only decides.

Confidence ``logprobs`` asks the provider for ``logprobs``; ``agreement`` asks the same
question ``samples - 1`` more times through the pipeline, or once on each of
``confidence.deployments`` (pinned: no fallback), billed to the caller like any call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from lockgate.guards import ContractViolation
from lockgate.pipeline import Call, Principal, Result
from lockgate.pipeline.call import new_request_id
from lockgate.review.gate import build_item, measure_confidence, output_of
from lockgate.review.model import NewReview
from lockgate.review.service import Assessment, ReviewService
from lockgate.settings.review import ReviewPolicy

__all__ = ["ChatGate", "gate_chat", "task_of"]

Chat = Callable[[Call], Awaitable[Result]]


def task_of(call: Call) -> str | None:
    """The call's task: ``x-lockgate-task`` (``call.task``) or ``metadata.task``."""
    if call.task:
        return call.task
    meta = call.body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("task"), str):
        return str(meta["task"])
    return None


@dataclass(slots=True)
class ChatGate:
    """What the policy made of one chat call."""

    result: Result | None
    """The pipeline's answer (None when the contract failed and the policy reviews that)."""
    verdict: Assessment
    item: NewReview | None
    """The item to submit (``verdict.review``) or to record as auto-approved; None when the
    call was neither (``skipped``: nothing to record)."""


async def gate_chat(
    chat: Chat, review: ReviewService, call: Call, task: str, policy: ReviewPolicy, *,
    principal: Principal, source: str, source_ref: str | None = None,
    contract: dict[str, Any] | None = None,
) -> ChatGate:
    """Run ``call`` through ``chat`` (the pipeline) and apply ``policy`` to the answer.

    ``ContractViolation`` propagates unless the policy reviews failed contracts.
    """
    if policy.confidence.source == "logprobs" and "logprobs" not in call.body:
        call.body["logprobs"] = True
    request = call.body
    contract_failed = False
    result: Result | None = None
    try:
        result = await chat(call)
        output = output_of(result.body)
    except ContractViolation as exc:
        if not policy.when.contract_failed:
            raise
        contract_failed = True
        output = {"text": exc.answer, "contract_errors": list(exc.errors)}

    async def resample(pin: str | None) -> Any:
        again = replace(call, request_id=new_request_id(), started=time.perf_counter(),
                        started_at=time.time(), no_cache=True, deployment_pin=pin)
        return output_of((await chat(again)).body)

    confidence: float | None = None
    alternatives: list[dict[str, Any]] = []
    if result is not None:
        confidence, alternatives = await measure_confidence(policy, result.body, output,
                                                            resample)
    facts = result.facts if result is not None else None
    flags = tuple(
        name for name, on in (("pii", bool(facts and facts.pii_entities)),
                              ("injection", bool(facts and facts.injection))) if on
    )
    verdict = review.assess(task, policy, output=output, request=request,
                            confidence=confidence, contract_failed=contract_failed,
                            guard_flags=flags)
    if not verdict.review and not verdict.auto_approved:
        return ChatGate(result, verdict, None)
    item = build_item(
        task=task, source=source, policy=policy, reasons=verdict.reasons or ["auto-approved"],
        principal=principal, request=request, output=output, confidence=confidence,
        alternatives=alternatives, response=result.body if result else None,
        request_id=facts.request_id if facts else call.request_id,
        model=facts.model if facts else call.model,
        deployment=facts.deployment if facts else None, contract=contract,
        source_ref=source_ref,
    )
    return ChatGate(result, verdict, item)
