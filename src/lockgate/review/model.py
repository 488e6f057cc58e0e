"""Review items, their states and the errors the review service raises."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.review.answer import with_output

__all__ = [
    "ACTIONS",
    "Action",
    "NewReview",
    "ReviewConflict",
    "ReviewInvalid",
    "ReviewItem",
    "ReviewNotFound",
    "ReviewState",
    "new_review_id",
]

ReviewState = Literal["pending", "approved", "edited", "rejected", "auto_approved"]
"""``pending`` until decided (escalation keeps it pending, for another team);
``auto_approved`` records a call the policy let through on its own."""
Action = Literal["approve", "edit", "reject", "escalate"]
ACTIONS: tuple[str, ...] = ("approve", "edit", "reject", "escalate")
DECIDED: frozenset[str] = frozenset({"approved", "edited", "rejected"})


def new_review_id() -> str:
    return "rev_" + uuid.uuid4().hex


class ReviewNotFound(NotFound):
    code = "review_not_found"


class ReviewConflict(GatewayError):
    """The item is decided already, or claimed by someone else."""

    status = 409
    type = "invalid_request_error"
    code = "review_conflict"


class ReviewInvalid(BadRequest):
    code = "invalid_review_decision"


class ContractBroken(GatewayError):
    """An edited output breaks the task's contract: 422 with the schema error."""

    status = 422
    type = "invalid_request_error"
    code = "review_output_invalid"


@dataclass(slots=True)
class NewReview:
    """What a gate submits: the call, the model's recommendation and why it is here."""

    task: str
    source: str
    """``http``, ``jobs``, ``events``, ``batch`` or ``agent``."""
    input: Any
    output: Any
    reasons: list[str]
    team: str | None = None
    """Reviewer team (the policy's first reviewer team; None: admins only)."""
    source_ref: str | None = None
    """The job id (or other durable handle) that resumes after the decision."""
    request_id: str | None = None
    key_id: str | None = None
    team_id: str | None = None
    model: str | None = None
    deployment: str | None = None
    confidence: float | None = None
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    rationale: str | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    impact: Any = None
    contract: dict[str, Any] | None = None
    """The JSON Schema an edited output must satisfy (None: any JSON)."""
    response: Any = None
    """The full answer (e.g. the chat completion) returned once the item is approved."""
    reviewers: list[str] = field(default_factory=list)
    """Every team that may decide (``team`` owns the queue; the others may act by id)."""
    sla_s: float = 3600.0
    escalate_to: str | None = None
    state: ReviewState = "pending"
    id: str = field(default_factory=new_review_id)


@dataclass(slots=True)
class ReviewItem:
    id: str
    task: str
    source: str
    state: ReviewState
    created_at: float
    updated_at: float
    input: Any
    output: Any
    reasons: list[str]
    team: str | None
    source_ref: str | None
    request_id: str | None
    key_id: str | None
    team_id: str | None
    model: str | None
    deployment: str | None
    confidence: float | None
    alternatives: list[dict[str, Any]]
    rationale: str | None
    evidence: list[dict[str, Any]]
    impact: Any
    contract: dict[str, Any] | None
    response: Any
    reviewers: list[str]
    sla_due_at: float
    sla_breached: bool
    escalate_to: str | None
    escalations: int
    claimed_by: str | None
    claim_until: float | None
    decision: dict[str, Any] | None
    decided_by: str | None
    decided_at: float | None
    resumed_at: float | None
    version: int

    @property
    def decided(self) -> bool:
        return self.state in DECIDED

    def final_output(self) -> Any:
        """The output the business action uses: the edit, or the recommendation."""
        if self.state == "edited" and self.decision is not None:
            return self.decision.get("output")
        return self.output

    def public(self, now: float) -> dict[str, Any]:
        """The JSON an API client or reviewer sees."""
        live = self.state == "pending" and (self.claim_until or 0) > now
        claimed = self.claimed_by if live else None
        return {
            "id": self.id,
            "object": "review",
            "task": self.task,
            "source": self.source,
            "source_ref": self.source_ref,
            "state": self.state,
            "status": "pending" if self.state == "pending" else "decided",
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
            "request_id": self.request_id,
            "model": self.model,
            "deployment": self.deployment,
            "team": self.team,
            "input": self.input,
            "recommendation": self.output,
            "confidence": self.confidence,
            "alternatives": self.alternatives,
            "rationale": self.rationale,
            "evidence": self.evidence,
            "impact": self.impact,
            "policy": {"reasons": self.reasons, "escalate_to": self.escalate_to},
            "sla": {
                "due_at": int(self.sla_due_at),
                "seconds_left": round(self.sla_due_at - now, 1),
                "breached": self.sla_breached,
            },
            "escalations": self.escalations,
            "claimed_by": claimed,
            "claim_expires_at": int(self.claim_until) if claimed and self.claim_until else None,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "decided_at": int(self.decided_at) if self.decided_at else None,
            "output": self.final_output() if self.decided else None,
        }

    def public_with_answer(self, now: float) -> dict[str, Any]:
        """:meth:`public` plus ``completion``: the answer to use, once approved or edited."""
        out = self.public(now)
        out["completion"] = None
        if self.state in ("approved", "edited") and isinstance(self.response, dict):
            out["completion"] = (
                with_output(self.response, self.final_output())
                if self.state == "edited" else self.response
            )
        return out
