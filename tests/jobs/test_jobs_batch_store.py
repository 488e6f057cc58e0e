"""Batch API records in the store: shared by gateways, row-locked status changes (cancel
racing completion on two gateways), ``completion_window`` enforced with partial results;
and job cancel racing job completion on two gateways' queues (PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.errors import BadRequest
from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import NewJob
from lockgate.jobs.openai_batch import OpenAIBatchService
from lockgate.jobs.queue import JobQueue, QueueOptions
from lockgate.pipeline import Call, Completion, Principal
from lockgate.providers.base import Usage
from lockgate.store import Store
from tests.support.postgres import fresh_database

SYSTEM = Principal(key_id="sys", team_id=None, is_master=True)


class SlowPipeline:
    """Answers every chat after ``delay`` seconds; ``model: fail`` gets a 404."""

    def __init__(self, delay: float = 0.0, jitter: float = 0.0) -> None:
        self.delay = delay
        self.jitter = jitter
        self.calls = 0

    async def chat(self, call: Call) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.delay + random.random() * self.jitter)
        if call.model == "fail":
            from lockgate.errors import NotFound

            raise NotFound("no such model", code="model_not_found")
        text = call.body["messages"][0]["content"]
        return Completion({"choices": [{"message": {"content": f"re: {text}"}}]}, Usage(1, 1))

    async def embeddings(self, call: Call) -> Completion:
        raise AssertionError("not used")


def lines(n: int, model: str = "m") -> bytes:
    return b"".join(
        orjson.dumps({
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"q{i}"}]},
        }) + b"\n"
        for i in range(n)
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lockgate.db'}"
        return
    yield from fresh_database("lg_batchstore")


@pytest.fixture
async def two_gateways(
    db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[OpenAIBatchService, OpenAIBatchService]]:
    """Two services, each with its own store connection and queue client: two gateways."""
    stores = [await Store.open(db_url), await Store.open(db_url)]
    qurl = db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'lockgate.db'}"
    queues = [open_queue(qurl), open_queue(qurl)]
    for q in queues:
        await q.open()
    try:
        yield (
            OpenAIBatchService(stores[0].engine, queues[0]),
            OpenAIBatchService(stores[1].engine, queues[1]),
        )
    finally:
        for q in queues:
            await q.aclose()
        for s in stores:
            await s.close()


async def _batch(svc: OpenAIBatchService, n: int, owner: Principal | None = None) -> str:
    f = await svc.create_file(lines(n), filename="in.jsonl", purpose="batch", principal=owner)
    b = await svc.create_batch(
        input_file_id=f["id"], endpoint="/v1/chat/completions", principal=owner
    )
    return str(b["id"])


async def _read(svc: OpenAIBatchService, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    return [orjson.loads(x) for x in (await svc.file_content(file_id)).splitlines()]


async def test_any_gateway_serves_any_file_and_batch(
    two_gateways: tuple[OpenAIBatchService, OpenAIBatchService],
) -> None:
    a, b = two_gateways
    alice = Principal(key_id="k-alice", team_id="t-a")
    batch_id = await _batch(a, 3, alice)
    got = await b.get(batch_id, alice)
    assert got["status"] == "validating" and got["request_counts"]["total"] == 3
    rec = await b.execute(SlowPipeline(), batch_id, alice)  # the worker behind gateway b
    assert rec["status"] == "completed"
    seen = await a.get(batch_id, alice)
    assert seen["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    out = await _read(a, seen["output_file_id"])
    assert sorted(x["custom_id"] for x in out) == ["c0", "c1", "c2"]
    assert [x["id"] for x in await a.list_files(alice, "batch_output")] == [seen["output_file_id"]]


async def test_cancel_racing_completion_on_two_gateways(
    two_gateways: tuple[OpenAIBatchService, OpenAIBatchService],
) -> None:
    worker_gw, cancel_gw = two_gateways
    rng = random.Random(7)
    pipeline = SlowPipeline(delay=0.002, jitter=0.01)
    warm = await _batch(worker_gw, 3)
    t0 = time.monotonic()
    await worker_gw.execute(pipeline, warm, SYSTEM)
    span = time.monotonic() - t0  # how long one batch takes here: cancels land all over it
    ids = [await _batch(worker_gw, 3) for _ in range(16)]

    async def cancel_later(batch_id: str) -> str:
        await asyncio.sleep(rng.random() * span * 1.5)
        return str((await cancel_gw.cancel(batch_id))["status"])

    results = []
    for i in ids:  # one race at a time, each with its own cancel moment
        results.append(
            await asyncio.gather(worker_gw.execute(pipeline, i, SYSTEM), cancel_later(i))
        )
    outcomes = set()
    for batch_id, (final_from_worker, seen_by_cancel) in zip(ids, results, strict=True):
        final = await cancel_gw.get(batch_id)
        assert final["status"] == final_from_worker["status"]
        assert final["status"] in ("completed", "cancelled"), final
        if seen_by_cancel == "cancelling":
            # the cancel was accepted: it must win, never be overwritten by the worker
            assert final["status"] == "cancelled" and final["cancelled_at"], final
        else:
            assert seen_by_cancel == "completed" and final["status"] == "completed"
        counts = final["request_counts"]
        done = await _read(cancel_gw, final["output_file_id"])
        assert counts["completed"] == len(done) and counts["total"] == 3
        outcomes.add(final["status"])
    assert outcomes  # (both outcomes usually occur; each is checked above)


async def test_completion_window_expires_with_partial_results(
    two_gateways: tuple[OpenAIBatchService, OpenAIBatchService],
) -> None:
    svc, _ = two_gateways
    batch_id = await _batch(svc, 12)
    soon = time.time() + 0.6

    def shorten(rec: dict[str, Any]) -> None:
        rec["expires_at"] = soon

    await svc.records.change(batch_id, shorten)
    pipeline = SlowPipeline(delay=0.15)
    rec = await svc.execute(pipeline, batch_id, SYSTEM, concurrency=1)
    assert rec["status"] == "expired" and rec["expired_at"] and not rec["completed_at"]
    counts = rec["request_counts"]
    assert 1 <= counts["completed"] < 12 and counts["completed"] + counts["failed"] == 12
    out = await _read(svc, rec["output_file_id"])
    errs = await _read(svc, rec["error_file_id"])
    assert len(out) == counts["completed"] and len(errs) == counts["failed"]
    assert {e["error"]["code"] for e in errs} == {"batch_expired"}
    assert sorted(x["custom_id"] for x in out + errs) == sorted(f"c{i}" for i in range(12))
    calls = pipeline.calls
    again = await svc.execute(pipeline, batch_id, SYSTEM)  # a redelivered job: nothing more
    assert again["status"] == "expired" and pipeline.calls == calls


async def test_a_batch_no_worker_started_expires_when_read(
    two_gateways: tuple[OpenAIBatchService, OpenAIBatchService],
) -> None:
    a, b = two_gateways
    batch_id = await _batch(a, 2)

    def past(rec: dict[str, Any]) -> None:
        rec["expires_at"] = int(time.time()) - 1

    await a.records.change(batch_id, past)
    rec = await b.get(batch_id)
    assert rec["status"] == "expired" and rec["output_file_id"] is None
    assert rec["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    errs = await _read(b, rec["error_file_id"])
    assert [e["error"]["code"] for e in errs] == ["batch_expired", "batch_expired"]
    pipeline = SlowPipeline()
    assert (await a.execute(pipeline, batch_id, SYSTEM))["status"] == "expired"
    assert pipeline.calls == 0


async def test_completion_window_other_than_24h_is_refused(
    two_gateways: tuple[OpenAIBatchService, OpenAIBatchService],
) -> None:
    svc, _ = two_gateways
    f = await svc.create_file(lines(1), filename="in.jsonl", purpose="batch")
    with pytest.raises(BadRequest, match="24h"):
        await svc.create_batch(
            input_file_id=f["id"], endpoint="/v1/chat/completions", completion_window="48h"
        )


# ---------------------------------------------------------------- jobs on two gateways


@pytest.fixture
async def pg_queues() -> AsyncIterator[tuple[JobQueue, JobQueue]]:
    url = f"postgresql://postgres@127.0.0.1:5432/test?schema=lgrace_{uuid.uuid4().hex[:8]}"
    qs = [open_queue(url, QueueOptions(result_ttl=600)), open_queue(url, QueueOptions())]
    for q in qs:
        await q.open()
    try:
        yield qs[0], qs[1]
    finally:
        await qs[0].drop()
        for q in qs:
            await q.aclose()


async def test_job_cancel_racing_completion_on_two_gateways_postgres(
    pg_queues: tuple[JobQueue, JobQueue],
) -> None:
    worker_q, api_q = pg_queues
    rng = random.Random(11)
    ids = [
        (await api_q.enqueue(NewJob(task="t", input=i, webhook_url="https://hooks.example/x")))
        .job.id
        for i in range(40)
    ]
    deliveries = {d.job.id: d for d in await worker_q.claim("w", limit=40, lease=30)}
    assert set(deliveries) == set(ids)

    async def complete(job_id: str) -> bool:
        await asyncio.sleep(rng.random() * 0.02)
        return await worker_q.complete(deliveries[job_id], {"n": job_id})

    async def cancel(job_id: str) -> str:
        await asyncio.sleep(rng.random() * 0.02)
        return (await api_q.cancel(job_id)).state

    results = await asyncio.gather(*(asyncio.gather(complete(i), cancel(i)) for i in ids))
    for job_id, (stored, state_after_cancel) in zip(ids, results, strict=True):
        job = await api_q.get(job_id)
        if stored:
            assert job.state == "succeeded" and job.result == {"n": job_id}
            assert state_after_cancel == "succeeded"  # the cancel came too late and said so
        else:
            assert job.state == "cancelled" and job.result is None
            assert state_after_cancel == "cancelled"
    # exactly one final-state webhook per job, whichever side won
    due = await api_q.webhooks_due("x", limit=100)
    assert sorted(d.job_id for d in due) == sorted(ids)
    assert {d.event for d in due} <= {"job.completed", "job.cancelled"}


# ---------------------------------------------------------------- the default queue


def test_queue_defaults_to_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lockgate.settings import JobsSettings

    monkeypatch.delenv("LOCKGATE_QUEUE_URL", raising=False)
    s = JobsSettings()
    pg = "postgresql://lockgate@db:5432/lockgate"
    assert s.effective_queue_url(pg, tmp_path) == pg
    lite = f"sqlite:///{tmp_path / 'lockgate.db'}"
    assert s.effective_queue_url(lite, tmp_path) == lite
    assert s.effective_queue_url("sqlite://", tmp_path) == f"sqlite:///{tmp_path / 'jobs.db'}"
    assert JobsSettings(queue_url="redis://r:6379/0").effective_queue_url(pg, tmp_path) == (
        "redis://r:6379/0"
    )
    monkeypatch.setenv("LOCKGATE_QUEUE_URL", "redis://env:6379/0")
    assert s.effective_queue_url(pg, tmp_path) == "redis://env:6379/0"


async def test_two_runtimes_on_one_postgres_store_share_jobs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lockgate.runtime import Runtime
    from lockgate.settings import Config

    monkeypatch.delenv("LOCKGATE_QUEUE_URL", raising=False)
    for url in fresh_database("lg_jobsdefault"):
        rts = [
            await Runtime.start(Config(home=str(tmp_path / f"h{i}"), database_url=url),
                                warm_up=False)
            for i in range(2)
        ]
        try:
            a, b = (rt.jobs for rt in rts)
            assert a is not None and b is not None
            res = await a.service.submit("summarize", "hello")
            assert (await b.service.get(res.job.id)).id == res.job.id  # any gateway serves it
            cancelled = await b.service.cancel(res.job.id)
            assert cancelled.state == "cancelled"
            assert (await a.service.get(res.job.id)).state == "cancelled"
            assert not (tmp_path / "h0" / "jobs.db").exists()
        finally:
            for rt in rts:
                await rt.aclose()
