"""Console screens for agent runs: the list (filter by agent, status, team, time; paged) and a
run's detail (its steps, cost and steps against the agent's bounds, the run tree of a mesh
run), plus cancelling a run (administrators).

Everything goes through :class:`~lockgate.agents.AgentService`, as ``/v1/agents`` does:
:meth:`~AgentService.search` for the list (a team key sees its own and its team's runs),
:meth:`~AgentService.show` for a run (404 for a run the key may not read),
:meth:`~AgentService.cancel` for the admin action (CSRF-checked by :func:`screen`, written to
the audit chain as ``agent_run.cancel`` with ``"via": "console"``).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.agents import AgentService, RunNotFound
from lockgate.api.run_query import STATES, cursor_of, run_filter
from lockgate.console.render import page
from lockgate.console.session import ConsoleUser, runtime_of
from lockgate.console.web import form_text, query_text, redirect, screen
from lockgate.errors import BadRequest, GatewayError

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = 50
_RUN_ID = re.compile(r"^run_[0-9a-f]{1,64}$")


def _service(request: Request) -> AgentService:
    rt = runtime_of(request)
    if rt.agents is None:
        raise GatewayError("Agents are not running in this process.", status=503)
    return rt.agents



def _run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise RunNotFound(f"No agent run '{run_id[:100]}'.", param="run_id")
    return run_id


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                        default=str).decode()


def _preview(value: Any, n: int = 120) -> str:
    text = _pretty(value) if value is not None else ""
    return text if len(text) <= n else text[: n - 1] + "…"


@router.get("/agents")
@screen()
async def runs_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    svc = _service(request)
    await svc.refresh()
    which = run_filter(request)
    agent = query_text(request, "agent", 100)
    teams = await rt.admin.teams(user.principal) if user.is_admin else []
    team_id: str | None = None
    team_q = query_text(request, "team", 200)
    if user.is_admin and team_q:
        match = next((t for t in teams if team_q in (t.id, t.name)), None)
        if match is None:
            raise BadRequest("Unknown team.", param="team")
        team_id = match.id
    found = await svc.search(user.principal, agent=agent, state=which.state, team_id=team_id,
                             since=which.since, until=which.until, before=which.before,
                             roots_only=which.roots_only, limit=PAGE + 1)
    more = len(found) > PAGE
    runs = found[:PAGE]
    nxt = cursor_of(runs[-1]) if more and runs else None
    names = {t.id: t.name for t in teams}
    if not user.is_admin and user.record.team_id:
        names[user.record.team_id] = user.record.team_name or user.record.team_id
    query = {k: v for k, v in request.query_params.items() if k != "before"}
    agents = svc.names() if user.is_admin else svc.visible(user.principal)
    rows = [{**r.public(), "team": names.get(r.team_id or "", r.team_id or ""),
             "preview": _preview(r.error if r.error else r.output)} for r in runs]
    return page(request, "agents.html", user=user, title="Agent runs", runs=rows,
                query=query, next_before=nxt, teams=teams, agents=agents, states=STATES)


@router.get("/agents/runs/{run_id}")
@screen()
async def run_detail(request: Request, user: ConsoleUser, run_id: str) -> Response:
    svc = _service(request)
    await svc.refresh()
    doc = await svc.show(_run_id(run_id), user.principal)
    tree = doc
    if doc["root_id"] != doc["id"]:
        try:
            tree = await svc.show(doc["root_id"], user.principal)
        except RunNotFound:
            tree = doc
    bounds = svc.bounds(doc["agent"])
    turns = sum(1 for s in doc["steps"] if s["kind"] == "model")
    tokens = sum(int((s.get("detail") or {}).get("usage", {}).get("prompt_tokens") or 0)
                 + int((s.get("detail") or {}).get("usage", {}).get("completion_tokens") or 0)
                 for s in doc["steps"] if s["kind"] == "model")
    return page(request, "agent_run.html", user=user, title=f"Agent run {doc['id']}",
                run=doc, tree=tree, bounds=bounds, turns=turns, tokens=tokens,
                pretty=_pretty, final=doc["status"] in ("succeeded", "failed", "stopped"))


@router.post("/agents/runs/{run_id}/cancel")
@screen(admin=True)
async def cancel_run(request: Request, user: ConsoleUser, run_id: str) -> Response:
    rt = runtime_of(request)
    svc = _service(request)
    reason = form_text(request.state.form, "reason", max_len=500)
    rid = _run_id(run_id)
    stopped = await svc.cancel(rid, user.principal, reason)
    await rt.admin.audit(user.principal, "agent_run.cancel", target=rid,
                         changes={"stopped": stopped, "reason": reason}, via="console")
    return redirect(f"/console/agents/runs/{rid}")
