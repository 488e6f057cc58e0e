"""``/v1/reviews``: the review queue over HTTP (the console's screens sit on the same routes).

- ``GET  /v1/reviews?state=pending&task=&team=&source=&limit=50&after=<cursor>`` -- newest
  first; an admin sees every team's items, a team key its team's
- ``GET  /v1/reviews/{id}`` -- the reviewer's view (input, recommendation, alternatives,
  rationale, evidence, impact, policy reasons, SLA time left, similar past decisions) and,
  once approved or edited, ``completion``: the answer to use. The key whose call created the
  item may read it too (a synchronous caller polls here after a 202).
- ``POST /v1/reviews/claim`` ``{"task": optional}`` -- claim the next item (nearest SLA)
- ``POST /v1/reviews/{id}/claim`` / ``/release``
- ``POST /v1/reviews/{id}/decide`` ``{"action": "approve"|"edit"|"reject"|"escalate",
  "output": ..., "reason": "...", "team": "..."}``

Errors: unknown id 404, decided (or claimed by another) 409, reject without a reason 400,
an edit that breaks the task's contract 422 with the schema error; OpenAI's error shape.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from lockgate.api.admin import _parse, store_error
from lockgate.api.request_io import api_key_of, error_response, json_response, read_json
from lockgate.errors import BadRequest, GatewayError
from lockgate.pipeline import Principal
from lockgate.review import ReviewNotFound, ReviewService
from lockgate.runtime import Runtime
from lockgate.store.errors import StoreError

__all__ = ["router"]

router = APIRouter(prefix="/v1/reviews")
_BODY_LIMIT = 1024 * 1024
_STATES = ("pending", "approved", "edited", "rejected", "auto_approved", "all")


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(max_length=20)
    output: Any = None
    reason: str | None = Field(None, max_length=2000)
    team: str | None = Field(None, min_length=1, max_length=200)


class ClaimNextIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(None, min_length=1, max_length=200)


async def _who(request: Request) -> tuple[ReviewService, Principal]:
    rt: Runtime = request.app.state.runtime
    principal = await rt.pipeline.authenticate(api_key_of(request))
    assert rt.review is not None
    return rt.review, principal


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > 200:
        raise BadRequest(f"'{name}' is at most 200 characters.", param=name)
    return value


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return 50
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 500:
        raise BadRequest("'limit' must be an integer from 1 to 500.", param="limit")
    return int(raw)


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if raw is None:
        return None
    ts, sep, last = raw.partition("~")
    try:
        value = float(ts)
    except ValueError:
        value = float("nan")
    if not sep or not last or len(raw) > 200 or value != value or abs(value) > 1e12:
        raise BadRequest("'after' is not a cursor this API returned.", param="after")
    return value, last


async def _guarded(coro: Any) -> Response:
    try:
        return await coro  # type: ignore[no-any-return]
    except StoreError as exc:
        return error_response(store_error(exc))
    except GatewayError as exc:
        return error_response(exc)


@router.get("")
async def list_reviews(request: Request) -> Response:
    async def run() -> Response:
        svc, principal = await _who(request)
        state = _text_param(request, "state") or "pending"
        if state not in _STATES:
            raise BadRequest(f"'state' must be one of {', '.join(_STATES)}.", param="state")
        limit = _limit(request)
        teams = svc.teams_of(principal)
        wanted = _text_param(request, "team")
        if wanted is not None:
            if teams is not None and wanted not in teams:
                raise BadRequest("A team key lists only its own team's items.", param="team")
            teams = [wanted]
        items = await svc.repo.find(
            state=None if state == "all" else state, teams=teams,
            task=_text_param(request, "task"), source=_text_param(request, "source"),
            limit=limit + 1, after=_cursor(_text_param(request, "after")),
        )
        now = time.time()
        more = len(items) > limit
        items = items[:limit]
        return json_response({
            "object": "list",
            "data": [i.public(now) for i in items],
            "has_more": more,
            "next_after": f"{items[-1].created_at!r}~{items[-1].id}" if more and items else None,
        })

    return await _guarded(run())


@router.post("/claim")
async def claim_next(request: Request) -> Response:
    async def run() -> Response:
        svc, principal = await _who(request)
        raw = await read_json(request, _BODY_LIMIT) if _has_body(request) else {}
        data: ClaimNextIn = _parse(ClaimNextIn, raw)
        item = await svc.claim_next(principal, data.task)
        return json_response({"object": "review.claim",
                              "item": item.public(time.time()) if item else None})

    return await _guarded(run())


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length") not in (None, "0") or (
        "chunked" in request.headers.get("transfer-encoding", "")
    )


@router.get("/{item_id}")
async def get_review(item_id: str, request: Request) -> Response:
    async def run() -> Response:
        svc, principal = await _who(request)
        item = await svc.get(_id(item_id), principal)
        out = item.public_with_answer(time.time())
        out["similar"] = await svc.repo.similar(item) if svc.may_review(principal, item) else []
        return json_response(out)

    return await _guarded(run())


@router.post("/{item_id}/claim")
async def claim(item_id: str, request: Request) -> Response:
    async def run() -> Response:
        svc, principal = await _who(request)
        item = await svc.claim(_id(item_id), principal)
        return json_response(item.public(time.time()))

    return await _guarded(run())


@router.post("/{item_id}/release")
async def release(item_id: str, request: Request) -> Response:
    async def run() -> Response:
        svc, principal = await _who(request)
        item = await svc.release(_id(item_id), principal)
        return json_response(item.public(time.time()))

    return await _guarded(run())


@router.post("/{item_id}/decide")
async def decide(item_id: str, request: Request) -> Response:
    async def run() -> Response:
        svc, principal = await _who(request)
        raw = await read_json(request, _BODY_LIMIT)
        data: DecideIn = _parse(DecideIn, raw)
        item = await svc.decide(
            _id(item_id), principal, data.action, output=data.output, reason=data.reason,
            team=data.team, has_output="output" in raw,
        )
        return json_response(item.public_with_answer(time.time()))

    return await _guarded(run())


def _id(item_id: str) -> str:
    if len(item_id) > 100 or not item_id.isascii():
        raise ReviewNotFound(f"No review item '{item_id[:100]}'.", param="id")
    return item_id
