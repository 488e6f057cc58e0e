"""Batch runs: a file of records through a task, resumable without duplicates.

``run_batch`` reads JSONL or CSV records, runs the task on each (bounded
concurrency, transient errors retried with backoff), appends one JSON line per
record to the output file and failed records (with the reason) to the rejects
file. The two files *are* the checkpoint: each line names its record index and
is written with one ``write`` + flush, so a run killed at any point is resumed
by reading them back (a torn last line is cut off first) and skipping every
record already present — nothing is redone and nothing appears twice.
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lockgate.governance.estimate import tokens_for_text
from lockgate.jobs.model import backoff_delay
from lockgate.jobs.tasks import TaskRunner, render
from lockgate.jobs.taskspec import task_chain
from lockgate.jobs.worker import classify_error
from lockgate.pipeline.call import Principal
from lockgate.settings.jobs import TaskSpec

__all__ = [
    "BatchSummary",
    "done_indexes",
    "estimate_record_tokens",
    "read_records",
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

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
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
) -> BatchSummary:
    """Run ``task`` over every record not yet in ``out_path``/``rejects_path``."""
    spec = runner.spec(task)
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

    async def one(index: int, record: Any) -> None:
        key = record.get(id_field) if isinstance(record, dict) else None
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    res = await runner.run(
                        task, record, principal=principal, request_id=f"batch-{index}"
                    )
                    break
                except Exception as exc:
                    message, permanent, retry_in = classify_error(exc)
                    if permanent or attempt >= spec.max_attempts:
                        raise
                    await asyncio.sleep(max(retry_in, backoff_delay(attempt, base=retry_base)))
        except Exception as exc:
            message, _, _ = classify_error(exc)
            write(rej, {"index": index, "id": key, "error": message, "input": record})
            summary.failed += 1
            kind = message.split(":", 1)[0]
            summary.errors[kind] = summary.errors.get(kind, 0) + 1
        else:
            write(
                out,
                {"index": index, "id": key, "output": res.output, "confidence": res.confidence},
            )
            summary.done += 1
            summary.prompt_tokens += res.prompt_tokens
            summary.completion_tokens += res.completion_tokens
            if price is not None:
                summary.cost += price(res.prompt_tokens, res.completion_tokens)
        if on_progress is not None:
            on_progress(summary)

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
    finally:
        for t in pending:
            t.cancel()
        out.close()
        rej.close()
    summary.seconds = time.perf_counter() - started
    return summary
