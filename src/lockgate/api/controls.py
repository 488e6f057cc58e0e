"""Admin controls under /admin/controls (master key only): kill switch, governance state.

- ``GET  /admin/controls`` -- kill switches, cache/governor/breaker/invalidation counters
- ``POST /admin/controls/kill`` -- ``{"model": "m"}`` or ``{"team": "t"}``, ``"off": true``
  (default) switches it off on every gateway, ``false`` back on
- ``POST /admin/controls/canary`` -- ``{"deployment": "id"}`` puts a rolled-back canary
  back into routing on every gateway (:mod:`lockgate.pipeline.canary`); ``GET`` shows
  each canary under ``canary``: state, its window against the stable one, the rollback

Key revocation (announced to every gateway) and usage by business unit are in
:mod:`lockgate.api.admin`: ``POST /admin/keys/{id}/revoke``,
``GET /admin/usage?group_by=business_unit``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.responses import Response

from lockgate.api.admin import _admin, _parse, admin_principal, audit_admin
from lockgate.api.request_io import error_response, json_response, read_json
from lockgate.errors import GatewayError, NotFound
from lockgate.runtime import Runtime

__all__ = ["controls_snapshot", "router"]

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


class CanaryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deployment: str


def controls_snapshot(rt: Runtime) -> dict[str, Any]:
    c = rt.controls
    out: dict[str, Any] = {
        "state": "redis" if rt.invalidations is not None else "memory",
        "kill_switch": c.kill_switch.snapshot() if c.kill_switch else None,
        "cache": c.cache.stats() if c.cache else None,
        "governor": rt.governor.stats.as_dict() if rt.governor else None,
        "breakers": c.breaker.state_codes() if c.breaker else None,
        "breaker_rejected": c.breaker.rejected if c.breaker else None,
        "canary": rt.canary.snapshot() if rt.canary else None,
    }
    if rt.invalidations is not None:
        out["invalidations"] = {"received": rt.invalidations.received,
                                "resets": rt.invalidations.resets}
    return out


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
        rt, who = await admin_principal(request)
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
        what = "model" if data.model is not None else "team"
        await audit_admin(rt, who, "kill_switch.set", target=f"{what}:{data.model or data.team}",
                          changes={"off": data.off, "kill_switch": doc})
        return json_response({"kill_switch": doc})
    except GatewayError as exc:  # StateUnavailable (503) included
        return error_response(exc)


@router.post("/canary")
async def restore_canary(request: Request) -> Response:
    try:
        rt = await _admin(request)
        data: CanaryIn = _parse(CanaryIn, await read_json(request, 16 * 1024))
        if rt.canary is None or data.deployment not in rt.canary.canaries():
            raise NotFound(f"No canary deployment '{data.deployment}' is configured.",
                           param="deployment", code="canary_not_found")
        await rt.canary.restore(data.deployment, by="admin")
        return json_response({"canary": rt.canary.snapshot()["canaries"][data.deployment]})
    except GatewayError as exc:  # StateUnavailable (503) included
        return error_response(exc)
