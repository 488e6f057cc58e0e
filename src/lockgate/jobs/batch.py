"""Batch runs: a file of records through a task, resumable without duplicates.

``run_batch`` reads JSONL or CSV records, runs the task on each (bounded
concurrency, transient errors retried with backoff), appends one JSON line per
record to the output file and failed records (with the reason) to the rejects
file. The two files *are* the checkpoint: each line names its record index and
is written with one ``write`` + flush, so a run killed at any point is resumed
by reading them back (a torn last line is cut off first) and skipping every
record already present — nothing is redone and nothing appears twice.

Review: when the task has a review policy (``review.policies.<task>``) and a service is
given, a record whose answer needs a person is stored as a review item (``source = "batch"``)
and written to neither file: it *awaits review*. Its item id is derived from the output
file, the record's index and its content, so the next run of the same command finds the
item instead of calling the model again: still pending -> still awaiting; decided -> the
approved or edited output goes to the output file (with a ``review`` field), a rejection
to the rejects file, exactly once (the files stay the checkpoint). ``wait_reviews`` keeps
the run waiting that long for the decisions before it returns.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lockgate.governance.estimate import tokens_for_text
from lockgate.jobs.model import backoff_delay
from lockgate.jobs.review_gate import TaskGate, gate_task
from lockgate.jobs.tasks import SYSTEM_PRINCIPAL, TaskResult, TaskRunner, render
from lockgate.jobs.taskspec import task_chain
from lockgate.jobs.worker import classify_error
from lockgate.pipeline.call import Principal
from lockgate.review import ReviewService
from lockgate.settings.jobs import TaskSpec

__all__ = [
    "BatchSummary",
    "done_indexes",
    "estimate_record_tokens",
    "read_records",
    "review_id_for_row",
    "run_batch",
]


@dataclass
class BatchSummary:
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    """Records already in the output/rejects file from an earlier (killed) run."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    awaiting_review: int = 0
    """Records whose answer waits for a person (in neither file yet)."""
    review_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "awaiting_review": self.awaiting_review,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
            "seconds": round(self.seconds, 3),
        }


def read_records(path: Path) -> Iterator[Any]:
    """Records of a ``.jsonl`` (one JSON value a line; blank lines skipped) or ``.csv`` file."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
        return
    with path.open("rb") as fb:
        for n, line in enumerate(fb, 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not valid JSON: {exc}") from None


def _repair(path: Path) -> None:
    """Cut a torn last line (a write interrupted by a kill)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        f.seek(cut)
        f.truncate()


def done_indexes(*paths: Path) -> set[int]:
    """Record indexes already written to the given output/rejects files."""
    seen: set[int] = set()
    for path in paths:
        _repair(path)
        if not path.exists():
            continue
        with path.open("rb") as f:
            for line in f:
                try:
                    seen.add(int(orjson.loads(line)["index"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
    return seen


def estimate_record_tokens(spec: TaskSpec, record: Any) -> tuple[int, int]:
    """(prompt, completion) tokens for one record (:func:`tokens_for_text` per step)."""
    prompt = 0
    steps = task_chain(spec)
    for step in steps:
        try:
            text = render(step.prompt, {"input": record, "steps": {}})
        except Exception:
            text = step.prompt + orjson.dumps(record).decode()
        prompt += tokens_for_text(text) + tokens_for_text(step.system or spec.system or "") + 8
    completion = (spec.max_tokens or 128) * len(steps)
    return prompt, completion


def review_id_for_row(task: str, out_path: Path, index: int, record: Any) -> str:
    """The review item id of one batch record (stable across runs of the same command)."""
    digest = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
    key = f"batch:{task}:{out_path.resolve()}:{index}:{digest}"
    return "rev_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


async def run_batch(
    runner: TaskRunner,
    task: str,
    input_path: Path,
    out_path: Path,
    rejects_path: Path,
    *,
    concurrency: int = 8,
    principal: Principal | None = None,
    id_field: str = "id",
    price: Callable[[int, int], float] | None = None,
    on_progress: Callable[[BatchSummary], None] | None = None,
    retry_base: float = 0.5,
    review: ReviewService | None = None,
    wait_reviews: float = 0.0,
) -> BatchSummary:
    """Run ``task`` over every record not yet in ``out_path``/``rejects_path``."""
    spec = runner.spec(task)
    policy = review.policy_for(task) if review is not None else None
    parked: list[tuple[int, Any]] = []
    summary = BatchSummary()
    started = time.perf_counter()
    done = done_indexes(out_path, rejects_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    sem = asyncio.Semaphore(max(1, concurrency))
    out: IO[bytes] = out_path.open("ab")
    rej: IO[bytes] = rejects_path.open("ab")

    def write(f: IO[bytes], obj: dict[str, Any]) -> None:
        f.write(_line(obj))
        f.flush()
        os.fsync(f.fileno())

    def reject(index: int, key: Any, record: Any, message: str, extra: dict[str, Any]) -> None:
        write(rej, {"index": index, "id": key, "error": message, "input": record, **extra})
        summary.failed += 1
        kind = message.split(":", 1)[0].split(" ", 1)[0]
        summary.errors[kind] = summary.errors.get(kind, 0) + 1

    def deliver(index: int, key: Any, output: Any, confidence: Any, run: TaskResult | None,
                extra: dict[str, Any]) -> None:
        write(out, {"index": index, "id": key, "output": output, "confidence": confidence,
                    **extra})
        summary.done += 1
        if run is not None:
            summary.prompt_tokens += run.prompt_tokens
            summary.completion_tokens += run.completion_tokens
            if price is not None:
                summary.cost += price(run.prompt_tokens, run.completion_tokens)

    async def attempt_once(index: int, record: Any) -> TaskResult | TaskGate:
        if policy is None or review is None:
            return await runner.run(task, record, principal=principal,
                                    request_id=f"batch-{index}")
        return await gate_task(
            runner, review, policy, task, record, principal=principal or SYSTEM_PRINCIPAL,
            item_id=review_id_for_row(task, out_path, index, record), source="batch",
            source_ref=f"{out_path.resolve()}#{index}", request_id=f"batch-{index}",
        )

    def settle(index: int, record: Any, key: Any, res: TaskResult | TaskGate) -> None:
        if isinstance(res, TaskResult):
            deliver(index, key, res.output, res.confidence, res, {})
            return
        if res.parked is not None:
            summary.awaiting_review += 1
            summary.review_ids.append(res.parked)
            parked.append((index, record))
            if res.run is not None:
                summary.prompt_tokens += res.run.prompt_tokens
                summary.completion_tokens += res.run.completion_tokens
                if price is not None:
                    summary.cost += price(res.run.prompt_tokens, res.run.completion_tokens)
            return
        result = res.result if isinstance(res.result, dict) else {}
        extra = {"review": result["review"]} if "review" in result else {}
        if res.error is not None:
            reject(index, key, record, "review_rejected: " + res.error, extra)
        else:
            deliver(index, key, result.get("output"), result.get("confidence"), res.run, extra)

    async def one(index: int, record: Any) -> None:
        key = record.get(id_field) if isinstance(record, dict) else None
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    res = await attempt_once(index, record)
                    break
                except Exception as exc:
                    message, permanent, retry_in = classify_error(exc)
                    if permanent or attempt >= spec.max_attempts:
                        raise
                    await asyncio.sleep(max(retry_in, backoff_delay(attempt, base=retry_base)))
        except Exception as exc:
            message, _, _ = classify_error(exc)
            reject(index, key, record, message, {})
        else:
            settle(index, record, key, res)
        if on_progress is not None:
            on_progress(summary)

    async def await_decision(index: int, record: Any, deadline: float) -> None:
        assert review is not None
        item_id = review_id_for_row(task, out_path, index, record)
        item = await review.wait(item_id, max(0.0, deadline - time.monotonic()))
        if not item.decided:
            return
        summary.awaiting_review -= 1
        summary.review_ids.remove(item_id)
        await one(index, record)  # uses the stored decision: no model call

    async def guarded(index: int, record: Any) -> None:
        try:
            await one(index, record)
        finally:
            sem.release()

    pending: set[asyncio.Task[None]] = set()
    try:
        for index, record in enumerate(read_records(input_path)):
            summary.total += 1
            if index in done:
                summary.skipped += 1
                continue
            await sem.acquire()
            t = asyncio.create_task(guarded(index, record))
            pending.add(t)
            t.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        if parked and wait_reviews > 0:
            deadline = time.monotonic() + wait_reviews
            await asyncio.gather(*(await_decision(i, r, deadline) for i, r in list(parked)))
    finally:
        for t in pending:
            t.cancel()
        out.close()
        rej.close()
    summary.seconds = time.perf_counter() - started
    return summary
