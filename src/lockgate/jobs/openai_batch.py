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

Review: a chat line whose task (its body's ``metadata.task``, else the batch's
``metadata.task``) has a review policy is reviewed like a ``/v1/chat/completions`` call
(:func:`lockgate.review.chat_gate.gate_chat`). A line that needs a person is stored as a
review item (``source = "openai_batch"``, id derived from the batch and ``custom_id``) and
*parks*: it has no result line yet and the batch stays ``in_progress``. After the decision
the review service's resumer (:meth:`OpenAIBatchService.resume_row`, registered by the
runtime) writes the line exactly once — approved/edited: status 200 with the (corrected)
answer; rejected: an error line ``review_rejected`` with the reason — each with a
``review`` field, and completes the batch when it was the last line. A re-delivered batch
job finds its items instead of asking the model again. Parked lines still undecided when the
window closes expire like any unfinished line.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.errors import BadRequest, Forbidden, GatewayError
from lockgate.guards.contracts import ContractRegistry
from lockgate.jobs.batch_records import MAX_FILE_BYTES, BatchRecords, owner_of, public
from lockgate.jobs.model import Job, NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import SYSTEM_PRINCIPAL
from lockgate.jobs.worker import Handler, principal_from_meta, principal_to_meta
from lockgate.pipeline import Call, Principal, Result, contract_for
from lockgate.pipeline.call import CallKind
from lockgate.review import ReviewItem, ReviewNotFound, ReviewService
from lockgate.review.chat_gate import gate_chat, task_of
from lockgate.settings.review import ReviewPolicy

__all__ = [
    "BATCH_TASK",
    "ENDPOINTS",
    "MAX_FILE_BYTES",
    "REVIEW_SOURCE",
    "WINDOWS",
    "BatchPipeline",
    "OpenAIBatchService",
    "batch_aware_handler",
    "decided_line",
    "review_id_for_line",
]

BATCH_TASK = "openai_batch"
REVIEW_SOURCE = "openai_batch"
"""``source`` of the review items of batch lines (and the resumer's key)."""
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
    async def chat(self, call: Call) -> Result: ...

    async def embeddings(self, call: Call) -> Result: ...


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
    review: ReviewService | None = None
    """Set by the runtime: chat lines of a reviewed task park for a person."""
    contracts: ContractRegistry | None = None
    """Set by the runtime: the contracts a reviewed line's item is validated against."""

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
        if record["status"] in ("validating", "in_progress") and (
            time.time() >= record["expires_at"]
        ):
            # no worker started or finished it within its window (lines parked for review
            # and still undecided, say): it expires, keeping what it has
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

        record = await self.records.change(batch_id, to_cancelling)
        if record["status"] == "cancelling" and record.get("_waiting_review"):
            # the worker's pass is over (only lines parked for review are left): nobody
            # else would notice the cancel, so it takes effect now
            record = await self._finalize(batch_id)
        return public(record)

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
        return public(await self._finalize(batch_id, worker_done=True))

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
                    task=batch_task,
                )
                ok = True
                try:
                    reviewed = self._policy_of(call) if kind == "chat" else None
                    if reviewed is not None:
                        out = await self._review_line(
                            pipeline, call, reviewed, principal, batch_id, line_no,
                            req["custom_id"],
                        )
                        if out is None:  # parked for a person: no result line yet
                            return
                        line, ok = out
                    else:
                        comp = await (
                            pipeline.chat(call) if kind == "chat" else pipeline.embeddings(call)
                        )
                        line = _ok_line(rid, req["custom_id"], comp.body)
                except GatewayError as exc:
                    ok = False
                    line = _error_line(rid, req["custom_id"], exc)
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

        meta = record.get("metadata")
        batch_task = meta.get("task") if isinstance(meta, dict) else None
        batch_task = batch_task if isinstance(batch_task, str) and batch_task else None
        todo = [(n, req) for n, req in enumerate(lines) if req["custom_id"] not in done]
        try:
            async with asyncio.timeout(max(0.0, record["expires_at"] - time.time())):
                await asyncio.gather(*(one(n, req) for n, req in todo))
        except TimeoutError:  # the completion window closed: _finalize expires the batch
            pass

    # ------------------------------------------------------------ review of lines

    def _policy_of(self, call: Call) -> tuple[str, ReviewPolicy] | None:
        review = self.review
        if review is None or not review.settings.policies:
            return None
        task = task_of(call)
        policy = review.policy_for(task)
        return (task, policy) if task is not None and policy is not None else None

    async def _review_line(
        self, pipeline: BatchPipeline, call: Call, reviewed: tuple[str, ReviewPolicy],
        principal: Principal, batch_id: str, line_no: int, custom_id: str,
    ) -> tuple[dict[str, Any], bool] | None:
        """The line's result under its task's review policy, or None: parked."""
        review = self.review
        assert review is not None
        task, policy = reviewed
        item_id = review_id_for_line(batch_id, custom_id)
        try:
            existing: ReviewItem | None = await review.repo.get(item_id)
        except ReviewNotFound:
            existing = None
        if existing is not None:  # a re-delivered batch job: the item is there already
            return None if not existing.decided else decided_line(existing, call.request_id)
        contract = contract_for(call.body, self.contracts)
        gate = await gate_chat(
            pipeline.chat, review, call, task, policy, principal=principal,
            source=REVIEW_SOURCE, source_ref=f"{batch_id}:{line_no}:{custom_id}",
            contract=dict(contract.schema) if contract is not None else None,
        )
        if gate.item is not None and gate.verdict.review:
            gate.item.id = item_id
            await review.submit(gate.item)
            return None
        if gate.item is not None:
            review.record_auto(gate.item)
        assert gate.result is not None
        return _ok_line(call.request_id, custom_id, gate.result.body), True

    async def resume_row(self, item: ReviewItem) -> None:
        """The review service's resumer for ``source = "openai_batch"``: write the decided
        line (once: a stored line is kept) and complete the batch if it was the last."""
        batch_id, _, rest = (item.source_ref or "").partition(":")
        line_no, _, custom_id = rest.partition(":")
        if not batch_id or not line_no.isdigit():
            return
        line, ok = decided_line(item, "batch_req_" + uuid.uuid4().hex)
        await self.records.add_results([{
            "batch_id": batch_id, "custom_id": custom_id, "line_no": int(line_no), "ok": ok,
            "line": orjson.dumps(line).decode(),
        }])
        await self._finalize(batch_id)

    async def _finalize(self, batch_id: str, *, worker_done: bool = False) -> dict[str, Any]:
        """Decide the final status under the row lock and publish the result files.

        Lines still parked for review (unfinished, window open, not cancelled) keep the
        batch ``in_progress``; the resumer of the last decision calls this again."""
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
            if (
                rec["status"] != "cancelling" and finished < total
                and time.time() < rec["expires_at"]
            ):
                ok_n, _ = sizes.get(True, (0, 0))
                bad_n, _ = sizes.get(False, (0, 0))
                rec["request_counts"] = {"total": total, "completed": ok_n, "failed": bad_n}
                if worker_done:
                    rec["_waiting_review"] = True
                await self.records.save(conn, rec)
                return rec
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


def review_id_for_line(batch_id: str, custom_id: str) -> str:
    """The review item id of one batch line (stable across re-deliveries of the batch)."""
    return "rev_" + hashlib.sha256(f"openai_batch:{batch_id}:{custom_id}".encode()).hexdigest()[:32]


def _ok_line(rid: str, custom_id: str, body: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": rid, "body": body},
        "error": None,
    }


def _error_line(rid: str, custom_id: str, exc: GatewayError) -> dict[str, Any]:
    return {
        "id": rid,
        "custom_id": custom_id,
        "response": {"status_code": exc.status, "request_id": rid, "body": exc.body()},
        "error": {"code": exc.error_class, "message": exc.message},
    }


def decided_line(item: ReviewItem, rid: str) -> tuple[dict[str, Any], bool]:
    """A batch result line from a reviewer's decision (and whether it is a success)."""
    review = {"id": item.id, "state": item.state, "decided_by": item.decided_by,
              "decided_at": item.decided_at}
    custom_id = (item.source_ref or "").split(":", 2)[-1]
    if item.state == "rejected":
        reason = (item.decision or {}).get("reason", "")
        exc = Forbidden(f"A reviewer rejected this answer: {reason}", code="review_rejected")
        line = _error_line(rid, custom_id, exc)
        line["error"]["code"] = "review_rejected"
        return {**line, "review": review}, False
    completion = item.public_with_answer(time.time())["completion"]
    return {**_ok_line(rid, custom_id, completion), "review": review}, True


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
