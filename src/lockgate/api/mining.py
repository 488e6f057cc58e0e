"""``/v1/mining``: process mining over HTTP (master key only: the records span every team).

- ``POST /v1/mining/analyze`` ``{"log": name | null, "sources": ["calls", "reviews", "jobs"],
  "since": "7d", "until": iso, "reference": [["a", "b"]], "reference_name": name,
  "svg": false, "summary": false, "model": name, "max_variants": 50}`` -- the mining JSON
  (``overview``, ``activities``, ``dfg``, ``variants``, ``bottlenecks``, ``rework``,
  ``conformance``), with ``svg`` (Graphviz) and ``summary`` (facts + cited text) on request
- ``PUT  /v1/mining/logs/{name}?format=csv|xes&replace=false`` -- body: the file (at most
  64 MiB); 201 with the stored log's counts
- ``GET  /v1/mining/logs`` / ``DELETE /v1/mining/logs/{name}``

Errors in OpenAI's shape: bad body or unreadable log 400, unknown log 404, existing log 409,
Graphviz missing 503.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from lockgate.api.admin import _parse, admin_principal, parse_since
from lockgate.api.request_io import json_response, read_json
from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.mining import MiningInputError, MiningService, RenderError, UnknownLog, parse_log

__all__ = ["router"]

router = APIRouter(prefix="/v1/mining")
_BODY_LIMIT = 1024 * 1024
_FILE_LIMIT = 64 * 1024 * 1024
_NAME = r"^[A-Za-z0-9_.\-]{1,200}$"


class AnalyzeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log: str | None = Field(None, pattern=_NAME)
    sources: list[str] | None = Field(None, max_length=20)
    since: str | None = Field(None, max_length=64)
    until: str | None = Field(None, max_length=64)
    reference: list[list[str]] | None = Field(None, max_length=50)
    reference_name: str | None = Field(None, max_length=200)
    svg: bool = False
    summary: bool = False
    model: str | None = Field(None, max_length=200)
    max_variants: int = Field(50, ge=1, le=10_000)


def _input_error(exc: Exception) -> GatewayError:
    if isinstance(exc, UnknownLog):
        return NotFound(str(exc).strip("'\""), code="log_not_found")
    if isinstance(exc, RenderError):
        return GatewayError(str(exc), status=503, type="api_error", code="renderer_unavailable")
    return BadRequest(str(exc), code="invalid_log")


def _service(request: Request) -> MiningService:
    svc = request.app.state.runtime.mining
    assert svc is not None
    return svc  # type: ignore[no-any-return]


@router.post("/analyze")
async def analyze(request: Request) -> Response:
    _, who = await admin_principal(request)
    data: AnalyzeIn = _parse(AnalyzeIn, await read_json(request, _BODY_LIMIT))
    svc = _service(request)
    since = parse_since(data.since).timestamp() if data.since else None
    until = parse_since(data.until).timestamp() if data.until else None
    try:
        ref = svc.reference(data.reference_name, data.reference)
        ev, label = await svc.event_log(log=data.log, sources=data.sources, since=since,
                                        until=until)
        out = await svc.analyze(ev, label, reference=ref, svg=data.svg, summary=data.summary,
                                principal=who, model=data.model)
    except (MiningInputError, UnknownLog, RenderError) as exc:
        raise _input_error(exc) from None
    return json_response(out.to_dict(max_variants=data.max_variants))


def _name(raw: str) -> str:
    import re

    if not re.match(_NAME, raw):
        raise BadRequest("A log name is 1-200 characters of A-Z a-z 0-9 _ . -", param="name",
                         code="invalid_value")
    return raw


@router.put("/logs/{name}")
async def put_log(name: str, request: Request) -> Response:
    await admin_principal(request)
    name = _name(name)
    fmt = request.query_params.get("format", "csv")
    if fmt not in ("csv", "xes"):
        raise BadRequest("'format' is csv or xes.", param="format", code="invalid_value")
    replace = request.query_params.get("replace", "false")
    if replace not in ("true", "false"):
        raise BadRequest("'replace' is true or false.", param="replace", code="invalid_value")
    body = bytearray()
    async for part in request.stream():
        body.extend(part)
        if len(body) > _FILE_LIMIT:
            raise GatewayError(f"The log file is larger than {_FILE_LIMIT} bytes.", status=413,
                               type="invalid_request_error", code="file_too_large")
    svc = _service(request)
    try:
        import asyncio

        ev = await asyncio.to_thread(parse_log, bytes(body), fmt,
                                     max_events=svc.settings.max_events)
        info = await svc.import_log(name, ev, source=f"upload ({fmt})",
                                    replace=replace == "true")
    except MiningInputError as exc:
        if "already exists" in str(exc):
            raise GatewayError(str(exc), status=409, type="invalid_request_error",
                               code="already_exists") from None
        raise _input_error(exc) from None
    return json_response(info.to_dict(), status=201)


@router.get("/logs")
async def list_logs(request: Request) -> Response:
    await admin_principal(request)
    return json_response({"data": [i.to_dict() for i in await _service(request).logs()]})


@router.delete("/logs/{name}")
async def delete_log(name: str, request: Request) -> Response:
    await admin_principal(request)
    if not await _service(request).delete(_name(name)):
        raise NotFound(f"no event log named {name!r}", code="log_not_found")
    return json_response({"deleted": name})
