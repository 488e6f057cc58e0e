"""Batch rows meet the review queue: `lockgate batch run` files and `/v1/batches` lines.

A record (or batch line) whose answer the task's policy sends to a person parks: it is in
no result file until the decision, and the decision lands exactly once — without asking the
model again — whether the run is repeated, re-delivered or waiting. Real store (SQLite and
PostgreSQL), the stand-in upstream as the model, the real runtime wiring (resumers).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.jobs.batch import review_id_for_row, run_batch
from lockgate.jobs.openai_batch import review_id_for_line
from lockgate.jobs.worker import Worker
from lockgate.pipeline.call import Principal
from lockgate.review import ReviewNotFound
from lockgate.runtime import Runtime
from lockgate.settings import Config
from lockgate.testing.stub_upstream import StubUpstream
from tests.gateway.conftest import database_url  # noqa: F401  (fixture)
from tests.jobs.test_jobs_worker import run_worker_until, wait_for

SRC = Path(__file__).parent.parent.parent / "src"
SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"},
                                           "amount": {"type": "number"}},
          "required": ["vendor", "amount"]}
REVIEWER = Principal(key_id="k-rev", team_id="t-fin", team_name="finance")
OWNER = Principal(key_id="k-own", team_id="t-own", team_name="ops")
INVOICES = [("a", 50), ("b", 20000), ("c", 30000), ("d", 70)]


def config_dict(stub: StubUpstream, home: Path, db: str) -> dict[str, Any]:
    return {
        "home": str(home), "database_url": db,
        "models": [{"name": "m", "provider": "openai", "base_url": stub.openai_base,
                    "model": "stub", "max_retries": 0}],
        "jobs": {"queue_url": f"sqlite:///{home / 'q.db'}", "poll_interval": 0.02,
                 "default_model": "m",
                 "tasks": [{"name": "invoice", "prompt": "echo:{{input.doc}}",
                            "output_schema": SCHEMA}]},
        "review": {"sweep_interval_s": 0.2, "policies": {"invoice": {
            "when": {"predicates": ["$.amount > 10000"]}, "mode": "async",
            "reviewers": ["finance"]}}},
    }


def doc(vendor: str, amount: int) -> str:
    return orjson.dumps({"vendor": vendor, "amount": amount}).decode()


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def rt(stub: StubUpstream, tmp_path: Path, database_url: str  # noqa: F811
             ) -> AsyncIterator[Runtime]:
    runtime = await Runtime.start(Config.model_validate(
        config_dict(stub, tmp_path / "home", database_url)))
    yield runtime
    await runtime.aclose()


def write_records(path: Path, tag: str) -> None:
    path.write_text("".join(
        orjson.dumps({"id": f"{tag}-{v}", "doc": doc(f"{tag}-{v}", amount)}).decode() + "\n"
        for v, amount in INVOICES))


# ------------------------------------------------------------------ lockgate batch run


async def test_file_batch_parks_rows_and_writes_decisions_once(
    rt: Runtime, stub: StubUpstream, tmp_path: Path
) -> None:
    assert rt.review is not None
    tag = tmp_path.name[-12:]
    src, out, rej = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    write_records(src, tag)
    runner = rt.task_runner("batch")

    first = await run_batch(runner, "invoice", src, out, rej, review=rt.review)
    assert (first.done, first.failed, first.awaiting_review) == (2, 0, 2)
    assert sorted(x["id"] for x in lines(out)) == [f"{tag}-a", f"{tag}-d"]
    assert lines(rej) == []
    calls = stub.stats()["total"]
    assert calls == 4
    records = [orjson.loads(x) for x in src.read_bytes().splitlines()]
    ids = [review_id_for_row("invoice", out, i, records[i]) for i in (1, 2)]
    assert sorted(first.review_ids) == sorted(ids)
    b_item = await rt.review.get(ids[0], REVIEWER)
    assert b_item.source == "batch" and b_item.state == "pending"
    assert b_item.output == {"vendor": f"{tag}-b", "amount": 20000}
    assert b_item.reasons == ["predicate $.amount > 10000"]

    # run again before any decision: still parked, no second item, no model call
    again = await run_batch(runner, "invoice", src, out, rej, review=rt.review)
    assert (again.done, again.skipped, again.awaiting_review) == (0, 2, 2)
    assert stub.stats()["total"] == calls
    for item_id in ids:
        assert (await rt.review.repo.get(item_id)).state == "pending"

    await rt.review.decide(ids[0], REVIEWER, "edit",
                           output={"vendor": f"{tag}-b", "amount": 2000}, has_output=True)
    await rt.review.decide(ids[1], REVIEWER, "reject", reason="duplicate invoice")

    third = await run_batch(runner, "invoice", src, out, rej, review=rt.review)
    assert (third.done, third.failed, third.awaiting_review) == (1, 1, 0)
    assert stub.stats()["total"] == calls  # the decisions were used, not the model
    edited = next(x for x in lines(out) if x["id"] == f"{tag}-b")
    assert edited["output"] == {"vendor": f"{tag}-b", "amount": 2000}
    assert edited["review"]["state"] == "edited" and edited["review"]["id"] == ids[0]
    (rejected,) = lines(rej)
    assert rejected["id"] == f"{tag}-c" and rejected["error"].startswith("review_rejected")
    assert "duplicate invoice" in rejected["error"]

    fourth = await run_batch(runner, "invoice", src, out, rej, review=rt.review)
    assert (fourth.done, fourth.failed, fourth.skipped) == (0, 0, 4)
    assert len(lines(out)) == 3 and len(lines(rej)) == 1  # each record exactly once


async def test_file_batch_waits_for_decisions(
    rt: Runtime, stub: StubUpstream, tmp_path: Path
) -> None:
    assert rt.review is not None
    review = rt.review
    tag = tmp_path.name[-12:]
    src, out, rej = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    write_records(src, tag)
    records = [orjson.loads(x) for x in src.read_bytes().splitlines()]
    ids = [review_id_for_row("invoice", out, i, records[i]) for i in (1, 2)]

    async def reviewer() -> None:
        async def both_stored() -> bool:
            try:
                return all([await review.repo.get(i) for i in ids])
            except ReviewNotFound:
                return False
        await wait_for(both_stored, 20)
        await review.decide(ids[0], REVIEWER, "approve")
        await review.decide(ids[1], REVIEWER, "approve")

    person = asyncio.create_task(reviewer())
    summary = await run_batch(rt.task_runner("batch"), "invoice", src, out, rej,
                              review=review, wait_reviews=30)
    await person
    assert (summary.done, summary.failed, summary.awaiting_review) == (4, 0, 0)
    assert sorted(x["index"] for x in lines(out)) == [0, 1, 2, 3]
    assert stub.stats()["total"] == 4


async def test_batch_run_cli_exit_codes_and_resume(stub: StubUpstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = tmp_path / "lockgate.json"
    cfg.write_text(orjson.dumps(config_dict(
        stub, home, f"sqlite:///{tmp_path / 'store.db'}")).decode())
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_records(src, "cli")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "LOCKGATE_MASTER_KEY": "sk-master-test-0123456789"}

    async def lockgate(*args: str) -> subprocess.CompletedProcess[str]:
        # in a thread: the stand-in upstream answers on this test's event loop
        return await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "lockgate", *args, "--config", str(cfg)],
            capture_output=True, text=True, env=env, timeout=120)

    first = await lockgate("batch", "run", str(src), "--task", "invoice", "--out", str(out), "-y")
    assert first.returncode == 4, first.stdout + first.stderr
    assert "2 record(s) await review" in first.stdout
    listed = await lockgate("review", "list", "--task", "invoice")
    assert listed.returncode == 0, listed.stderr
    records = [orjson.loads(x) for x in src.read_bytes().splitlines()]
    for i in (1, 2):
        item_id = review_id_for_row("invoice", out, i, records[i])
        decided = await lockgate("review", "decide", item_id, "approve")
        assert decided.returncode == 0, decided.stdout + decided.stderr
    second = await lockgate("batch", "run", str(src), "--task", "invoice", "--out", str(out), "-y")
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(x["index"] for x in lines(out)) == [0, 1, 2, 3]
    assert stub.stats()["total"] == 4


# ------------------------------------------------------------------ /v1/batches


def batch_lines(tag: str) -> bytes:
    return b"".join(
        orjson.dumps({
            "custom_id": f"{tag}-{v}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [
                {"role": "user", "content": "echo:" + doc(f"{tag}-{v}", amount)}]},
        }) + b"\n"
        for v, amount in INVOICES
    )


async def start_batch(rt: Runtime, tag: str) -> dict[str, Any]:
    assert rt.jobs is not None
    svc = rt.jobs.batches
    f = await svc.create_file(batch_lines(tag), filename="in.jsonl", purpose="batch",
                              principal=OWNER)
    return await svc.create_batch(input_file_id=f["id"], endpoint="/v1/chat/completions",
                                  principal=OWNER, metadata={"task": "invoice"})


async def test_openai_batch_lines_park_and_resume_once(
    rt: Runtime, stub: StubUpstream, tmp_path: Path
) -> None:
    assert rt.jobs is not None and rt.review is not None
    svc, review = rt.jobs.batches, rt.review
    tag = tmp_path.name[-12:]
    batch = await start_batch(rt, tag)
    bid = batch["id"]
    ids = {c: review_id_for_line(bid, f"{tag}-{c}") for c in ("b", "c")}

    async def pass_over() -> bool:  # the worker's pass ended with lines parked
        return bool((await svc.records.load(bid)).get("_waiting_review"))

    worker = Worker(rt.jobs.queue, rt.job_handler(), lease=10, poll_interval=0.02)
    await run_worker_until(worker, pass_over, 30)
    rec = await svc.get(bid, OWNER)
    assert rec["status"] == "in_progress"
    assert rec["request_counts"] == {"total": 4, "completed": 2, "failed": 0}
    item = await review.get(ids["b"], REVIEWER)
    assert item.source == "openai_batch" and item.state == "pending"
    assert item.output == {"vendor": f"{tag}-b", "amount": 20000}
    assert stub.stats()["total"] == 4

    # a re-delivered batch job finds the parked lines: no model call, no second item
    await svc.execute(rt.pipeline, bid, OWNER)
    assert stub.stats()["total"] == 4
    assert (await svc.get(bid))["status"] == "in_progress"

    await review.decide(ids["b"], REVIEWER, "edit",
                        output={"vendor": f"{tag}-b", "amount": 2000}, has_output=True)
    assert (await svc.get(bid))["status"] == "in_progress"  # one line still parked
    await review.decide(ids["c"], REVIEWER, "reject", reason="duplicate invoice")

    async def completed() -> bool:
        return bool((await svc.get(bid))["status"] == "completed")

    await wait_for(completed, 15)
    done = await svc.get(bid, OWNER)
    assert done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    out = [orjson.loads(x) for x in (await svc.file_content(done["output_file_id"])).splitlines()]
    assert sorted(x["custom_id"] for x in out) == [f"{tag}-a", f"{tag}-b", f"{tag}-d"]
    edited = next(x for x in out if x["custom_id"] == f"{tag}-b")
    content = edited["response"]["body"]["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {"vendor": f"{tag}-b", "amount": 2000}
    assert edited["review"] == {**edited["review"], "id": ids["b"], "state": "edited"}
    (err,) = [orjson.loads(x)
              for x in (await svc.file_content(done["error_file_id"])).splitlines()]
    assert err["custom_id"] == f"{tag}-c" and err["error"]["code"] == "review_rejected"
    assert "duplicate invoice" in err["error"]["message"]
    assert err["response"]["status_code"] == 403
    assert stub.stats()["total"] == 4
    # the sweeper finds nothing left to resume: each line was written once
    assert (await review.sweep())["resumed"] == 0
    assert (await svc.get(bid))["request_counts"]["completed"] == 3


async def test_cancelling_a_batch_with_parked_lines_takes_effect(
    rt: Runtime, tmp_path: Path
) -> None:
    assert rt.jobs is not None and rt.review is not None
    svc = rt.jobs.batches
    batch = await start_batch(rt, tmp_path.name[-12:])
    worker = Worker(rt.jobs.queue, rt.job_handler(), lease=10, poll_interval=0.02)

    async def pass_over() -> bool:
        return bool((await svc.records.load(batch["id"])).get("_waiting_review"))

    await run_worker_until(worker, pass_over, 30)
    assert (await svc.get(batch["id"]))["status"] == "in_progress"
    cancelled = await svc.cancel(batch["id"], OWNER)
    assert cancelled["status"] == "cancelled"
    assert cancelled["request_counts"] == {"total": 4, "completed": 2, "failed": 0}
