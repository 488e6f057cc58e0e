"""Console screens for operators: teams, keys, budgets and limits, kill switch and routing,
jobs and the dead-letter queue, alerts.

Reading: admins see everything; a team user sees its own team and keys (read-only).
Teams and keys go through :class:`lockgate.admin.AdminService` (the admin API's and the
CLI's too), budgets and rate limits in use through :class:`lockgate.admin.UsageNow`.
Every change is admin-only (403 for team users, tested) and is written to the audit chain
with the admin API's action names (``team.create``, ``key.create``, ``key.revoke``,
``kill_switch.set``) plus ``dlq.retry``, ``dlq.purge`` and ``alert.ack``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.api.admin import audit_admin
from lockgate.api.controls import controls_snapshot
from lockgate.console.render import page
from lockgate.console.session import ConsoleUser, runtime_of
from lockgate.console.web import form_text, redirect, screen
from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.store import NotFoundError

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)


# --------------------------------------------------------------------- teams/keys


@router.get("/teams")
@screen()
async def teams_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    teams = await rt.admin.teams(user.principal)
    rollups = rt.console.rollups if rt.console else None
    use: dict[str, dict[str, float]] = {}
    if rollups is not None:
        ov = await rollups.overview("24h", team_id=user.team_id)
        for row in ov.by_team_model:
            agg = use.setdefault(row["team_id"] or "", {"requests": 0, "cost": 0.0,
                                                          "tokens": 0})
            agg["requests"] += row["requests"]
            agg["cost"] += row["cost"]
            agg["tokens"] += row["tokens"]
    policies = {name: p.model_dump(exclude_none=True) for name, p in rt.config.teams.items()}
    now = {u.id: u for u in await rt.usage_now.teams(teams)}
    return page(request, "teams.html", user=user, title="Teams, budgets and limits",
                teams=teams, use=use, policies=policies, now=now, created=None)


@router.get("/budgets")
@screen()
async def budgets_page(request: Request, user: ConsoleUser) -> Response:
    """Budget spend vs limit and rate-limit headroom, per team and per key, now."""
    rt = runtime_of(request)
    teams = await rt.admin.teams(user.principal)
    keys = await rt.admin.keys(user.principal)
    usage = rt.usage_now
    team_use = await usage.teams(teams)
    governed = [k for k in keys if not k.revoked and usage.key_scope(k) is not None]
    pages = max(1, -(-len(governed) // _MAX_KEYS))
    raw = request.query_params.get("page", "1")
    ok = raw.isascii() and raw.isdigit() and len(raw) < 10  # ("²".isdigit() is True)
    number = min(max(1, int(raw)), pages) if ok else 1
    start = (number - 1) * _MAX_KEYS
    key_use = await usage.keys(governed[start:start + _MAX_KEYS])
    model_use = await usage.models() if user.is_admin else []
    backend = rt.state.name if rt.state is not None else "none"
    key_page = {"number": number, "pages": pages, "first": start + 1,
                "last": start + len(key_use), "total": len(governed)}
    return page(request, "budgets.html", user=user, title="Budgets and limits: use now",
                team_use=team_use, key_use=key_use, model_use=model_use, backend=backend,
                key_page=key_page)


_MAX_KEYS = 500
"""Governed keys per budgets page (their counters are read: one state round-trip each);
``?page=N`` shows the next ones."""


@router.post("/teams")
@screen(admin=True)
async def create_team(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    form = request.state.form
    name = form_text(form, "name", required=True, max_len=200)
    bu = form_text(form, "business_unit", max_len=200)
    assert name is not None
    await rt.admin.create_team(user.principal, name, bu, via="console")
    return redirect("/console/teams")


@router.get("/keys")
@screen()
async def keys_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    keys = await rt.admin.keys(user.principal)
    teams = await rt.admin.teams(user.principal) if user.is_admin else []
    return page(request, "keys.html", user=user, title="Keys", keys=keys, teams=teams,
                created=None, models=rt.pipeline.router.models())


@router.post("/keys")
@screen(admin=True)
async def create_key(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    form = request.state.form
    team = form_text(form, "team", required=True, max_len=200)
    name = form_text(form, "name", max_len=200) or ""
    models_raw = form_text(form, "models", max_len=2000)
    models = [m.strip() for m in models_raw.split(",") if m.strip()] if models_raw else None
    assert team is not None
    plaintext, key = await rt.admin.create_key(user.principal, team, name=name, models=models,
                                               via="console")
    keys = await rt.admin.keys(user.principal)
    teams = await rt.admin.teams(user.principal)
    # shown once, in this response only (never in a URL, never stored)
    return page(request, "keys.html", status=201, user=user, title="Keys", keys=keys,
                teams=teams, created={"key": plaintext, "id": key.id, "team": key.team_name},
                models=rt.pipeline.router.models())


@router.post("/keys/{key_id}/revoke")
@screen(admin=True)
async def revoke_key(request: Request, user: ConsoleUser, key_id: str) -> Response:
    rt = runtime_of(request)
    await rt.admin.revoke_key(user.principal, key_id, via="console")
    return redirect("/console/keys")


# ------------------------------------------------------------ controls/routing


@router.get("/controls")
@screen(admin=True)
async def controls_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    snap = controls_snapshot(rt)
    fallbacks = rt.controls.fallbacks
    shadow: list[dict[str, Any]] | None = None
    if rt.config.shadow is not None:
        from lockgate.shadow.report import shadow_report

        try:
            shadow = [asdict(s) for s in await shadow_report(rt.store, since=None)]
        except Exception:  # a report that cannot be built must not hide the kill switch
            shadow = None
    return page(request, "controls.html", user=user, title="Kill switch and routing",
                snap=snap, models=rt.config.model_names(), fallbacks=fallbacks,
                shadow=shadow)


@router.post("/controls/kill")
@screen(admin=True)
async def kill(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    form = request.state.form
    what = form_text(form, "what", required=True, max_len=10)
    name = form_text(form, "name", required=True, max_len=200)
    off = form_text(form, "off", required=True, max_len=5) == "true"
    ks = rt.controls.kill_switch
    if ks is None:
        raise GatewayError("The kill switch is not available.", status=501)
    if what not in ("model", "team"):
        raise BadRequest("'what' must be model or team.", param="what")
    assert name is not None
    if what == "model" and name not in rt.config.model_names():
        raise NotFound(f"The model '{name}' does not exist.", param="model")
    doc = await ks.set(what, name, off)  # type: ignore[arg-type]
    await audit_admin(rt, user.principal, "kill_switch.set", target=f"{what}:{name}",
                      changes={"off": off, "kill_switch": doc, "via": "console"})
    return redirect("/console/controls")


# ------------------------------------------------------------------- jobs/DLQ


@router.get("/jobs")
@screen(admin=True)
async def jobs_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    if rt.jobs is None:
        raise GatewayError("The job queue is not running in this process.", status=503)
    stats = await rt.jobs.queue.stats()
    dead = await rt.jobs.queue.dlq_list(100)
    return page(request, "jobs.html", user=user, title="Jobs and dead letters", stats=stats,
                dead=dead)


@router.get("/jobs/{job_id}")
@screen(admin=True)
async def job_detail(request: Request, user: ConsoleUser, job_id: str) -> Response:
    from lockgate.jobs.model import JobNotFound

    rt = runtime_of(request)
    if rt.jobs is None:
        raise GatewayError("The job queue is not running in this process.", status=503)
    try:
        job = await rt.jobs.queue.get(job_id[:100])
    except JobNotFound:
        raise NotFound(f"No job '{job_id[:100]}'.") from None
    return page(request, "job_detail.html", user=user, title=f"Job {job.id}", job=job)


@router.post("/jobs/{job_id}/retry")
@screen(admin=True)
async def dlq_retry(request: Request, user: ConsoleUser, job_id: str) -> Response:
    from lockgate.jobs.model import JobNotFound

    rt = runtime_of(request)
    if rt.jobs is None:
        raise GatewayError("The job queue is not running in this process.", status=503)
    try:
        job = await rt.jobs.queue.dlq_retry(job_id[:100])
    except JobNotFound:
        raise NotFound(f"No dead job '{job_id[:100]}'.") from None
    await audit_admin(rt, user.principal, "dlq.retry", target=job.id,
                      changes={"task": job.task, "via": "console"})
    return redirect("/console/jobs")


@router.post("/jobs/{job_id}/purge")
@screen(admin=True)
async def dlq_purge(request: Request, user: ConsoleUser, job_id: str) -> Response:
    rt = runtime_of(request)
    if rt.jobs is None:
        raise GatewayError("The job queue is not running in this process.", status=503)
    n = await rt.jobs.queue.dlq_purge(job_id[:100])
    if n == 0:
        raise NotFound(f"No dead job '{job_id[:100]}'.")
    await audit_admin(rt, user.principal, "dlq.purge", target=job_id[:100],
                      changes={"purged": n, "via": "console"})
    return redirect("/console/jobs")


# -------------------------------------------------------------------- alerts


@router.get("/alerts")
@screen(admin=True)
async def alerts_page(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    assert rt.alerts is not None
    state = request.query_params.get("state") or None
    if state is not None and state not in ("open", "acked", "resolved"):
        raise BadRequest("'state' must be open, acked or resolved.", param="state")
    found = await rt.alerts.list(state, limit=200)
    return page(request, "alerts.html", user=user, title="Alerts", alerts=found, state=state)


@router.post("/alerts/{alert_id}/ack")
@screen(admin=True)
async def ack_alert(request: Request, user: ConsoleUser, alert_id: str) -> Response:
    rt = runtime_of(request)
    assert rt.alerts is not None
    if not (alert_id.isascii() and alert_id.isdigit()) or len(alert_id) > 18:
        raise NotFound(f"No alert '{alert_id[:40]}'.")
    resolve = form_text(request.state.form, "resolve", max_len=5) == "true"
    try:
        alert = await rt.alerts.ack(int(alert_id), "console:admin", resolve=resolve)
    except NotFoundError:
        raise NotFound(f"No alert '{alert_id}'.") from None
    await audit_admin(rt, user.principal, "alert.ack", target=str(alert.id),
                      changes={"resolve": resolve, "via": "console"})
    return redirect("/console/alerts")
