"""Console screens: sign-in/out, overview (from rollups), request log explorer.

Team users see their own team's numbers and calls only; admins see every team and may pick
one. Reading works without JavaScript; the charts need it (uPlot reads the JSON the page
carries).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.api.admin import audit_admin, parse_since
from lockgate.console.render import page
from lockgate.console.session import (
    COOKIE,
    ConsoleUser,
    check_pre_csrf,
    clear_cookie,
    console_data,
    current_user,
    pre_token,
    runtime_of,
    set_pre_cookie,
    set_session_cookie,
)
from lockgate.console.web import form_text, query_text, read_form, redirect, screen
from lockgate.errors import BadRequest, GatewayError
from lockgate.store.console import LogFilter
from lockgate.store.rollups import WINDOWS

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_ROLLUP_MAX_AGE = 1.0
"""A page view folds new audit rows first when the last fold is older than this (s)."""


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value[:300]
    return "/console"


def _login_page(request: Request, nxt: str, *, status: int = 200,
                error: str | None = None) -> Response:
    token = pre_token(request)
    resp = page(request, "login.html", status=status, title="Sign in", next=nxt, error=error,
                pre_csrf=token)
    set_pre_cookie(request, resp, token)
    return resp


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await current_user(request) is not None:
        return redirect("/console")
    return _login_page(request, _safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    rt = runtime_of(request)
    try:
        form = await read_form(request)
        sent = form.get("csrf")
        check_pre_csrf(request, sent if isinstance(sent, str) else None)
        key = form_text(form, "key", required=True, max_len=500)
        nxt = _safe_next(form_text(form, "next", max_len=300))
        try:
            principal = await rt.pipeline.authenticate(key)
        except GatewayError as exc:
            if exc.status >= 500:
                raise
            return _login_page(request, nxt, status=401,
                               error="That key was not accepted (unknown or revoked).")
    except GatewayError as exc:
        return page(request, "error.html", status=exc.status, title=f"Error {exc.status}",
                    message=exc.message)
    data = console_data(rt)
    old = request.cookies.get(COOKIE)
    if old:  # never adopt a session id the browser brought: end it, mint a new one
        await data.end_session(old)
    sid, _rec = await data.create_session(
        key_id=principal.key_id, team_id=principal.team_id, team_name=principal.team_name,
        is_master=principal.is_master, ttl=rt.config.console.session_ttl_seconds)
    if principal.is_master:
        await audit_admin(rt, principal, "console.sign_in", changes={"via": "console"})
    resp = redirect(nxt)
    set_session_cookie(resp, request, sid)
    return resp


@router.post("/logout")
@screen()
async def logout(request: Request, user: ConsoleUser) -> Response:
    await console_data(runtime_of(request)).end_session(user.sid)
    resp = redirect("/console/login")
    clear_cookie(resp)
    return resp


# ------------------------------------------------------------------ overview


@router.get("")
@screen()
async def overview(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    window = request.query_params.get("window") or "24h"
    if window not in WINDOWS:
        raise BadRequest(f"'window' must be one of {', '.join(WINDOWS)}.", param="window")
    teams = await rt.store.list_teams() if user.is_admin else []
    team_id = user.team_id
    if user.is_admin and request.query_params.get("team"):
        wanted = request.query_params["team"]
        match = next((t for t in teams if wanted in (t.id, t.name)), None)
        if match is None:
            raise BadRequest("Unknown team.", param="team")
        team_id = match.id
    rollups = console_data(rt).rollups
    await rollups.refresh_if_stale(_ROLLUP_MAX_AGE)
    ov = await rollups.overview(window, team_id=team_id)
    names = {t.id: t.name for t in teams}
    if not user.is_admin and user.record.team_id:
        names[user.record.team_id] = user.record.team_name or user.record.team_id
    rows = [{**r, "team": names.get(r["team_id"] or "", r["team_id"] or "(master / none)")}
            for r in ov.by_team_model]
    return page(request, "overview.html", user=user, title="Overview", ov=ov,
                series=ov.series(), rows=rows, windows=list(WINDOWS), window=window,
                teams=teams, team_id=team_id, behind=rollups.behind)


# --------------------------------------------------------------- request log

_STATUS = ("ok", "error")



def _time(request: Request, name: str) -> datetime | None:
    raw = query_text(request, name, 40)
    if raw is None:
        return None
    return parse_since(raw)


@router.get("/requests")
@screen()
async def request_log(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    status = query_text(request, "status", 10)
    if status is not None and status not in _STATUS and not (
            status.isascii() and status.isdigit() and 100 <= int(status) <= 599):
        raise BadRequest("'status' must be ok, error or an HTTP status code.", param="status")
    team_id = user.team_id
    team_q = query_text(request, "team")
    teams = await rt.store.list_teams() if user.is_admin else []
    if user.is_admin and team_q:
        match = next((t for t in teams if team_q in (t.id, t.name)), None)
        if match is None:
            raise BadRequest("Unknown team.", param="team")
        team_id = match.id
    before = query_text(request, "before", 18)
    if before is not None and not (before.isascii() and before.isdigit()):
        raise BadRequest("'before' is not a cursor this page gave.", param="before")
    flt = LogFilter(team_id=team_id, key_id=query_text(request, "key"),
                    model=query_text(request, "model"),
                    deployment=query_text(request, "deployment"), status=status,
                    since=_time(request, "since"), until=_time(request, "until"),
                    before_id=int(before) if before else None)
    rows, last_id = await _log_page(rt, flt)
    query: dict[str, Any] = {k: v for k, v in request.query_params.items() if k != "before"}
    return page(request, "requests.html", user=user, title="Requests", rows=rows,
                query=query, next_before=last_id, teams=teams,
                team_names={t.id: t.name for t in teams} if teams else
                {user.record.team_id: user.record.team_name},
                models=rt.pipeline.router.models())


async def _log_page(rt: Any, flt: LogFilter) -> tuple[list[Any], int | None]:
    found = await console_data(rt).request_log(flt, limit=51)
    more = len(found) > 50
    found = found[:50]
    last = found[-1][0] if more and found else None
    return [row for _id, row in found], last


@router.get("/requests/{request_id}")
@screen()
async def request_detail(request: Request, user: ConsoleUser, request_id: str) -> Response:
    rt = runtime_of(request)
    row = await console_data(rt).request(request_id)
    if row is None or (not user.is_admin and row.team_id != user.team_id):
        raise GatewayError(f"No request '{request_id[:100]}'.", status=404, code="not_found")
    return page(request, "request_detail.html", user=user, title=f"Request {row.request_id}",
                row=row, log_bodies=rt.config.log_bodies)
