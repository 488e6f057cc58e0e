"""Job routes: ``/v1/jobs`` (async API) and the OpenAI Batch API (``/v1/files``, ``/v1/batches``).

Thin adapters over :class:`lockgate.jobs.submission.JobService` and
:class:`lockgate.jobs.openai_batch.OpenAIBatchService` (kept per process in
``Runtime.jobs``, a :class:`lockgate.runtime.JobsParts`). Every route
authenticates the caller; jobs, files and batches are visible only to their owner's
key or team (the master key sees all). Errors are rendered in the OpenAI error shape.

* ``POST /v1/jobs`` {task, input, idempotency_key?, partition_key?, priority?, webhook_url?}
  (or an ``Idempotency-Key`` header) -> 202 with the job; the same key again returns the
  same job with ``Idempotent-Replayed: true``. 429 + Retry-After when the queue is full.
* ``GET /v1/jobs/{id}`` -> the job (404 unknown, 410 result expired); ``DELETE`` cancels.
* ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files``, ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``.
* ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``,
  ``GET /v1/batches`` (lists newest first, ``limit`` and ``after`` cursor).

Workers (``lockgate worker``) run the jobs and batches; these routes only enqueue and read.
Files and batches live in the store (any gateway sharing it serves them); a job's
``webhook_url`` needs ``jobs.webhook_secret`` (else 400, unless
``jobs.allow_unsigned_webhooks``) and must pass the SSRF guard.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from lockgate.api.request_io import (
    api_key_of,
    capped,
    error_response,
    int_param,
    json_response,
    read_json,
)
from lockgate.errors import BadRequest, GatewayError, NotFound, PayloadTooLarge
from lockgate.formats.json_limits import MAX_JSON_DEPTH, first_too_deep_line
from lockgate.jobs.batch_records import MAX_FILE_BYTES
from lockgate.pipeline.call import Principal
from lockgate.runtime import JobsParts, Runtime

__all__ = ["router"]

router = APIRouter()

_JOB_FIELDS = {"task", "input", "idempotency_key", "partition_key", "priority", "webhook_url"}

PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
"""Job priorities are 32-bit integers (the queue tables store them as INTEGER)."""

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
"""What a job, file or batch id can look like: anything else is unknown (404) without
touching the store or the disk (a 5,000-character id is longer than a file name may be)."""


def _checked_id(value: str, prefix: str, what: str, code: str) -> str:
    if not value.startswith(prefix) or not _ID.fullmatch(value):
        raise NotFound(f"No such {what} object: {value[:200]}", param=f"{what.lower()}_id",
                       code=code)
    return value


def _file_id(value: str) -> str:
    return _checked_id(value, "file-", "File", "not_found")


def _batch_id(value: str) -> str:
    return _checked_id(value, "batch_", "Batch", "not_found")


def _job_id(value: str) -> str:
    return _checked_id(value, "", "Job", "job_not_found")


def _services(request: Request) -> tuple[Runtime, JobsParts]:
    rt: Runtime = request.app.state.runtime
    assert rt.jobs is not None  # the server starts its runtime with the job queue
    return rt, rt.jobs


async def _principal(request: Request, rt: Runtime) -> Principal:
    return await rt.pipeline.authenticate(api_key_of(request))


async def _handle(fn: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await fn()
    except GatewayError as exc:
        return error_response(exc)


def _opt_str(body: dict[str, Any], name: str, max_len: int = 512) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise BadRequest(f"'{name}' must be a non-empty string (at most {max_len} characters)",
                         param=name)
    return value


def _page(records: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """An OpenAI list page: ``limit`` (1..10000, default 20 for batches) after ``after``."""
    limit = int_param(request, "limit", 20, 1, 10_000)
    after = request.query_params.get("after")
    if after:
        ids = [r["id"] for r in records]
        records = records[ids.index(after) + 1:] if after in ids else []
    page = records[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(records) > limit,
    }


# ------------------------------------------------------------------ /v1/jobs


@router.post("/v1/jobs")
async def submit_job(request: Request) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        body = await read_json(request, rt.config.server.max_body_bytes)
        unknown = sorted(set(body) - _JOB_FIELDS)
        if unknown:
            raise BadRequest(f"unknown field '{unknown[0]}'", param=unknown[0])
        task = body.get("task")
        if not isinstance(task, str) or not task:
            raise BadRequest("'task' is required (a task name)", param="task")
        if "input" not in body:
            raise BadRequest("'input' is required", param="input")
        priority = body.get("priority", 0)
        if (not isinstance(priority, int) or isinstance(priority, bool)
                or not PRIORITY_MIN <= priority <= PRIORITY_MAX):
            raise BadRequest(f"'priority' must be an integer from {PRIORITY_MIN} to "
                             f"{PRIORITY_MAX}", param="priority", code="invalid_value")
        idem = _opt_str(body, "idempotency_key") or request.headers.get("idempotency-key")
        res = await jobs.service.submit(
            task,
            body["input"],
            principal=principal,
            idempotency_key=idem or None,
            partition_key=_opt_str(body, "partition_key"),
            priority=priority,
            webhook_url=_opt_str(body, "webhook_url", 2048),
        )
        headers = {"Location": f"/v1/jobs/{res.job.id}"}
        if not res.created:
            headers["Idempotent-Replayed"] = "true"
        return json_response(res.job.public(), status=202, headers=headers)

    return await _handle(go)


@router.get("/v1/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        return json_response((await jobs.service.get(_job_id(job_id), principal)).public())

    return await _handle(go)


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(request: Request, job_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        return json_response((await jobs.service.cancel(_job_id(job_id), principal)).public())

    return await _handle(go)


# ------------------------------------------------------------------ /v1/files


@router.post("/v1/files")
async def create_file(request: Request) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        limit = MAX_FILE_BYTES + 65536  # the file plus the multipart framing
        declared = request.headers.get("content-length")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"File uploads are limited to {MAX_FILE_BYTES} bytes.")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest("Expected a multipart/form-data upload with 'file' and 'purpose'.")
        try:  # counted while it streams in: a chunked upload has no Content-Length
            form = await capped(request, limit, "The upload").form(max_files=1, max_fields=8)
        except (AssertionError, ValueError) as exc:
            raise BadRequest(f"Cannot read the multipart upload: {exc}") from None
        try:
            purpose = form.get("purpose")
            upload = form.get("file")
            if purpose != "batch":
                raise BadRequest("'purpose' must be 'batch' (the only purpose lockgate stores)",
                                 param="purpose")
            if not isinstance(upload, UploadFile):
                raise BadRequest("'file' is required (a file part)", param="file")
            data = await upload.read(MAX_FILE_BYTES + 1)
            filename = upload.filename or "upload.jsonl"
        finally:
            await form.close()
        deep = await asyncio.to_thread(first_too_deep_line, data)
        if deep is not None:
            raise BadRequest(f"line {deep}: JSON nested more than {MAX_JSON_DEPTH} levels deep",
                             param="file", code="json_too_deep")
        record = await jobs.batches.create_file(
            data, filename=filename, purpose="batch", principal=principal
        )
        return json_response(record)

    return await _handle(go)


@router.get("/v1/files")
async def list_files(request: Request) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        purpose = request.query_params.get("purpose")
        data = await jobs.batches.list_files(principal, purpose)
        return json_response(_page(data, request))

    return await _handle(go)


@router.get("/v1/files/{file_id}")
async def get_file(request: Request, file_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        return json_response(await jobs.batches.get_file(_file_id(file_id), principal))

    return await _handle(go)


@router.get("/v1/files/{file_id}/content")
async def get_file_content(request: Request, file_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        data = await jobs.batches.file_content(_file_id(file_id), principal)
        return Response(data, media_type="application/octet-stream")

    return await _handle(go)


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        return json_response(await jobs.batches.delete_file(_file_id(file_id), principal))

    return await _handle(go)


# ------------------------------------------------------------------ /v1/batches


@router.post("/v1/batches")
async def create_batch(request: Request) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        body = await read_json(request, rt.config.server.max_body_bytes)
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise BadRequest("'input_file_id' is required", param="input_file_id")
        if not isinstance(endpoint, str):
            raise BadRequest("'endpoint' is required", param="endpoint")
        window = body.get("completion_window", "24h")
        metadata = body.get("metadata")
        if not isinstance(window, str):
            raise BadRequest("'completion_window' must be a string", param="completion_window")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise BadRequest("'metadata' must map strings to strings", param="metadata")
        record = await jobs.batches.create_batch(
            input_file_id=_file_id(input_file_id),
            endpoint=endpoint,
            completion_window=window,
            metadata=metadata,
            principal=principal,
        )
        return json_response(record)

    return await _handle(go)


@router.get("/v1/batches/{batch_id}")
async def get_batch(request: Request, batch_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        return json_response(await jobs.batches.get(_batch_id(batch_id), principal))

    return await _handle(go)


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        return json_response(await jobs.batches.cancel(_batch_id(batch_id), principal))

    return await _handle(go)


@router.get("/v1/batches")
async def list_batches(request: Request) -> Response:
    async def go() -> Response:
        rt, jobs = _services(request)
        principal = await _principal(request, rt)
        records: list[dict[str, Any]] = await jobs.batches.list_records(principal)
        return json_response(_page(records, request))

    return await _handle(go)
