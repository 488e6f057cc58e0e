"""Admin HTTP API under /admin/ (master key only): teams, keys, revocation, usage, audit.

Every change an administrator makes (team created, key created or revoked, kill
switch set) is appended to the tamper-evident audit chain as it happens
(:meth:`Store.record_admin_action`: who = the admin key id, when, what changed);
``GET /admin/audit`` lists those rows, newest first.

Store failures propagate to the app's ``StoreError`` handler (:func:`store_error`).

Mirrors the CLI: ``lockgate teams ...``, ``lockgate keys ...``, ``lockgate usage``.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from lockgate.api.request_io import api_key_of, json_response, read_json
from lockgate.errors import BadRequest, Forbidden, GatewayError
from lockgate.pipeline.call import Principal
from lockgate.runtime import Runtime
from lockgate.store import StoreError

router = APIRouter(prefix="/admin")


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    business_unit: str | None = None


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str = Field(min_length=1)
    name: str = ""
    models: list[str] | None = None


async def _admin(request: Request) -> Runtime:
    return (await admin_principal(request))[0]


async def admin_principal(request: Request) -> tuple[Runtime, Principal]:
    """The runtime and the (master) principal calling; 403 for any other key."""
    rt: Runtime = request.app.state.runtime
    principal = await rt.pipeline.authenticate(api_key_of(request))
    if not principal.is_master:
        raise Forbidden("The admin API needs the master key.", code="admin_only")
    return rt, principal


async def audit_admin(
    rt: Runtime, who: Principal, action: str, *, target: str | None = None,
    team_id: str | None = None, changes: dict[str, Any] | None = None,
) -> None:
    """Append an admin action to the audit chain (a store failure fails the request)."""
    await rt.admin.audit(who, action, target=target, team_id=team_id, changes=changes)


def _parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        raise BadRequest(f"{loc}: {err['msg']}", param=loc, code="invalid_value") from None


def store_error(exc: StoreError) -> GatewayError:
    code = {404: "not_found", 409: "already_exists", 400: "invalid_value",
            503: "database_unavailable"}
    return GatewayError(str(exc), status=exc.http_status,
                        type="invalid_request_error" if exc.http_status < 500 else "api_error",
                        code=code.get(exc.http_status))


def _jsonable(obj: Any) -> Any:
    data = asdict(obj)
    return {k: (v.isoformat() if isinstance(v, datetime) else list(v) if isinstance(v, tuple)
                else v) for k, v in data.items()}


@router.post("/teams")
async def create_team(request: Request) -> Response:
    rt, who = await admin_principal(request)
    data: TeamIn = _parse(TeamIn, await read_json(request, 64 * 1024))
    team = await rt.admin.create_team(who, data.name, data.business_unit)
    return json_response(_jsonable(team), status=201)


@router.get("/teams")
async def list_teams(request: Request) -> Response:
    rt, who = await admin_principal(request)
    teams = await rt.admin.teams(who)
    return json_response({"data": [_jsonable(t) for t in teams]})


@router.post("/keys")
async def create_key(request: Request) -> Response:
    rt, who = await admin_principal(request)
    data: KeyIn = _parse(KeyIn, await read_json(request, 64 * 1024))
    plaintext, key = await rt.admin.create_key(who, data.team, name=data.name,
                                               models=data.models)
    return json_response({**_jsonable(key), "key": plaintext}, status=201)


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    rt, who = await admin_principal(request)
    keys = await rt.admin.keys(who, request.query_params.get("team"))
    return json_response({"data": [_jsonable(k) for k in keys]})


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    """Revoke in the store, drop it from this gateway's key cache and wait until every
    gateway sharing Redis has been told (``announced``: false without Redis)."""
    rt, who = await admin_principal(request)
    await rt.admin.revoke_key(who, key_id)  # returns once every gateway has been told
    return json_response({"id": key_id, "revoked": True,
                          "announced": rt.invalidations is not None})


@router.post("/cache/invalidate")
async def invalidate(request: Request) -> Response:
    """Drop cached key lookups (the CLI calls this after revoking a key)."""
    rt = await _admin(request)
    rt.pipeline.auth.invalidate()
    return json_response({"invalidated": True})


@router.get("/usage")
async def usage(request: Request) -> Response:
    """Totals per team, key and model; ``group_by=business_unit``: per business unit.
    ``team`` and ``since`` (ISO or 24h/7d) narrow both."""
    rt = await _admin(request)
    since_raw = request.query_params.get("since")
    since = parse_since(since_raw) if since_raw else None
    team = request.query_params.get("team")
    group_by = (request.query_params.get("group_by") or "").replace("-", "_")
    if group_by == "business_unit":
        rows = await rt.store.usage_by_business_unit(team=team, since=since)
        return json_response({"group_by": group_by, "data": rows})
    if group_by:
        raise BadRequest("'group_by' must be 'business_unit' or absent.", param="group_by",
                         code="invalid_value")
    return json_response({"data": await rt.store.usage_summary(team=team, since=since)})


@router.get("/audit")
async def admin_audit(request: Request) -> Response:
    """Administrators' actions from the audit chain, newest first: ``limit`` (1..1000,
    default 100), ``since`` (ISO or 24h/7d), ``action`` (e.g. ``key.create``)."""
    rt = await _admin(request)
    raw_limit = request.query_params.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 1000:
        raise BadRequest("'limit' must be an integer from 1 to 1000.", param="limit",
                         code="invalid_value")
    since_raw = request.query_params.get("since")
    rows = await rt.store.recent_usage(
        int(raw_limit), kind="admin", model=request.query_params.get("action"),
        since=parse_since(since_raw) if since_raw else None,
    )
    out = []
    for row in rows:
        detail = orjson.loads(row.detail) if row.detail else {}
        out.append({"id": row.request_id, "at": row.created_at.isoformat(),
                    "actor": row.key_id, "action": row.model, "target": row.deployment,
                    "team_id": row.team_id, "changes": detail.get("changes", {})})
    return json_response({"data": out})


def parse_since(value: str) -> datetime:
    """ISO date/datetime (any UTC offset; naive = UTC), or a relative '24h' / '7d' / '30m'
    (ASCII digits). Always an aware UTC datetime; a date that cannot be one is a 400."""
    from datetime import timedelta

    bad = BadRequest(f"'since' must be an ISO date/time or like 24h, 7d: got '{value[:100]}'",
                     param="since", code="invalid_value")
    units = {"m": "minutes", "h": "hours", "d": "days"}
    amount = value[:-1]
    try:
        if value[-1:] in units and amount.isascii() and amount.isdigit():
            return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(amount)})
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or outside datetime's years 1..9999
        raise bad from None
