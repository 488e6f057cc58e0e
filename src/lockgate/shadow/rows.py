"""Row building: one sample plus its candidate's outcome -> one ``shadow_results`` row.

The row's keys are ``lockgate.store.records.SHADOW_FIELDS``; the AuditWriter
(``submit_shadow``) validates and writes it with its next batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from lockgate.shadow.compare import compare

__all__ = ["MAX_TEXT", "Outcome", "Sample", "result_row"]

MAX_TEXT: Final = 65_536
"""Characters of each answer kept in the row."""


@dataclass(frozen=True, slots=True)
class Sample:
    """What the primary call left for its shadow: identity, what was sent, what came back."""

    request_id: str
    model: str
    primary_deployment: str | None
    primary_text: str | None
    primary_latency_ms: float
    primary_cost: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The candidate call's result: its text or its error, latency, tokens and cost."""

    candidate: str
    """The candidate deployment id."""
    text: str | None
    error: str | None
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


def result_row(sample: Sample, outcome: Outcome, *, now: datetime | None = None
               ) -> dict[str, Any]:
    """The ``shadow_results`` row; matches are None when the candidate failed."""
    if outcome.error is None:
        text_match, json_match = compare(sample.primary_text, outcome.text)
    else:
        text_match, json_match = None, None
    return {
        "created_at": now or datetime.now(UTC),
        "request_id": sample.request_id,
        "model": sample.model,
        "primary_deployment": sample.primary_deployment,
        "candidate_deployment": outcome.candidate,
        "primary_text": _clip(sample.primary_text),
        "candidate_text": _clip(outcome.text),
        "primary_latency_ms": float(sample.primary_latency_ms),
        "candidate_latency_ms": float(outcome.latency_ms),
        "primary_cost": float(sample.primary_cost),
        "candidate_cost": float(outcome.cost),
        "candidate_prompt_tokens": outcome.prompt_tokens,
        "candidate_completion_tokens": outcome.completion_tokens,
        "candidate_error": outcome.error,
        "text_match": text_match,
        "json_match": json_match,
    }
