"""Permissioned agents: tools with grants, approvals through review, bounds, the mesh.

See docs/agents.md. Public surface: :class:`AgentService` (built by the Runtime with
:func:`build_agent_service`), :class:`AgentDeployment` (``model: agent/<name>``), the run
types and errors, and :class:`Tool` for embedding applications that add their own tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lockgate.agents.deployment import AgentDeployment, grantable_agent_model
from lockgate.agents.model import (
    AgentForbidden,
    AgentNotFound,
    AgentPaused,
    BadAgentInput,
    Run,
    RunNotFound,
    Step,
)
from lockgate.agents.service import AGENT_PREFIX, AgentService, messages_of
from lockgate.agents.tools import Tool, ToolContext, ToolFailed, ToolRefused
from lockgate.pipeline import Pipeline
from lockgate.settings import Config
from lockgate.state import StateBackend
from lockgate.store import Store

if TYPE_CHECKING:
    from lockgate.alerts import AlertCenter
    from lockgate.jobs.submission import JobService
    from lockgate.rag import RagService
    from lockgate.review import ReviewService

__all__ = [
    "AGENT_PREFIX",
    "AgentDeployment",
    "AgentForbidden",
    "AgentNotFound",
    "AgentPaused",
    "AgentService",
    "BadAgentInput",
    "Run",
    "RunNotFound",
    "Step",
    "Tool",
    "ToolContext",
    "ToolFailed",
    "ToolRefused",
    "build_agent_service",
    "grantable_agent_model",
    "messages_of",
]


def build_agent_service(
    config: Config, pipeline: Pipeline, store: Store, *, review: ReviewService | None,
    alerts: AlertCenter | None, rag: RagService | None,
    jobs: Callable[[], JobService | None] | None = None,
    state: StateBackend | None = None,
) -> AgentService:
    """The process's agent service from ``agents:`` (model turns through ``pipeline``)."""

    async def alert(kind: str, subject: str, message: str, details: dict[str, Any]) -> None:
        if alerts is not None:
            await alerts.raise_once(kind, subject, message, details)

    pricing = {m.deployment_id: m.pricing for m in config.models}
    return AgentService(config.agents, chat=pipeline.chat, store=store, pricing=pricing,
                        review=review, alert=alert, rag=rag, jobs=jobs,
                        job_tasks=sorted(t.name for t in config.jobs.tasks),
                        models=set(config.model_names()), state=state)
