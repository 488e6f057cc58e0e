"""Agent writes meet the review queue: a write call becomes a review item; the run resumes once.

:meth:`Approvals.submit` stores the item (``source = "agent"``, ``source_ref = <run id>``,
task ``agent:<name>``): the tool and its arguments as the recommendation (a reviewer may
*edit* them: the edit must satisfy the tool's argument schema), the agent's rationale
and impact estimate, the agent's reviewer teams and SLA. ``ask_human`` items use task
``agent:<name>:ask`` and the reviewer's edit (or reason) is the answer.

:meth:`Approvals.resume` is the review service's resumer for ``source = "agent"``. It
moves the run from ``awaiting_approval`` to ``running`` with a compare-and-set on the
run row (so a decision seen by two processes, or by the sweeper after a crash, resumes
the run once), writes the decision onto the waiting tool call, and hands the run to
``continue_run`` (the service steps it on in the background). The review id is derived
from the run id and step number, so a retried submit finds its item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from lockgate.agents.model import Run
from lockgate.agents.store import RunStore
from lockgate.agents.tools import Tool
from lockgate.review import NewReview, ReviewItem, ReviewNotFound, ReviewService
from lockgate.settings.agents import AgentSpec

__all__ = ["Approvals"]


class Approvals:
    def __init__(self, review: ReviewService, store: RunStore,
                 continue_run: Callable[[Run], Awaitable[None]]) -> None:
        self.review = review
        self.store = store
        self.continue_run = continue_run

    @staticmethod
    def review_id(run_id: str, seq: int) -> str:
        return "rev_" + hashlib.sha256(f"agent:{run_id}:{seq}".encode()).hexdigest()[:32]

    async def submit(self, review_id: str, run: Run, agent: str, spec: AgentSpec, tool: Tool,
                     args: dict[str, Any], *, rationale: str | None, impact: Any) -> None:
        try:
            await self.review.repo.get(review_id)
            return  # submitted already (a retry)
        except ReviewNotFound:
            pass
        p = run.principal or {}
        ask = tool.pauses
        new = NewReview(
            task=f"agent:{agent}:ask" if ask else f"agent:{agent}",
            source="agent",
            input={"agent": agent, "run_id": run.id, "tool": tool.name, "arguments": args,
                   "class": tool.klass},
            output=None if ask else args,
            reasons=[f"agent {agent} asks a person: {args.get('question', '')}"[:500]] if ask
            else [f"write tool {tool.name} in approve_writes mode"],
            team=spec.reviewers[0] if spec.reviewers else None,
            reviewers=list(spec.reviewers),
            source_ref=run.id,
            request_id=run.request_id,
            key_id=p.get("key_id"),
            team_id=p.get("team_id"),
            model=spec.model,
            rationale=rationale,
            impact=impact,
            contract=None if ask else tool.parameters,
            sla_s=spec.review_sla_s,
        )
        new.id = review_id
        await self.review.submit(new)

    async def resume(self, item: ReviewItem) -> None:
        run_id = item.source_ref
        if not run_id:
            return
        run = await self.store.take_paused(run_id, item.id)
        if run is None:
            return  # resumed already (by another process or an earlier attempt), or ended
        decision: dict[str, Any] = {"state": item.state, "review_id": item.id,
                                    "decided_by": item.decided_by}
        d = item.decision or {}
        if item.state == "rejected":
            decision["reason"] = d.get("reason")
        elif item.state == "edited":
            decision["output"] = d.get("output")
        if item.task.endswith(":ask"):
            decision["answer"] = d.get("output") if item.state == "edited" else (
                d.get("reason") or "approved (no answer given)")
        if run.pending:
            run.pending[0] = {**run.pending[0], "decision": decision}
        run.review_id = None
        await self.store.save(run)  # the decision is durable before the call runs
        await self.continue_run(run)
