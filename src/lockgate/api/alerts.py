"""``/v1/alerts``: the incidents lockgate raised (master key only).

* ``GET /v1/alerts?state=open|acked|resolved&kind=queue|drift&limit=100`` -> newest first;
* ``GET /v1/alerts/{id}``;
* ``POST /v1/alerts/{id}/ack`` ``{"by": "alice", "resolve": false}`` -> the alert.

Thin over :class:`lockgate.alerts.AlertCenter` (``Runtime.alerts``); mirrors
``lockgate alerts list|ack``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.alerts import AlertCenter
from lockgate.api.admin import _admin
from lockgate.api.request_io import json_response, read_json
from lockgate.errors import BadRequest, NotFound
from lockgate.runtime import Runtime
from lockgate.store import InvalidInput, NotFoundError

__all__ = ["router"]

router = APIRouter()


def _center(rt: Runtime) -> AlertCenter:
    assert rt.alerts is not None  # Runtime.start always builds it
    return rt.alerts


def _alert_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound(f"No alert with id '{raw}'.", code="alert_not_found")
    return int(raw)


@router.get("/v1/alerts")
async def list_alerts(request: Request) -> Response:
    rt = await _admin(request)
    q = request.query_params
    raw_limit = q.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit()):
        raise BadRequest("'limit' must be an integer from 1 to 10000", param="limit")
    try:
        found = await _center(rt).list(q.get("state") or None, kind=q.get("kind") or None,
                                       limit=int(raw_limit))
    except InvalidInput as exc:
        raise BadRequest(str(exc), code="invalid_value") from None
    return json_response({"object": "list", "data": [a.as_dict() for a in found]})


@router.get("/v1/alerts/{alert_id}")
async def get_alert(request: Request, alert_id: str) -> Response:
    rt = await _admin(request)
    try:
        return json_response((await _center(rt).get(_alert_id(alert_id))).as_dict())
    except NotFoundError:
        raise NotFound(f"No alert with id '{alert_id}'.", code="alert_not_found") from None


@router.post("/v1/alerts/{alert_id}/ack")
async def ack_alert(request: Request, alert_id: str) -> Response:
    rt = await _admin(request)
    has_body = request.headers.get("content-length") not in (None, "0")
    body = await read_json(request, 16 * 1024) if has_body else {}
    unknown = sorted(set(body) - {"by", "resolve"})
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'", param=unknown[0])
    by = body.get("by", "admin")
    resolve = body.get("resolve", False)
    if not isinstance(by, str) or not by.strip() or len(by) > 200:
        raise BadRequest("'by' must be a non-empty string", param="by")
    if not isinstance(resolve, bool):
        raise BadRequest("'resolve' must be true or false", param="resolve")
    try:
        alert = await _center(rt).ack(_alert_id(alert_id), by, resolve=resolve)
    except NotFoundError:
        raise NotFound(f"No alert with id '{alert_id}'.", code="alert_not_found") from None
    return json_response(alert.as_dict())
