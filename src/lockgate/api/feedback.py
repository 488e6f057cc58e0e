"""``/v1/feedback``: feedback on calls, and quality per task/model/deployment/version.

* ``POST /v1/feedback`` with exactly one of ``request_id`` (an ``x-request-id`` lockgate
  returned), ``review_id`` or ``job_id``, and at least one of ``thumbs`` (``up``/``down``),
  ``score`` (a number), ``comment``, ``corrected_output`` (any JSON), ``outcome`` (a
  label such as ``refund_granted``); optional ``task``, ``prompt_version``,
  ``contract_version``, ``input``, ``output``, ``refused``. The key that made the call,
  a key of its team, or the master key may give it; anyone else (and an unknown id) gets
  404. Bad shapes -> 400 in OpenAI's error shape. -> 201 with the feedback object.
* ``GET /v1/feedback/quality?since=7d&task=&model=&deployment=&outcome=`` (master key).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lockgate.api.admin import _admin, parse_since
from lockgate.api.request_io import api_key_of, json_response, read_json
from lockgate.errors import BadRequest, NotFound
from lockgate.feedback import FeedbackService, Subject, may_give_feedback, quality_report
from lockgate.runtime import Runtime
from lockgate.store import InvalidInput, NotFoundError

__all__ = ["router"]

router = APIRouter()

_IDS = ("request_id", "review_id", "job_id")
_SAYS = ("thumbs", "score", "comment", "corrected_output", "outcome")
_FIELDS = {*_IDS, *_SAYS, "task", "prompt_version", "contract_version", "input", "output",
           "refused"}


def _service(rt: Runtime) -> FeedbackService:
    assert rt.feedback is not None  # Runtime.start always builds it
    return rt.feedback


async def _job_subject(rt: Runtime, job_id: str, principal: Any) -> Subject:
    from lockgate.jobs.model import JobNotFound

    if rt.jobs is None:
        raise NotFound(f"Unknown job id '{job_id}'.", param="job_id", code="not_found")
    try:
        job = await rt.jobs.service.get(job_id, principal)
    except JobNotFound:
        raise NotFound(f"Unknown job id '{job_id}'.", param="job_id", code="not_found") from None
    owner = job.meta.get("principal") or {}
    result = job.result
    output = result.get("output", result) if isinstance(result, dict) else result
    return Subject(job_id=job.id, key_id=owner.get("key_id"), team_id=owner.get("team_id"),
                   task=job.task, input=job.input, output=output)


@router.post("/v1/feedback")
async def give_feedback(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.pipeline.authenticate(api_key_of(request))
    body = await read_json(request, rt.config.server.max_body_bytes)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}'", param=unknown[0])
    ids = [n for n in _IDS if body.get(n) is not None]
    if len(ids) != 1:
        raise BadRequest("give exactly one of 'request_id', 'review_id', 'job_id'",
                         param="request_id")
    id_name = ids[0]
    id_value = body[id_name]
    if not isinstance(id_value, str) or not id_value or len(id_value) > 200:
        raise BadRequest(f"'{id_name}' must be a non-empty string", param=id_name)
    if not any(body.get(n) is not None for n in _SAYS):
        raise BadRequest("say something: one of 'thumbs', 'score', 'comment', "
                         "'corrected_output', 'outcome'", param="thumbs")
    service = _service(rt)
    not_found = NotFound(f"Unknown {id_name.replace('_', ' ')} '{id_value}'.", param=id_name,
                         code="not_found")
    try:
        if id_name == "job_id":
            subject = await _job_subject(rt, id_value, principal)
        else:
            try:
                subject = await service.subject(**{id_name: id_value})
            except NotFoundError:
                if id_name != "request_id":
                    raise
                # feedback right after the call: its audit row may still be in this
                # gateway's batch (or committed just after the first look); write the
                # batch and look again
                await rt.audit.flush(timeout=5.0)
                subject = await service.subject(request_id=id_value)
    except NotFoundError:
        raise not_found from None
    except InvalidInput as exc:
        raise BadRequest(str(exc), param=id_name) from None
    if not may_give_feedback(subject, principal):
        raise not_found  # another team's call: do not reveal that it exists
    says_only_outcome = body.get("outcome") is not None and not any(
        body.get(n) is not None for n in _SAYS if n != "outcome")
    try:
        row = await service.record(
            "outcome" if says_only_outcome else "feedback",
            subject=subject, source="api",
            given_by=principal.key_name or principal.key_id,
            thumbs=body.get("thumbs"), score=body.get("score"), comment=body.get("comment"),
            corrected_output=body.get("corrected_output"), outcome=body.get("outcome"),
            task=body.get("task"), prompt_version=body.get("prompt_version"),
            contract_version=body.get("contract_version"), input=body.get("input"),
            output=body.get("output"), refused=body.get("refused"),
        )
    except InvalidInput as exc:
        raise BadRequest(str(exc), code="invalid_value") from None
    return json_response(row.as_dict(), status=201)


@router.get("/v1/feedback/quality")
async def quality(request: Request) -> Response:
    rt = await _admin(request)
    q = request.query_params
    since = parse_since(q["since"]) if q.get("since") else None
    rows = await quality_report(
        _service(rt).engine, since=since, task=q.get("task") or None,
        model=q.get("model") or None, deployment=q.get("deployment") or None,
        outcome=q.get("outcome") or None,
    )
    return json_response({"object": "list", "data": rows})
