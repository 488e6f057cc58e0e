"""The OpenAI Batch API shape (``/v1/files``, ``/v1/batches``) on lockgate's job queue.

The HTTP adapter (:mod:`lockgate.api.jobs`) maps routes onto :class:`OpenAIBatchService`:

* ``POST /v1/files`` (purpose ``batch``) -> ``create_file``; ``GET /v1/files``,
  ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
* ``POST /v1/batches`` -> ``create_batch`` (validates every line, queues one durable job);
  ``GET /v1/batches/{id}``, ``GET /v1/batches``, ``POST /v1/batches/{id}/cancel``.

A worker runs the batch (``execute``): each input line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions"|"/v1/embeddings", "body"}``
goes through the gateway pipeline as the submitter, and lands in the output file
(``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``)
or the error file (``{"id", "custom_id", "response": null|{...}, "error": {"code", "message"}}``).

Files, batch records and result lines live in the store (:mod:`lockgate.jobs.batch_records`),
so any gateway serves any batch. Result lines are the checkpoint: a worker killed mid-batch
leaves the job to be re-delivered, and the next run skips every ``custom_id`` already stored —
no line is sent twice to the model or written twice. Status changes take the batch's row
lock, so a cancel racing the worker is never lost.

``completion_window`` (``24h``, the only value OpenAI accepts) is enforced as OpenAI does:
a batch not finished by ``expires_at`` stops, becomes ``expired`` (``expired_at``), keeps
the results it has in its output/error files, and lists each unfinished request in the
error file with code ``batch_expired``. A batch no worker started before then expires
when it is next read or picked up. A cancelled batch keeps its partial results too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.errors import BadRequest, GatewayError
from lockgate.jobs.batch_records import MAX_FILE_BYTES, BatchRecords, owner_of, public
from lockgate.jobs.model import Job, NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import SYSTEM_PRINCIPAL
from lockgate.jobs.worker import Handler, principal_from_meta, principal_to_meta
from lockgate.pipeline import Call, Completion, Principal
from lockgate.pipeline.call import CallKind

__all__ = [
    "BATCH_TASK",
    "ENDPOINTS",
    "MAX_FILE_BYTES",
    "WINDOWS",
    "BatchPipeline",
    "OpenAIBatchService",
    "batch_aware_handler",
]

BATCH_TASK = "openai_batch"
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
MAX_LINES = 50_000
WINDOWS = {"24h": 24 * 3600}
"""Accepted ``completion_window`` values and their length in seconds."""
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
PROGRESS_EVERY = 50
"""Lines between progress saves (request counts; a pending cancel is noticed then)."""
EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


class BatchPipeline(Protocol):
    async def chat(self, call: Call) -> Completion: ...

    async def embeddings(self, call: Call) -> Completion: ...


def _check_lines(data: bytes, endpoint: str) -> int:
    """Validate a batch input file; BadRequest names the first bad line."""
    seen: set[str] = set()
    n = 0
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        n += 1
        if n > MAX_LINES:
            raise BadRequest(f"batch input has more than {MAX_LINES} requests")
        try:
            req = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadRequest(f"line {lineno}: not valid JSON", param="input_file_id") from None
        if not isinstance(req, dict) or not isinstance(req.get("custom_id"), str):
            raise BadRequest(f"line {lineno}: needs a string custom_id", param="input_file_id")
        if req["custom_id"] in seen:
            raise BadRequest(
                f"line {lineno}: duplicate custom_id {req['custom_id']!r}", param="input_file_id"
            )
        seen.add(req["custom_id"])
        if req.get("method", "POST") != "POST" or req.get("url") != endpoint:
            raise BadRequest(
                f"line {lineno}: method must be POST and url {endpoint}", param="input_file_id"
            )
        body = req.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise BadRequest(f"line {lineno}: body needs a model", param="input_file_id")
    if n == 0:
        raise BadRequest("batch input file is empty", param="input_file_id")
    return n


class OpenAIBatchService:
    def __init__(self, engine: AsyncEngine, queue: JobQueue, *, max_attempts: int = 5) -> None:
        self.records = BatchRecords(engine)
        self.queue = queue
        self.max_attempts = max_attempts

    # ------------------------------------------------------------ files

    async def create_file(
        self, data: bytes, *, filename: str, purpose: str, principal: Principal | None = None
    ) -> dict[str, Any]:
        return await self.records.create_file(
            data, filename=filename, purpose=purpose, principal=principal
        )

    async def get_file(self, file_id: str, principal: Principal | None = None) -> dict[str, Any]:
        return await self.records.get_file(file_id, principal)

    async def file_content(self, file_id: str, principal: Principal | None = None) -> bytes:
        return await self.records.content(file_id, principal)

    async def list_files(
        self, principal: Principal | None = None, purpose: str | None = None
    ) -> list[dict[str, Any]]:
        return await self.records.list_files(principal, purpose)

    async def delete_file(self, file_id: str, principal: Principal | None = None) -> dict[str, Any]:
        return await self.records.delete_file(file_id, principal)

    # ------------------------------------------------------------ batches

    async def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        if endpoint not in ENDPOINTS:
            raise BadRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        if completion_window not in WINDOWS:
            raise BadRequest("completion_window must be 24h", param="completion_window")
        data = await self.records.content(input_file_id, principal)
        total = await asyncio.to_thread(_check_lines, data, endpoint)
        now = int(time.time())
        batch_id = "batch_" + uuid.uuid4().hex
        record: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": completion_window,
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + WINDOWS[completion_window],
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": total, "completed": 0, "failed": 0},
            "metadata": metadata,
            "_owner": owner_of(principal),
        }
        await self.records.insert_batch(record)
        await self.queue.enqueue(
            NewJob(
                task=BATCH_TASK,
                input={"batch_id": batch_id},
                idempotency_key=batch_id,
                max_attempts=self.max_attempts,
                meta=principal_to_meta(principal) if principal else {},
            )
        )
        return public(record)

    async def get(self, batch_id: str, principal: Principal | None = None) -> dict[str, Any]:
        record = await self.records.load(batch_id, principal)
        if record["status"] == "validating" and time.time() >= record["expires_at"]:
            # no worker started it within its window: it expires (with nothing to show)
            record = await self._finalize(batch_id)
        return public(record)

    async def list_records(self, principal: Principal | None = None) -> list[dict[str, Any]]:
        """The caller's batches, newest first."""
        return await self.records.list_batches(principal)

    async def list_page(
        self, principal: Principal | None = None, limit: int = 20
    ) -> dict[str, Any]:
        data = (await self.list_records(principal))[:limit]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }

    async def cancel(self, batch_id: str, principal: Principal | None = None) -> dict[str, Any]:
        await self.records.load(batch_id, principal)  # 404 unless the caller's

        def to_cancelling(record: dict[str, Any]) -> bool:
            if record["status"] not in ("validating", "in_progress"):
                return False  # finalizing or finished: too late, returned as it is
            record["status"] = "cancelling"
            record["cancelling_at"] = int(time.time())
            return True

        return public(await self.records.change(batch_id, to_cancelling))

    # ------------------------------------------------------------ execution (worker side)

    async def execute(
        self, pipeline: BatchPipeline, batch_id: str, principal: Principal, concurrency: int = 8
    ) -> dict[str, Any]:
        record = await self.records.load(batch_id)
        if record["status"] in TERMINAL:
            return public(record)

        def begin(rec: dict[str, Any]) -> bool:
            if rec["status"] != "validating" or time.time() >= rec["expires_at"]:
                return False
            rec["status"] = "in_progress"
            rec["in_progress_at"] = rec["in_progress_at"] or int(time.time())
            return True

        record = await self.records.change(batch_id, begin)
        if record["status"] == "in_progress" and time.time() < record["expires_at"]:
            await self._run_lines(pipeline, record, principal, concurrency)
        return public(await self._finalize(batch_id))

    async def _input_lines(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        data = await self.records.content(record["input_file_id"])
        return [orjson.loads(x) for x in data.splitlines() if x.strip()]

    async def _run_lines(
        self,
        pipeline: BatchPipeline,
        record: dict[str, Any],
        principal: Principal,
        concurrency: int,
    ) -> None:
        batch_id = record["id"]
        done = await self.records.done(batch_id)
        counts = {
            "completed": sum(1 for ok in done.values() if ok),
            "failed": sum(1 for ok in done.values() if not ok),
        }
        lines = await self._input_lines(record)
        sem = asyncio.Semaphore(max(1, concurrency))
        kind: CallKind = "chat" if record["endpoint"] == ENDPOINTS[0] else "embeddings"
        stop = False
        since_save = 0

        def progress(rec: dict[str, Any]) -> bool:
            rec["request_counts"] = {"total": len(lines), **counts}
            return True

        async def one(line_no: int, req: dict[str, Any]) -> None:
            nonlocal stop, since_save
            async with sem:
                if stop:
                    return
                rid = "batch_req_" + uuid.uuid4().hex
                body = dict(req["body"])
                body.pop("stream", None)
                call = Call(
                    kind=kind,
                    model=body["model"],
                    body=body,
                    principal=principal,
                    source="batch",
                    request_id=rid,
                )
                ok = True
                try:
                    comp = await (
                        pipeline.chat(call) if kind == "chat" else pipeline.embeddings(call)
                    )
                    line: dict[str, Any] = {
                        "id": rid,
                        "custom_id": req["custom_id"],
                        "response": {"status_code": 200, "request_id": rid, "body": comp.body},
                        "error": None,
                    }
                except GatewayError as exc:
                    ok = False
                    line = {
                        "id": rid,
                        "custom_id": req["custom_id"],
                        "response": {
                            "status_code": exc.status,
                            "request_id": rid,
                            "body": exc.body(),
                        },
                        "error": {"code": exc.error_class, "message": exc.message},
                    }
                await self.records.add_results([{
                    "batch_id": batch_id,
                    "custom_id": req["custom_id"],
                    "line_no": line_no,
                    "ok": ok,
                    "line": orjson.dumps(line).decode(),
                }])
                counts["completed" if ok else "failed"] += 1
                since_save += 1
                if since_save >= PROGRESS_EVERY:
                    since_save = 0
                    rec = await self.records.change(batch_id, progress)
                    stop = stop or rec["status"] == "cancelling"

        todo = [(n, req) for n, req in enumerate(lines) if req["custom_id"] not in done]
        try:
            async with asyncio.timeout(max(0.0, record["expires_at"] - time.time())):
                await asyncio.gather(*(one(n, req) for n, req in todo))
        except TimeoutError:  # the completion window closed: _finalize expires the batch
            pass

    async def _finalize(self, batch_id: str) -> dict[str, Any]:
        """Decide the final status under the row lock and publish the result files."""
        lines: list[dict[str, Any]] | None = None
        record = await self.records.load(batch_id)
        if record["status"] in TERMINAL:
            return record
        if time.time() >= record["expires_at"]:
            lines = await self._input_lines(record)
        async with self.records.locked(batch_id) as (conn, rec):
            if rec["status"] in TERMINAL:
                return rec
            now = int(time.time())
            sizes = await self.records.result_sizes(conn, batch_id)
            finished = sum(n for n, _ in sizes.values())
            total = rec["request_counts"]["total"]
            if rec["status"] == "cancelling":
                status = "cancelled"
            elif finished < total and time.time() >= rec["expires_at"]:
                status = "expired"
                done = await self.records.done(batch_id, conn)
                expired = [
                    {
                        "batch_id": batch_id,
                        "custom_id": req["custom_id"],
                        "line_no": n,
                        "ok": False,
                        "line": orjson.dumps({
                            "id": "batch_req_" + uuid.uuid4().hex,
                            "custom_id": req["custom_id"],
                            "response": None,
                            "error": EXPIRED_ERROR,
                        }).decode(),
                    }
                    for n, req in enumerate(lines or [])
                    if req["custom_id"] not in done
                ]
                await self.records.add_results(expired, conn)
                sizes = await self.records.result_sizes(conn, batch_id)
            else:
                status = "completed"
                rec["finalizing_at"] = rec["finalizing_at"] or now
            ok_lines, ok_bytes = sizes.get(True, (0, 0))
            bad_lines, bad_bytes = sizes.get(False, (0, 0))
            owner = rec.get("_owner")
            if ok_lines:
                rec["output_file_id"] = await self.records.register_output(
                    conn, batch_id=batch_id, kind="output", size=ok_bytes, owner=owner
                )
            if bad_lines:
                rec["error_file_id"] = await self.records.register_output(
                    conn, batch_id=batch_id, kind="errors", size=bad_bytes, owner=owner
                )
            rec["request_counts"] = {"total": total, "completed": ok_lines, "failed": bad_lines}
            rec["status"] = status
            rec[f"{status}_at"] = now
            await self.records.save(conn, rec)
            return rec


def batch_aware_handler(
    service: OpenAIBatchService,
    pipeline: BatchPipeline,
    fallback: Handler,
    concurrency: int = 8,
) -> Callable[[Job], Awaitable[Any]]:
    """A worker handler: ``openai_batch`` jobs run the batch, anything else ``fallback``."""

    async def handle(job: Job) -> Any:
        if job.task != BATCH_TASK:
            return await fallback(job)
        principal = principal_from_meta(job.meta) if job.meta else SYSTEM_PRINCIPAL
        rec = await service.execute(pipeline, str(job.input["batch_id"]), principal, concurrency)
        return {
            "batch_id": rec["id"],
            "status": rec["status"],
            "request_counts": rec["request_counts"],
        }

    return handle
