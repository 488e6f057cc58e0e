"""The OpenAI Batch API shape (``/v1/files``, ``/v1/batches``) on lockgate's job queue.

The HTTP adapter (:mod:`lockgate.api.jobs`) maps routes onto :class:`OpenAIBatchService`:

* ``POST /v1/files`` (purpose ``batch``) -> ``files.create``; ``GET /v1/files``,
  ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
* ``POST /v1/batches`` -> ``create_batch`` (validates every line, queues one durable job);
  ``GET /v1/batches/{id}``, ``GET /v1/batches``, ``POST /v1/batches/{id}/cancel``.

A worker runs the batch (``execute``): each input line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions"|"/v1/embeddings", "body"}``
goes through the gateway pipeline as the submitter, and lands in the output file
(``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``)
or the error file (``{"id", "custom_id", "response": null|{...}, "error": {"code", "message"}}``).
The output and error files are the checkpoint (as in :mod:`lockgate.jobs.batch`): a worker
killed mid-batch leaves the job to be re-delivered, and the next run skips every
``custom_id`` already written — no line is sent twice to the model or written twice.

Files and batch records live under one directory (default ``<home>/batches``); with
several gateway hosts that directory must be shared storage. Partial: no 24 h expiry
enforcement (``completion_window`` is recorded, not enforced).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.jobs.batch import _repair
from lockgate.jobs.model import Job, NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import SYSTEM_PRINCIPAL
from lockgate.jobs.worker import Handler, principal_from_meta, principal_to_meta
from lockgate.pipeline import Call, Completion, Principal
from lockgate.pipeline.call import CallKind

__all__ = [
    "BATCH_TASK",
    "ENDPOINTS",
    "BatchPipeline",
    "BatchStore",
    "FileStore",
    "OpenAIBatchService",
    "batch_aware_handler",
]

BATCH_TASK = "openai_batch"
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_LINES = 50_000


class BatchPipeline(Protocol):
    async def chat(self, call: Call) -> Completion: ...

    async def embeddings(self, call: Call) -> Completion: ...


class _NotFound(NotFound):
    code = "not_found"


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + f".{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_bytes(orjson.dumps(obj))
    os.replace(tmp, path)


def _owner_ok(record: dict[str, Any], principal: Principal | None) -> bool:
    if principal is None or principal.is_master:
        return True
    owner = record.get("_owner") or {}
    return owner.get("key_id") == principal.key_id or (
        principal.team_id is not None and owner.get("team_id") == principal.team_id
    )


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


class FileStore:
    """OpenAI file objects: content in ``<root>/files/<id>``, metadata beside it."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "files"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _meta(self, file_id: str) -> Path:
        if not file_id.startswith("file-") or "/" in file_id or ".." in file_id:
            raise _NotFound(f"No such File object: {file_id}", param="file_id")
        return self.dir / f"{file_id}.json"

    def path(self, file_id: str) -> Path:
        self._meta(file_id)
        return self.dir / f"{file_id}.data"

    def create(
        self, data: bytes, *, filename: str, purpose: str, principal: Principal | None = None
    ) -> dict[str, Any]:
        if len(data) > MAX_FILE_BYTES:
            raise BadRequest(f"file is larger than {MAX_FILE_BYTES} bytes", param="file")
        file_id = "file-" + uuid.uuid4().hex
        self.path(file_id).write_bytes(data)
        return self.register(file_id, filename=filename, purpose=purpose, principal=principal)

    def register(
        self, file_id: str, *, filename: str, purpose: str, principal: Principal | None = None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": file_id,
            "object": "file",
            "bytes": self.path(file_id).stat().st_size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "_owner": principal_to_meta(principal)["principal"] if principal else None,
        }
        _write_json(self._meta(file_id), record)
        return _public(record)

    def _record(self, file_id: str, principal: Principal | None) -> dict[str, Any]:
        meta = self._meta(file_id)
        if not meta.exists():
            raise _NotFound(f"No such File object: {file_id}", param="file_id")
        record: dict[str, Any] = orjson.loads(meta.read_bytes())
        if not _owner_ok(record, principal):
            raise _NotFound(f"No such File object: {file_id}", param="file_id")
        return record

    def get(self, file_id: str, principal: Principal | None = None) -> dict[str, Any]:
        return _public(self._record(file_id, principal))

    def content(self, file_id: str, principal: Principal | None = None) -> bytes:
        self._record(file_id, principal)
        return self.path(file_id).read_bytes()

    def list(
        self, principal: Principal | None = None, purpose: str | None = None
    ) -> list[dict[str, Any]]:
        """The caller's files, newest first (optionally of one ``purpose``)."""
        records = []
        for meta in self.dir.glob("file-*.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                rec = orjson.loads(meta.read_bytes())
                if _owner_ok(rec, principal) and (purpose is None or rec["purpose"] == purpose):
                    records.append(rec)
        records.sort(key=lambda r: (r.get("created_at", 0), r["id"]), reverse=True)
        return [_public(r) for r in records]

    def delete(self, file_id: str, principal: Principal | None = None) -> dict[str, Any]:
        self._record(file_id, principal)
        for p in (self.path(file_id), self._meta(file_id)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return {"id": file_id, "object": "file", "deleted": True}


class BatchStore:
    """Batch records as JSON files (atomic replace on every update)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "batches"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, batch_id: str) -> Path:
        if not batch_id.startswith("batch_") or "/" in batch_id or ".." in batch_id:
            raise _NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return self.dir / f"{batch_id}.json"

    def load(self, batch_id: str, principal: Principal | None = None) -> dict[str, Any]:
        path = self._path(batch_id)
        if not path.exists():
            raise _NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        record: dict[str, Any] = orjson.loads(path.read_bytes())
        if not _owner_ok(record, principal):
            raise _NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return record

    def save(self, record: dict[str, Any]) -> None:
        _write_json(self._path(record["id"]), record)

    def update(self, batch_id: str, **fields: Any) -> dict[str, Any]:
        record = self.load(batch_id)
        record.update(fields)
        self.save(record)
        return record

    def list(self, principal: Principal | None = None, limit: int = 20) -> list[dict[str, Any]]:
        records = []
        for path in self.dir.glob("batch_*.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                rec = orjson.loads(path.read_bytes())
                if _owner_ok(rec, principal):
                    records.append(rec)
        records.sort(key=lambda r: r.get("created_at", 0), reverse=True)
        return [_public(r) for r in records[:limit]]


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
    def __init__(self, root: Path, queue: JobQueue) -> None:
        self.files = FileStore(root)
        self.batches = BatchStore(root)
        self.queue = queue

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
        if completion_window != "24h":
            raise BadRequest("completion_window must be 24h", param="completion_window")
        data = self.files.content(input_file_id, principal)
        total = _check_lines(data, endpoint)
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
            "expires_at": now + 24 * 3600,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": total, "completed": 0, "failed": 0},
            "metadata": metadata,
            "_owner": principal_to_meta(principal)["principal"] if principal else None,
        }
        self.batches.save(record)
        await self.queue.enqueue(
            NewJob(
                task=BATCH_TASK,
                input={"batch_id": batch_id},
                idempotency_key=batch_id,
                max_attempts=5,
                meta=principal_to_meta(principal) if principal else {},
            )
        )
        return _public(record)

    def get(self, batch_id: str, principal: Principal | None = None) -> dict[str, Any]:
        return _public(self.batches.load(batch_id, principal))

    def list(self, principal: Principal | None = None, limit: int = 20) -> dict[str, Any]:
        data = self.batches.list(principal, limit)
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }

    def cancel(self, batch_id: str, principal: Principal | None = None) -> dict[str, Any]:
        record = self.batches.load(batch_id, principal)
        if record["status"] in ("validating", "in_progress"):
            record = self.batches.update(
                batch_id, status="cancelling", cancelling_at=int(time.time())
            )
        return _public(record)

    # ------------------------------------------------------------ execution (worker side)

    async def execute(
        self, pipeline: BatchPipeline, batch_id: str, principal: Principal, concurrency: int = 8
    ) -> dict[str, Any]:
        record = self.batches.load(batch_id)
        if record["status"] in ("completed", "failed", "cancelled", "expired"):
            return _public(record)
        if record["status"] == "cancelling":
            return _public(self._finish(record, "cancelled"))
        record = self.batches.update(
            batch_id,
            status="in_progress",
            in_progress_at=record["in_progress_at"] or int(time.time()),
        )
        out_id = record["output_file_id"] or "file-" + uuid.uuid4().hex
        err_id = record["error_file_id"] or "file-" + uuid.uuid4().hex
        record = self.batches.update(batch_id, output_file_id=out_id, error_file_id=err_id)
        out_path, err_path = self.files.path(out_id), self.files.path(err_id)
        done: set[str] = set()
        counts = {"completed": 0, "failed": 0}
        for path, key in ((out_path, "completed"), (err_path, "failed")):
            _repair(path)
            if path.exists():
                for line in path.read_bytes().splitlines():
                    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                        done.add(orjson.loads(line)["custom_id"])
                        counts[key] += 1
        lines = [
            orjson.loads(x)
            for x in self.files.path(record["input_file_id"]).read_bytes().splitlines()
            if x.strip()
        ]
        out = out_path.open("ab")
        err = err_path.open("ab")
        sem = asyncio.Semaphore(max(1, concurrency))
        kind: CallKind = "chat" if record["endpoint"] == ENDPOINTS[0] else "embeddings"
        cancelled = False

        def write(f: Any, obj: dict[str, Any]) -> None:
            f.write(orjson.dumps(obj) + b"\n")
            f.flush()
            os.fsync(f.fileno())

        async def one(req: dict[str, Any]) -> None:
            nonlocal cancelled
            async with sem:
                if cancelled:
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
                try:
                    comp = await (
                        pipeline.chat(call) if kind == "chat" else pipeline.embeddings(call)
                    )
                except GatewayError as exc:
                    write(
                        err,
                        {
                            "id": rid,
                            "custom_id": req["custom_id"],
                            "response": {
                                "status_code": exc.status,
                                "request_id": rid,
                                "body": exc.body(),
                            },
                            "error": {"code": exc.error_class, "message": exc.message},
                        },
                    )
                    counts["failed"] += 1
                    return
                write(
                    out,
                    {
                        "id": rid,
                        "custom_id": req["custom_id"],
                        "response": {"status_code": 200, "request_id": rid, "body": comp.body},
                        "error": None,
                    },
                )
                counts["completed"] += 1
                if (counts["completed"] + counts["failed"]) % 50 == 0:
                    rec = self.batches.update(
                        batch_id, request_counts={"total": len(lines), **counts}
                    )
                    cancelled = rec["status"] == "cancelling"

        try:
            await asyncio.gather(*(one(r) for r in lines if r["custom_id"] not in done))
        finally:
            out.close()
            err.close()
        self.batches.update(batch_id, request_counts={"total": len(lines), **counts})
        for fid, path, name in ((out_id, out_path, "output"), (err_id, err_path, "errors")):
            if path.exists():
                self.files.register(
                    fid,
                    filename=f"{batch_id}_{name}.jsonl",
                    purpose="batch_output",
                    principal=principal,
                )
        record = self.batches.load(batch_id)
        if cancelled or record["status"] == "cancelling":
            return _public(self._finish(record, "cancelled"))
        self.batches.update(batch_id, status="finalizing", finalizing_at=int(time.time()))
        return _public(self._finish(self.batches.load(batch_id), "completed"))

    def _finish(self, record: dict[str, Any], status: str) -> dict[str, Any]:
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "failed": "failed_at"}
        return self.batches.update(record["id"], status=status, **{stamp[status]: int(time.time())})


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
