"""The real ``worker``/``jobs``/``dlq`` commands as processes: SIGKILL a worker mid-job
(its model call hanging in the stand-in upstream) -> the job completes exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.jobs.model import NewJob
from lockgate.jobs.queue import JobQueue
from lockgate.testing.stub_upstream import StubUpstream
from tests.jobs.test_jobs_worker import wait_for
from tests.support.cli_console import wide_console  # noqa: F401  (fixture)

SRC = Path(__file__).parent.parent.parent / "src"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lockgate", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cli(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


def write_config(tmp_path: Path, stub: StubUpstream) -> Path:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'home'}\nmodels:\n  - name: local\n    provider: openai\n"
        f"    base_url: {stub.openai_base}\n    model: gpt-stub\n    max_retries: 0\n"
        "    timeouts: {first_token: 120, total: 120}\n"
    )
    return cfg


async def test_sigkilled_cli_worker_loses_nothing(
    queue: JobQueue, url: str, tmp_path: Path
) -> None:
    stub = StubUpstream()
    await stub.start()
    cfg = write_config(tmp_path, stub)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        code, out = await run(
            "jobs", "submit", "summarize", '"a long ticket"', "-q", url, "-c", str(cfg)
        )
        assert code == 0, out
        job_id = out.split()[0]
        stub.script(["stall-before:120"])  # the first model call hangs
        first = subprocess.Popen(
            cli("worker", "-q", url, "-c", str(cfg), "--lease", "1"), env=env()
        )
        workers.append(first)

        async def hanging() -> bool:
            assert first.poll() is None
            return int(stub.stats()["total"]) >= 1

        await wait_for(hanging, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen(
            cli("worker", "-q", url, "-c", str(cfg), "--lease", "1"),
            env=env(),
            stdout=subprocess.PIPE,
        )
        workers.append(second)

        async def succeeded() -> bool:
            return (await queue.get(job_id)).state == "succeeded"

        await wait_for(succeeded, timeout=60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
        assert second.stdout is not None and b"1 completed" in second.stdout.read()
        job = await queue.get(job_id)
        assert job.attempts == 2
        assert job.result["output"]["summary"].startswith("stub reply")
        assert stub.stats()["total"] == 2
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        await stub.stop()


@pytest.mark.usefixtures("wide_console")
def test_dlq_commands(tmp_path: Path) -> None:
    """In process (typer's runner): list, show, retry, purge, stats, a one-line error."""
    from typer.testing import CliRunner

    from lockgate.cli.jobs_commands import _standalone
    from lockgate.jobs.backends import open_queue

    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def kill_one(retry_of: str | None = None) -> str:
        q = open_queue(url)
        await q.open()
        try:
            if retry_of is None:
                job_id = (
                    await q.enqueue(NewJob(task="summarize", input="x", max_attempts=1))
                ).job.id
            else:
                job_id = retry_of
            (d,) = await q.claim("w")
            await q.fail(d, "boom: bad input")
            return job_id
        finally:
            await q.aclose()

    job_id = asyncio.run(kill_one())
    app = _standalone()
    runner = CliRunner()

    cfg = tmp_path / "lockgate.yaml"  # where admin actions are audited
    cfg.write_text(f"home: {tmp_path / 'home'}\nmodels: []\n")

    def invoke(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, [*args, "-q", url],
                            env={"COLUMNS": "200", "LOCKGATE_CONFIG": str(cfg)})
        return res.exit_code, res.output

    code, out = invoke("dlq", "list")
    assert code == 0 and job_id in out and "boom" in out, out
    code, out = invoke("dlq", "show", job_id)
    assert code == 0 and '"last_error": "boom: bad input"' in out
    code, out = invoke("dlq", "retry", job_id)
    assert code == 0 and "queued" in out
    asyncio.run(kill_one(job_id))
    code, out = invoke("dlq", "purge", "-y")
    assert code == 0 and "purged 1" in out
    code, out = invoke("jobs", "stats")
    assert code == 0 and '"dlq": 0' in out
    code, out = invoke("dlq", "show", "job_nope")
    assert code == 1

    async def admin_rows() -> list[tuple[str | None, str | None, str | None]]:
        from lockgate.store import Store

        store = await Store.open(f"sqlite:///{tmp_path / 'home' / 'lockgate.db'}")
        try:
            rows = await store.recent_usage(10, kind="admin")
        finally:
            await store.close()
        return [(r.model, r.deployment, r.key_id) for r in reversed(rows)]

    rows = asyncio.run(admin_rows())  # DLQ actions are links of the audit chain
    assert [(a, t) for a, t, _ in rows] == [("dlq.retry", job_id), ("dlq.purge", "*")]
    assert all((who or "").startswith("cli:") for _, _, who in rows)


@pytest.mark.usefixtures("wide_console")
def test_webhook_dlq_commands(tmp_path: Path) -> None:
    """``dlq webhooks`` lists dead-lettered webhooks; ``dlq webhook-retry`` queues one again."""
    from typer.testing import CliRunner

    from lockgate.cli.jobs_commands import _standalone
    from lockgate.jobs.backends import open_queue
    from lockgate.jobs.outbox import OutboxDeliverer

    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def dead_webhook() -> str:
        q = open_queue(url)
        await q.open()
        try:
            res = await q.enqueue(NewJob(task="t", input=1, webhook_url="https://hooks.example/x"))
            (d,) = await q.claim("w")
            await q.complete(d, 1)
            await OutboxDeliverer(q, None).run_once()  # no sender: dead-lettered at once
            return res.job.id
        finally:
            await q.aclose()

    job_id = asyncio.run(dead_webhook())
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        res = runner.invoke(_standalone(), [*args, "-q", url], env={"COLUMNS": "250"})
        return res.exit_code, res.output

    code, out = invoke("dlq", "webhooks")
    assert code == 0 and job_id in out and "job.completed" in out, out
    delivery_id = next(w for w in out.split() if w.startswith("whd_"))
    code, out = invoke("dlq", "webhook-retry", delivery_id)
    assert code == 0 and "pending" in out, out
    code, out = invoke("dlq", "webhooks")
    assert job_id not in out


async def test_worker_on_an_unreachable_or_bad_queue_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"home: {tmp_path / 'home'}\n")
    for url, named in [("nats://127.0.0.1:1?prefix=x", "cannot reach NATS"),
                       ("redis://127.0.0.1:1/0", "127.0.0.1:1"),
                       ("nats://127.0.0.1:4222?prefix=bad.name", "bad.name")]:
        code, out = await run("worker", "--queue", url, "-c", str(cfg))
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        assert code != 0 and "Traceback" not in out, out
        assert len(lines) == 1 and "cannot start the worker" in lines[0], out
        assert named in lines[0], out
