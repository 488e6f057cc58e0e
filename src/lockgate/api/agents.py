"""``/v1/agents``: agents over HTTP for long runs (202 + poll).

- ``GET  /v1/agents`` -- the agents this key may use (name, model, mode, tool patterns)
- ``POST /v1/agents/{name}/runs`` ``{"input": "text" | [messages], "wait": false}`` -- 202
  with the run (``status: running``) and ``Location``; the run goes on in the background.
  With ``"wait": true`` it runs in the request and answers 200 with the finished (or
  paused) run.
- ``GET  /v1/agents/{name}/runs?limit=&status=&since=&until=&level=&before=`` -- this
  key's (its team's; an admin: all) runs, newest first, filtered like the console's list
  (:mod:`lockgate.api.run_query`); ``has_more`` and ``next_before`` page on
- ``GET  /v1/agents/{name}/runs/{run_id}`` -- the run with its steps (model turns, tool
  calls with arguments, result, duration, status; approvals) and its sub-runs (the tree)
- ``POST /v1/agents/{name}/runs/{run_id}/cancel`` ``{"reason": "..."}`` (optional body;
  master key only, 403 otherwise) -- stops the run and its sub-runs; 409 when it has ended
  already; audited as ``agent_run.cancel`` with ``"via": "api"``

Admin (master key; every change audited, seen by every gateway within 2 s):

- ``GET/PUT/DELETE /admin/agents[/{name}]`` -- agents defined over the API
- ``GET /admin/agents/tools``, ``PUT|DELETE /admin/agents/tools/{kind}/{name}`` -- tool
  sources (``kind``: openapi, rag, sql, mcp; the body is the source's spec as in
  lockgate.yaml); a source of lockgate.yaml cannot be changed here (409)
- ``GET /admin/agents/grants``, ``PUT|DELETE /admin/agents/grants/{part}/{subject}`` --
  grants (``part``: teams, keys, end_users; body ``{"tools": [patterns]}``)

The end user a run acts for is the signed ``x-lockgate-end-user`` header (as for RAG).
Errors in OpenAI's shape: unknown agent or run 404, a key that may not use the agent 403,
bad input 400, an agent paused by its breaker 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from lockgate.agents import AgentNotFound, AgentService, RunNotFound
from lockgate.api.admin import _parse, admin_principal, store_error
from lockgate.api.rag_identity import end_user_of
from lockgate.api.request_io import (
    api_key_of,
    error_response,
    int_param,
    json_response,
    read_json,
    request_id_of,
)
from lockgate.api.run_query import cursor_of, run_filter
from lockgate.errors import GatewayError
from lockgate.pipeline import Principal
from lockgate.pipeline.call import new_request_id
from lockgate.runtime import Runtime
from lockgate.store.errors import StoreError

__all__ = ["admin_router", "router"]

router = APIRouter(prefix="/v1/agents")
admin_router = APIRouter(prefix="/admin/agents")
_BODY_LIMIT = 1024 * 1024


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[dict[str, Any]]
    wait: bool = False


async def _who(request: Request) -> tuple[Runtime, AgentService, Principal]:
    rt: Runtime = request.app.state.runtime
    principal = await rt.pipeline.authenticate(api_key_of(request))
    assert rt.agents is not None
    return rt, rt.agents, principal


async def _name(svc: AgentService, name: str) -> str:
    await svc.refresh()
    if len(name) > 100 or name not in svc.specs():
        raise AgentNotFound(f"No agent '{name[:100]}'.", param="agent")
    return name


def _run_id(run_id: str) -> str:
    if len(run_id) > 100 or not run_id.isascii():
        raise RunNotFound(f"No agent run '{run_id[:100]}'.", param="run_id")
    return run_id


async def _guarded(coro: Any) -> Response:
    try:
        return await coro  # type: ignore[no-any-return]
    except StoreError as exc:
        return error_response(store_error(exc))
    except GatewayError as exc:
        return error_response(exc)


@router.get("")
async def list_agents(request: Request) -> Response:
    async def run() -> Response:
        _, svc, principal = await _who(request)
        await svc.refresh()
        data = []
        for name in svc.visible(principal):
            spec = svc.spec(name)
            data.append({"id": name, "object": "agent", "model": spec.model, "mode": spec.mode,
                         "tools": spec.tools, "description": spec.description,
                         "delegates": spec.delegates})
        return json_response({"object": "list", "data": data})

    return await _guarded(run())


@router.post("/{name}/runs")
async def start_run(name: str, request: Request) -> Response:
    async def run() -> Response:
        rt, svc, principal = await _who(request)
        agent = await _name(svc, name)
        body: RunIn = _parse(RunIn, await read_json(request, _BODY_LIMIT))
        started = await svc.start(agent, body.input, principal,
                                  end_user=end_user_of(request, rt.config.rag),
                                  request_id=request_id_of(request) or new_request_id(),
                                  check_models=True)
        if body.wait:
            done = await svc.advance(started)
            return json_response(await svc.show(done.id, principal))
        svc.launch(started)
        return json_response(started.public(), status=202, headers={
            "location": f"/v1/agents/{agent}/runs/{started.id}"})

    return await _guarded(run())


@router.get("/{name}/runs")
async def list_runs(name: str, request: Request) -> Response:
    async def run() -> Response:
        _, svc, principal = await _who(request)
        agent = await _name(svc, name)
        limit = int_param(request, "limit", 50, 1, 500)
        which = run_filter(request)
        found = await svc.search(principal, agent=agent, state=which.state, since=which.since,
                                 until=which.until, before=which.before,
                                 roots_only=which.roots_only, limit=limit + 1)
        runs = found[:limit]
        more = len(found) > limit
        return json_response({"object": "list", "data": [r.public() for r in runs],
                              "has_more": more,
                              "next_before": cursor_of(runs[-1]) if more and runs else None})

    return await _guarded(run())


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


@router.post("/{name}/runs/{run_id}/cancel")
async def cancel_run(name: str, run_id: str, request: Request) -> Response:
    async def run() -> Response:
        rt, svc, principal = await _who(request)
        agent = await _name(svc, name)
        sent = request.headers.get("content-length") not in (None, "0") or (
            "transfer-encoding" in request.headers)
        body = _parse(CancelIn, await read_json(request, _BODY_LIMIT)) if sent else CancelIn()
        rid = _run_id(run_id)
        await svc.show(rid, principal, agent)  # 404 for a run of another agent
        stopped = await svc.cancel(rid, principal, body.reason)
        await rt.admin.audit(principal, "agent_run.cancel", target=rid,
                             changes={"stopped": stopped, "reason": body.reason}, via="api")
        return json_response({**(await svc.show(rid, principal, agent)), "stopped": stopped})

    return await _guarded(run())


@router.get("/{name}/runs/{run_id}")
async def get_run(name: str, run_id: str, request: Request) -> Response:
    async def run() -> Response:
        _, svc, principal = await _who(request)
        agent = await _name(svc, name)
        return json_response(await svc.show(_run_id(run_id), principal, agent))

    return await _guarded(run())


# ---------------------------------------------------------------- admin: definitions


def _definition(name: str, svc: AgentService) -> dict[str, Any]:
    spec = svc.spec(name)
    return {"id": name, "object": "agent.definition",
            "source": "config" if name in svc.settings.agents else "api",
            **spec.model_dump(mode="json")}


@admin_router.get("")
async def admin_list_agents(request: Request) -> Response:
    async def run() -> Response:
        rt, _ = await admin_principal(request)
        assert rt.agents is not None
        await rt.agents.refresh(force=True)
        return json_response({"object": "list", "data": [
            _definition(n, rt.agents) for n in rt.agents.names()]})

    return await _guarded(run())


@admin_router.put("/{name}")
async def admin_define_agent(name: str, request: Request) -> Response:
    async def run() -> Response:
        rt, principal = await admin_principal(request)
        assert rt.agents is not None
        raw = await read_json(request, _BODY_LIMIT)
        await rt.agents.define(name[:200], raw, principal.key_name or principal.key_id)
        return json_response(_definition(name, rt.agents))

    return await _guarded(run())


@admin_router.delete("/{name}")
async def admin_delete_agent(name: str, request: Request) -> Response:
    async def run() -> Response:
        rt, principal = await admin_principal(request)
        assert rt.agents is not None
        await rt.agents.undefine(name[:200], principal.key_name or principal.key_id)
        return json_response({"id": name, "object": "agent.definition", "deleted": True})

    return await _guarded(run())


# ---------------------------------------------------------------- admin: tool sources, grants


def _actor(principal: Principal) -> str:
    return principal.key_name or principal.key_id


@admin_router.get("/tools")
async def admin_list_tool_sources(request: Request) -> Response:
    async def run() -> Response:
        rt, _ = await admin_principal(request)
        assert rt.agents is not None
        return json_response({"object": "list", "data": await rt.agents.sources_view()})

    return await _guarded(run())


@admin_router.put("/tools/{kind}/{name}")
async def admin_put_tool_source(kind: str, name: str, request: Request) -> Response:
    async def run() -> Response:
        rt, principal = await admin_principal(request)
        assert rt.agents is not None
        raw = await read_json(request, _BODY_LIMIT)
        return json_response(await rt.agents.define_source(kind[:40], name[:200], raw,
                                                           _actor(principal)))

    return await _guarded(run())


@admin_router.delete("/tools/{kind}/{name}")
async def admin_delete_tool_source(kind: str, name: str, request: Request) -> Response:
    async def run() -> Response:
        rt, principal = await admin_principal(request)
        assert rt.agents is not None
        await rt.agents.undefine_source(kind[:40], name[:200], _actor(principal))
        return json_response({"id": name, "object": "agent.tool_source", "deleted": True})

    return await _guarded(run())


@admin_router.get("/grants")
async def admin_list_grants(request: Request) -> Response:
    async def run() -> Response:
        rt, _ = await admin_principal(request)
        assert rt.agents is not None
        return json_response({"object": "list", "data": await rt.agents.grants_view()})

    return await _guarded(run())


@admin_router.put("/grants/{part}/{subject}")
async def admin_put_grant(part: str, subject: str, request: Request) -> Response:
    async def run() -> Response:
        rt, principal = await admin_principal(request)
        assert rt.agents is not None
        raw = await read_json(request, _BODY_LIMIT)
        return json_response(await rt.agents.define_grant(part[:40], subject[:300], raw,
                                                          _actor(principal)))

    return await _guarded(run())


@admin_router.delete("/grants/{part}/{subject}")
async def admin_delete_grant(part: str, subject: str, request: Request) -> Response:
    async def run() -> Response:
        rt, principal = await admin_principal(request)
        assert rt.agents is not None
        await rt.agents.undefine_grant(part[:40], subject[:300], _actor(principal))
        return json_response({"part": part, "subject": subject, "object": "agent.grant",
                              "deleted": True})

    return await _guarded(run())
