"""Agent runs and steps as data, their states, and the errors clients see.

A run's ``state``:

- ``running`` -- a process is stepping it;
- ``awaiting_approval`` -- a write (or ``ask_human``) waits for a review decision
  (``review_id``); the run is durable in the store and resumes once, in whichever process
  records the decision. A parent whose sub-run (``delegate``) waits the same way is
  parked with ``review_id = "child:<sub-run id>"`` and resumes once when the sub-run ends;
- ``succeeded`` (``output`` set), ``failed`` / ``stopped`` (``error`` set: a bound was hit,
  the agent was paused by its breaker, the model failed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from lockgate.errors import BadRequest, GatewayError, NotFound

__all__ = [
    "CHILD_PREFIX",
    "FINAL_STATES",
    "AgentConflict",
    "AgentForbidden",
    "AgentNotFound",
    "AgentPaused",
    "Run",
    "RunNotFound",
    "RunState",
    "Step",
    "new_run_id",
]

RunState = Literal["running", "awaiting_approval", "succeeded", "failed", "stopped"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
StepKind = Literal["model", "tool", "approval", "delegate", "error"]
StepStatus = Literal["ok", "error", "denied", "pending", "approved", "rejected", "skipped",
                     "unknown"]
CHILD_PREFIX = "child:"
"""``review_id`` of a run parked on a sub-run: ``child:<sub-run id>`` (the sub-run awaits a
person's decision; the parent resumes once when the sub-run ends)."""


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex


class AgentNotFound(NotFound):
    code = "agent_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class AgentConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "agent_conflict"


class AgentForbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "agent_not_allowed"


class AgentPaused(GatewayError):
    """The agent's error-rate breaker is open: no new runs until it closes."""

    status = 503
    type = "api_error"
    code = "agent_paused"


class BadAgentInput(BadRequest):
    code = "invalid_agent_input"


@dataclass(slots=True)
class Step:
    seq: int
    kind: str
    status: str
    name: str | None = None
    arguments: Any = None
    result: Any = None
    duration_ms: float = 0.0
    cost: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    def public(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "kind": self.kind, "name": self.name, "status": self.status,
            "arguments": self.arguments, "result": self.result,
            "duration_ms": round(self.duration_ms, 3), "cost": self.cost,
            "created_at": self.created_at, **({"detail": self.detail} if self.detail else {}),
        }


@dataclass(slots=True)
class Run:
    id: str
    agent: str
    state: str
    root_id: str
    depth: int = 0
    parent_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    key_id: str | None = None
    team_id: str | None = None
    principal: dict[str, Any] | None = None
    acting_for: dict[str, Any] | None = None
    request_id: str | None = None
    input: Any = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Tool calls of the last model turn not done yet (the first may await approval)."""
    review_id: str | None = None
    output: Any = None
    error: str | None = None
    steps: int = 0
    """Steps recorded so far (the next step's ``seq``)."""
    turns: int = 0
    """Model turns (the ``max_steps`` bound)."""
    cost: float = 0.0
    active_s: float = 0.0
    delegations: int = 0
    version: int = 1

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def public(self, steps: list[Step] | None = None,
               children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "object": "agent.run", "agent": self.agent, "status": self.state,
            "parent_id": self.parent_id, "root_id": self.root_id, "depth": self.depth,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "input": self.input, "output": self.output, "error": self.error,
            "review_id": self.review_id, "steps_count": self.steps,
            "cost": round(self.cost, 8), "active_seconds": round(self.active_s, 3),
            "delegations": self.delegations,
        }
        if steps is not None:
            doc["steps"] = [s.public() for s in steps]
        if children is not None:
            doc["children"] = children
        return doc
