"""Worker behaviour on every backend: SIGKILL mid-job, poison -> DLQ, per-key order,
bounded in-flight work, graceful shutdown, signed completion webhooks."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from lockgate.jobs.model import Job, NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.webhooks import SIGNATURE_HEADER, WebhookSender, verify
from lockgate.jobs.worker import Worker

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


async def wait_for(cond: Any, timeout: float = 15.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not reached in time")


async def run_worker_until(worker: Worker, cond: Any, timeout: float = 15.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(cond, timeout)
    finally:
        stop.set()
        await task


async def test_sigkill_mid_job_completes_exactly_once(
    queue: JobQueue, url: str, tmp_path: Path
) -> None:
    res = await queue.enqueue(NewJob(task="t", input={"n": 1}))
    job_id = res.job.id
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "jobs_worker_proc.py"), url, str(tmp_path), "1.0"], env=env
    )
    try:

        async def started() -> bool:
            assert proc.poll() is None, "worker process died on its own"
            return (tmp_path / f"started-{job_id}").exists()

        await wait_for(started, timeout=30)
        assert (await queue.get(job_id)).state == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    runs: list[int] = []

    async def handler(job: Job) -> Any:
        runs.append(job.attempts)
        return {"by": "survivor"}

    async def done() -> bool:
        return (await queue.get(job_id)).state == "succeeded"

    worker = Worker(queue, handler, concurrency=2, lease=5.0, poll_interval=0.05)
    await run_worker_until(worker, done)
    job = await queue.get(job_id)
    assert job.result == {"by": "survivor"} and job.attempts == 2
    assert runs == [2]
    assert worker.stats.completed == 1 and worker.stats.duplicates == 0
    effects = (tmp_path / "effects.log").read_text().splitlines()
    assert effects == [f"{job_id} 1 proc"]  # the killed run; the survivor ran it once more
    assert await queue.claim("late", lease=1) == []


async def test_poison_input_dead_letters_after_max_attempts(queue: JobQueue) -> None:
    ok = [(await queue.enqueue(NewJob(task="t", input=i))).job.id for i in range(3)]
    bad = (await queue.enqueue(NewJob(task="t", input="poison", max_attempts=3))).job.id
    calls: list[Any] = []

    async def handler(job: Job) -> Any:
        calls.append(job.input)
        if job.input == "poison":
            raise ValueError("cannot parse 'poison'")
        return job.input

    async def settled() -> bool:
        states = [(await queue.get(i)).state for i in [*ok, bad]]
        return all(s in ("succeeded", "dead") for s in states)

    worker = Worker(queue, handler, concurrency=4, lease=5.0, poll_interval=0.02)
    await run_worker_until(worker, settled)
    job = await queue.get(bad)
    assert job.state == "dead" and job.attempts == 3
    assert job.last_error == "ValueError: cannot parse 'poison'"
    assert len(job.errors) == 3 and calls.count("poison") == 3
    assert [j.id for j in await queue.dlq_list()] == [bad]
    assert [(await queue.get(i)).state for i in ok] == ["succeeded"] * 3


async def test_partition_order_under_concurrency(queue: JobQueue) -> None:
    keys = ["a", "b", "c"]
    per_key = 8
    for i in range(per_key):
        for k in keys:
            await queue.enqueue(NewJob(task="t", input={"k": k, "i": i}, partition_key=k))
    log: list[tuple[str, str, int]] = []
    active: dict[str, int] = {}
    max_parallel = 0
    rng = random.Random(7)

    async def handler(job: Job) -> Any:
        nonlocal max_parallel
        k, i = job.input["k"], job.input["i"]
        assert active.get(k, 0) == 0, f"two jobs of partition {k} at once"
        active[k] = 1
        max_parallel = max(max_parallel, sum(active.values()))
        log.append(("start", k, i))
        await asyncio.sleep(rng.random() * 0.01)
        if i == 3 and job.attempts == 1:
            active[k] = 0
            raise RuntimeError("flaky once")  # a retry must still keep the order
        active[k] = 0
        log.append(("end", k, i))
        return i

    async def all_done() -> bool:
        return sum(1 for e in log if e[0] == "end") == per_key * len(keys)

    stop = asyncio.Event()
    workers = [
        Worker(queue, handler, worker_id=f"w{n}", concurrency=3, lease=5.0, poll_interval=0.01)
        for n in range(2)
    ]
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        await wait_for(all_done, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    for k in keys:
        ends = [i for (ev, kk, i) in log if ev == "end" and kk == k]
        assert ends == list(range(per_key)), (k, ends)
    assert max_parallel > 1  # different keys did run side by side


async def test_bounded_in_flight_and_graceful_shutdown(queue: JobQueue) -> None:
    ids = [(await queue.enqueue(NewJob(task="t", input=i))).job.id for i in range(6)]
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def handler(job: Job) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
            return job.input
        finally:
            running -= 1

    worker = Worker(queue, handler, concurrency=2, lease=5.0, poll_interval=0.01, grace=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def two_running() -> bool:
        return running == 2

    await wait_for(two_running)
    await asyncio.sleep(0.1)
    assert peak == 2 and (await queue.stats()).in_flight == 2
    stop.set()  # handlers never finish within the grace period: they are given back
    await task
    assert worker.stats.released == 2
    st = await queue.stats()
    assert st.in_flight == 0 and st.depth == 6
    states = {(await queue.get(i)).state for i in ids}
    assert states == {"queued"}
    d = await queue.claim("next", limit=6)
    assert sorted(x.job.attempts for x in d) == [1] * 6


async def test_completion_webhook_signed_and_retried(queue: JobQueue) -> None:
    received: list[tuple[bytes, str]] = []
    hits = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        body = await request.read()
        received.append((body, request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=500 if hits == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        res = await queue.enqueue(
            NewJob(task="t", input=5, webhook_url=f"http://127.0.0.1:{port}/hook")
        )

        async def handler(job: Job) -> Any:
            return {"double": job.input * 2}

        async def recorded() -> bool:
            return ((await queue.get(res.job.id)).webhook_status or "").startswith("delivered")

        sender = WebhookSender("s3cret", attempts=3, backoff_base=0.05)
        worker = Worker(queue, handler, lease=5.0, poll_interval=0.02, webhooks=sender)
        await run_worker_until(worker, recorded)
    finally:
        await runner.cleanup()
    job = await queue.get(res.job.id)
    assert job.webhook_status == "delivered 200 (attempt 2)"
    body, sig = received[-1]
    assert verify("s3cret", body, sig) and not verify("wrong", body, sig)
    payload = orjson.loads(body)
    assert payload["id"] == res.job.id and payload["result"] == {"double": 10}


async def test_unstorable_result_is_dead_lettered(queue: JobQueue) -> None:
    res = await queue.enqueue(NewJob(task="t", input=1, max_attempts=5))

    async def handler(job: Job) -> Any:
        return {"not json": object()}

    async def dead() -> bool:
        return (await queue.get(res.job.id)).state == "dead"

    await run_worker_until(Worker(queue, handler, lease=5, poll_interval=0.02), dead)
    job = await queue.get(res.job.id)
    assert job.attempts == 1 and "not JSON-serialisable" in (job.last_error or "")
