"""Agent runs as process events (the ``agents`` source): one case per run tree.

Read from the agents' own records (``agent_runs``, ``agent_steps``); nothing new is written.

* **case** = the root run id: a run and every sub-run of its mesh (delegations) are one case;
* **activity** = ``<agent>: <step>``, the agent that took the step, then:

  ============  ================================================================
  step kind     activity
  ============  ================================================================
  model         ``model turn``
  tool          the tool's name (``read_pump``); ``delegate <agent>`` for the mesh;
                `` failed`` / `` denied`` / `` rejected`` appended when not ok
  approval      ``approval <tool>`` (a write waits for a person here)
  error         ``run stopped`` / ``run failed`` (a bound was hit, the model failed)
  ============  ================================================================

* **timestamp** = the step's stored time (when it was recorded: a model turn or tool call
  when it finished); **start** = that time minus the step's ``duration_ms`` for model turns
  and tool calls, so waiting and processing times are mined too;
* **resource** = the tool for tool calls (the delegated agent for ``delegate``), else the
  agent.

The window (``since``/``until``) selects run trees by their root run's creation time, so a
case is never cut in half by the window.
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.mining.log import Event
from lockgate.store.tables import agent_runs, agent_steps

__all__ = ["AgentStepSource", "agent_activity"]

_STATUS_SUFFIX = {"ok": "", "error": " failed", "denied": " denied", "rejected": " rejected",
                  "skipped": " skipped"}


def _delegate_target(arguments: str | None) -> str | None:
    if not arguments:
        return None
    try:
        doc = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    target = doc.get("agent") if isinstance(doc, dict) else None
    return target if isinstance(target, str) and target else None


def agent_activity(agent: str, kind: str, name: str | None, status: str, run_state: str,
                   arguments: str | None) -> tuple[str, str]:
    """(activity, resource) of one stored step."""
    if kind == "model":
        return f"{agent}: model turn", agent
    if kind == "approval":
        return f"{agent}: approval {name or '?'}", agent
    if kind == "error":
        state = run_state if run_state in ("stopped", "failed") else "stopped"
        return f"{agent}: run {state}", agent
    suffix = _STATUS_SUFFIX.get(status, f" {status}")
    if name == "delegate":
        target = _delegate_target(arguments)
        act = f"{agent}: delegate {target}" if target else f"{agent}: delegate"
        return act + suffix, target or agent
    tool = name or "?"
    return f"{agent}: {tool}{suffix}", tool


class AgentStepSource:
    name = "agents"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def events(self, since: float | None, until: float | None) -> list[Event]:
        s, r = agent_steps, agent_runs
        root = agent_runs.alias("root")
        q = (sa.select(r.c.root_id, r.c.agent, r.c.state, s.c.created_at, s.c.kind, s.c.name,
                       s.c.status, s.c.duration_ms, s.c.arguments)
             .select_from(s.join(r, s.c.run_id == r.c.id))
             .order_by(s.c.created_at, s.c.run_id, s.c.seq))
        if since is not None or until is not None:
            q = q.join(root, root.c.id == r.c.root_id)
            if since is not None:
                q = q.where(root.c.created_at >= since)
            if until is not None:
                q = q.where(root.c.created_at < until)
        out: list[Event] = []
        async with self.engine.connect() as conn:
            for row in await conn.execute(q):
                act, resource = agent_activity(row.agent, row.kind, row.name, row.status,
                                               row.state, row.arguments
                                               if row.name == "delegate" else None)
                ts = float(row.created_at)
                start = None
                if row.kind in ("model", "tool") and row.duration_ms:
                    start = ts - float(row.duration_ms) / 1000.0
                out.append(Event(row.root_id, act, ts, resource, start))
        return out
