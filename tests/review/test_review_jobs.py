"""A job waiting on review survives a worker SIGKILL and a gateway restart, resumes once.

Real processes: ``lockgate serve`` and ``lockgate worker`` on one store and queue, the
stand-in upstream as the model. The job's answer needs review (amount > 10000); the job
parks in ``awaiting_review``; the worker is killed with SIGKILL and the gateway restarted;
a reviewer edits the answer through the new gateway; the job finishes exactly once with the
edited output, and a new worker never runs it again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockgate.jobs.model import NewJob
from lockgate.jobs.review_gate import review_id_for_job, reviewed_handler
from lockgate.jobs.worker import task_handler
from lockgate.review import ReviewRepository, ReviewService
from tests.gateway.conftest import MASTER, free_port

SCHEMA = {"type": "object", "properties": {"vendor": {"type": "string"},
                                           "amount": {"type": "number"}},
          "required": ["vendor", "amount"]}


def _config(upstream: str, home: Path, database_url: str, port: int) -> str:
    return json.dumps({
        "master_key": MASTER, "home": str(home), "database_url": database_url,
        "server": {"port": port},
        "models": [{"name": "fast", "provider": "openai", "base_url": upstream + "/v1",
                    "model": "stub-fast"}],
        "jobs": {
            "queue_url": f"sqlite:///{home / 'jobs.db'}",
            "poll_interval": 0.05, "default_model": "fast",
            "tasks": [{"name": "invoice_extract", "prompt": "echo:{{input.doc}}",
                       "output_schema": SCHEMA}],
        },
        "review": {"sweep_interval_s": 0.2, "policies": {"invoice_extract": {
            "when": {"predicates": ["$.amount > 10000"]}, "mode": "async",
            "reviewers": ["finance"]}}},
    })


def _wait(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


class Proc:
    def __init__(self, args: list[str], cfg: Path, log: Path) -> None:
        env = {**os.environ, "LOCKGATE_MASTER_KEY": MASTER}
        self.p = subprocess.Popen([sys.executable, "-m", "lockgate", *args, "--config", str(cfg)],
                                  stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def test_parked_job_survives_sigkill_and_restart(upstream: str, database_url: str,
                                                 tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(_config(upstream, tmp_path, database_url, port))
    log = tmp_path / "procs.log"
    base = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {MASTER}"}

    def healthy() -> bool:
        try:
            return httpx.get(base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    gw = Proc(["serve"], cfg, log)
    worker = Proc(["worker"], cfg, log)
    procs = [gw, worker]
    try:
        _wait(healthy)
        with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
            assert c.post("/admin/teams", json={"name": "finance"}).status_code in (201, 409)
            reviewer = c.post("/admin/keys", json={"team": "finance"}).json()["key"]
            doc = {"vendor": "Big Co", "amount": 42000}
            r = c.post("/v1/jobs", json={"task": "invoice_extract",
                                         "input": {"doc": json.dumps(doc)}})
            assert r.status_code in (200, 201, 202), r.text
            job_id = r.json()["id"]
            _wait(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] == "awaiting_review")
        worker.kill()
        gw.stop()
        gw = Proc(["serve"], cfg, log)
        procs.append(gw)
        _wait(healthy)
        rid = review_id_for_job(job_id)
        with httpx.Client(base_url=base, timeout=10,
                          headers={"Authorization": f"Bearer {reviewer}"}) as c:
            item = c.get(f"/v1/reviews/{rid}").json()
            assert item["source"] == "jobs" and item["source_ref"] == job_id
            assert item["recommendation"] == doc
            fixed = {"vendor": "Big Co", "amount": 4200}
            d = c.post(f"/v1/reviews/{rid}/decide", json={"action": "edit", "output": fixed})
            assert d.status_code == 200, d.text
        with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
            _wait(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
            job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["result"]["output"] == fixed
            assert job["result"]["review"]["state"] == "edited"
            attempts = job["attempts"]
        # a new worker never runs the finished job again
        worker2 = Proc(["worker"], cfg, log)
        procs.append(worker2)
        time.sleep(1.5)
        with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
            again = c.get(f"/v1/jobs/{job_id}").json()
        assert again["status"] == "succeeded" and again["attempts"] == attempts
        assert again["result"]["output"] == fixed
    finally:
        for p in procs:
            p.stop()


@pytest.mark.asyncio
async def test_rerun_after_crash_before_parking_reuses_the_item(
    upstream: str, database_url: str, tmp_path: Path,
) -> None:
    """A worker that died after storing the review item but before parking: the re-run
    finds the item (no second item, no second model call) and parks again; once decided, a
    re-run finishes with the decision."""
    from lockgate.runtime import Runtime
    from lockgate.settings import parse_config

    cfg = parse_config(_config(upstream, tmp_path, database_url, free_port()))
    rt = await Runtime.start(cfg, warm_up=False)
    try:
        assert rt.jobs is not None and rt.review is not None
        runner = rt.task_runner("jobs")
        calls: list[Any] = []
        inner = task_handler(runner)

        async def counting(job: Any) -> Any:
            calls.append(job.id)
            return await inner(job)

        handler = reviewed_handler(counting, runner, rt.review)
        res = await rt.jobs.queue.enqueue(NewJob(task="invoice_extract", input={
            "doc": json.dumps({"vendor": "V", "amount": 99999})}))
        job = await rt.jobs.queue.get(res.job.id)
        from lockgate.jobs.model import ParkForReview

        with pytest.raises(ParkForReview) as first:
            await handler(job)
        calls_after_first = len(calls)
        with pytest.raises(ParkForReview) as second:
            await handler(job)
        assert first.value.review_id == second.value.review_id
        assert len(calls) == calls_after_first  # the model was not asked again
        svc: ReviewService = rt.review
        repo: ReviewRepository = svc.repo
        pending = await repo.find(task="invoice_extract", limit=50)
        assert [i.id for i in pending].count(first.value.review_id) == 1
        from lockgate.pipeline.call import Principal

        admin = Principal(key_id="admin", team_id=None, is_master=True)
        await svc.decide(first.value.review_id, admin, "approve")
        out = await handler(job)
        assert out["output"] == {"vendor": "V", "amount": 99999}
        assert out["review"]["state"] == "approved"
    finally:
        await rt.aclose()
    await asyncio.sleep(0)
