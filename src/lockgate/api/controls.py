"""Admin controls under /admin/controls (master key only): kill switch, governance state,
revocation announced to every gateway, usage by business unit.

- ``GET  /admin/controls`` -- kill switches, cache/governor/breaker/invalidation counters
- ``POST /admin/controls/kill`` -- ``{"model": "m"}`` or ``{"team": "t"}``, ``"off": true``
  (default) switches it off on every gateway, ``false`` back on
- ``POST /admin/controls/keys/{key_id}/revoke`` -- revoke and wait until every gateway
  has been told (the plain ``/admin/keys/{id}/revoke`` announces in the background)
- ``GET  /admin/controls/usage?group_by=business_unit[&since=7d]`` -- spend per business unit
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.responses import Response

from lockgate.api.admin import _admin, _parse, parse_since, store_error
from lockgate.api.request_io import error_response, json_response, read_json
from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.runtime import Runtime
from lockgate.store import Store, StoreError

__all__ = ["controls_snapshot", "router", "usage_by_business_unit"]

router = APIRouter(prefix="/admin/controls")


class KillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    team: str | None = None
    off: bool = True

    @model_validator(mode="after")
    def _one(self) -> KillIn:
        if (self.model is None) == (self.team is None):
            raise ValueError("give exactly one of 'model' or 'team'")
        return self


def controls_snapshot(rt: Runtime) -> dict[str, Any]:
    c = rt.controls
    out: dict[str, Any] = {
        "state": "redis" if rt.invalidations is not None else "memory",
        "kill_switch": c.kill_switch.snapshot() if c.kill_switch else None,
        "cache": c.cache.stats() if c.cache else None,
        "governor": rt.governor.stats.as_dict() if rt.governor else None,
        "breakers": c.breaker.state_codes() if c.breaker else None,
        "breaker_rejected": c.breaker.rejected if c.breaker else None,
    }
    if rt.invalidations is not None:
        out["invalidations"] = {"received": rt.invalidations.received,
                                "resets": rt.invalidations.resets}
    return out


async def usage_by_business_unit(
    store: Store, *, since: datetime | None = None, team: str | None = None
) -> list[dict[str, Any]]:
    """Usage totals per team's ``business_unit`` (teams without one: ``null``)."""
    rows = await store.usage_summary(team=team, since=since, group_by=("team",))
    units = {t.id: t.business_unit for t in await store.list_teams()}
    out: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        bu = units.get(row.get("team_id") or "")
        agg = out.setdefault(bu, {"business_unit": bu, "teams": 0, "requests": 0,
                                  "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                                  "errors": 0, "shadow_requests": 0, "shadow_cost": 0.0})
        agg["teams"] += 1
        for name in ("requests", "prompt_tokens", "completion_tokens", "cost", "errors",
                     "shadow_requests", "shadow_cost"):
            agg[name] += row[name]
    return sorted(out.values(), key=lambda r: (r["business_unit"] is None,
                                                r["business_unit"] or ""))


def _group(values: Sequence[str]) -> str:
    g = (values[0] if values else "business_unit").replace("-", "_")
    if g != "business_unit":
        raise BadRequest("group_by: only 'business_unit' here; /admin/usage groups by the rest",
                         param="group_by", code="invalid_value")
    return g


@router.get("")
async def controls(request: Request) -> Response:
    try:
        rt = await _admin(request)
        return json_response(controls_snapshot(rt))
    except GatewayError as exc:
        return error_response(exc)


@router.post("/kill")
async def kill(request: Request) -> Response:
    try:
        rt = await _admin(request)
        data: KillIn = _parse(KillIn, await read_json(request, 16 * 1024))
        ks = rt.controls.kill_switch
        if ks is None:
            raise GatewayError("The kill switch is not available.", status=501)
        if data.model is not None:
            if data.model not in rt.config.model_names():
                raise NotFound(f"The model '{data.model}' does not exist.", param="model")
            doc = await ks.set("model", data.model, data.off)
        else:
            assert data.team is not None
            doc = await ks.set("team", data.team, data.off)
        return json_response({"kill_switch": doc})
    except GatewayError as exc:  # StateUnavailable (503) included
        return error_response(exc)


@router.post("/keys/{key_id}/revoke")
async def revoke(request: Request, key_id: str) -> Response:
    try:
        rt = await _admin(request)
        if not await rt.revoke_key(key_id):
            raise NotFound(f"No active key with id '{key_id}'.", code="key_not_found")
        return json_response({"id": key_id, "revoked": True,
                              "announced": rt.invalidations is not None})
    except GatewayError as exc:
        return error_response(exc)
    except StoreError as exc:
        return error_response(store_error(exc))


@router.get("/usage")
async def usage(request: Request) -> Response:
    try:
        rt = await _admin(request)
        _group(request.query_params.getlist("group_by"))
        since_raw = request.query_params.get("since")
        since = parse_since(since_raw) if since_raw else None
        rows = await usage_by_business_unit(rt.store, since=since,
                                            team=request.query_params.get("team"))
        return json_response({"group_by": "business_unit", "data": rows})
    except GatewayError as exc:
        return error_response(exc)
    except StoreError as exc:
        return error_response(store_error(exc))
