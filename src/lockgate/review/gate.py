"""From a finished model call to a review decision: what a reviewer is shown.

:func:`output_of` reads the answer as the document predicates and contracts look at
(the JSON in the message content, or ``{"text": ...}``, or ``{"tool_calls": [...]}``).
:func:`measure_confidence` takes it from the policy's source. :func:`build_item` fills in
the reviewer's view: recommendation, alternatives (an ``alternatives`` list in the answer,
or the tallies of agreement samples), rationale (``rationale``/``reason``/``explanation``
in the answer), evidence (RAG ``citations``), impact (``impact_field``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from lockgate.guards.contracts import extract_json_text
from lockgate.pipeline import Principal
from lockgate.review.answer import with_output
from lockgate.review.confidence import _key, agreement, from_field, from_logprobs
from lockgate.review.model import NewReview
from lockgate.review.predicates import MISSING, lookup
from lockgate.settings.review import ReviewPolicy

__all__ = ["build_item", "measure_confidence", "message_of", "output_of", "with_output"]

Resample = Callable[[str | None], Awaitable[Any]]
"""Ask the same question again through the pipeline (pinned to a deployment id when given);
returns the answer's output document."""


def message_of(body: Any) -> dict[str, Any] | None:
    try:
        msg = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    return msg if isinstance(msg, dict) else None


def output_of(body: Any) -> Any:
    msg = message_of(body)
    if msg is None:
        return {"text": None}
    calls = msg.get("tool_calls")
    content = msg.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if isinstance(content, str) and content.strip():
        text = extract_json_text(content)
        if text[:1] in "{[":
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
        return {"text": content}
    if isinstance(calls, list) and calls:
        return {"tool_calls": calls}
    return {"text": content}


async def measure_confidence(
    policy: ReviewPolicy, body: Any, output: Any, resample: Resample | None,
) -> tuple[float | None, list[dict[str, Any]]]:
    """The call's confidence and, for ``agreement``, the tallies of the sampled answers."""
    src = policy.confidence
    if src.source == "logprobs":
        return from_logprobs(body), []
    if src.source == "field":
        return from_field(output, src.field), []
    if resample is None:
        return None, []
    answers = [output]
    pins: list[str | None] = list(src.deployments) or [None] * (src.samples - 1)
    for pin in pins:
        answers.append(await resample(pin))
    tally: Counter[bytes] = Counter(_key(a, src.compare_field) for a in answers)
    alts = [
        {"answer": orjson.loads(k), "votes": n, "score": round(n / len(answers), 3)}
        for k, n in tally.most_common(5)
    ]
    return agreement(answers, src.compare_field), alts


def _alternatives(output: Any) -> list[dict[str, Any]]:
    alts = output.get("alternatives") if isinstance(output, dict) else None
    if not isinstance(alts, list):
        return []
    return [a if isinstance(a, dict) else {"answer": a} for a in alts[:10]]


def _rationale(output: Any) -> str | None:
    if not isinstance(output, dict):
        return None
    for name in ("rationale", "reason", "explanation", "reasoning"):
        v = output.get(name)
        if isinstance(v, str) and v:
            return v[:4000]
    return None


def build_item(
    *, task: str, source: str, policy: ReviewPolicy, reasons: list[str], principal: Principal,
    request: Any, output: Any, confidence: float | None,
    alternatives: list[dict[str, Any]] | None = None, response: Any = None,
    request_id: str | None = None, model: str | None = None, deployment: str | None = None,
    source_ref: str | None = None, contract: dict[str, Any] | None = None,
) -> NewReview:
    impact: Any = None
    if policy.impact_field:
        found = lookup(output, tuple(policy.impact_field.split(".")))
        impact = None if found is MISSING else {"field": policy.impact_field, "value": found}
    evidence = response.get("citations") if isinstance(response, dict) else None
    item = NewReview(
        task=task, source=source, input=request, output=output, reasons=reasons,
        team=policy.reviewers[0] if policy.reviewers else None, source_ref=source_ref,
        request_id=request_id, key_id=principal.key_id, team_id=principal.team_id,
        model=model, deployment=deployment, confidence=confidence,
        alternatives=alternatives or _alternatives(output), rationale=_rationale(output),
        evidence=evidence if isinstance(evidence, list) else [], impact=impact,
        contract=contract, sla_s=policy.sla_s, escalate_to=policy.escalate_to,
        response=response, reviewers=list(policy.reviewers),
    )
    return item
