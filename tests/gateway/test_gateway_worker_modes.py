"""Where jobs run: ``lockgate up`` (a worker inside the gateway process, by default) and
``lockgate serve`` + ``lockgate worker`` (separate processes), as an operator starts them.

Every gateway here is a real subprocess on the embedded default store (SQLite under its
home, the queue in the same file) in front of the session's stand-in upstream. A job and an
OpenAI-style batch submitted over HTTP finish with ``lockgate up`` alone; with
``up --no-worker`` or ``serve`` they wait in the queue until a ``lockgate worker`` process
on the same config runs them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import MASTER, free_port, gateway_config

EXTRA = """
jobs:
  default_model: fast
  poll_interval: 0.05
  lease: 10
  grace: 2
"""


def _config(upstream: str, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "lockgate.yaml"
    path.write_text(gateway_config(upstream, home, f"sqlite:///{home / 'lockgate.db'}", EXTRA))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCKGATE_QUEUE_URL", "LOCKGATE_EMBEDDED_WORKER", "LOCKGATE_CONFIG")}
    return env


@contextmanager
def _process(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        print(out.decode(errors="replace")[-3000:])


def _wait_healthy(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become healthy")


def _key(url: str) -> str:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER}"},
                      timeout=10) as c:
        assert c.post("/admin/teams", json={"name": "modes"}).status_code in (201, 409)
        r = c.post("/admin/keys", json={"team": "modes"})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


def _submit(url: str, key: str) -> str:
    r = httpx.post(url + "/v1/jobs", json={"task": "summarize", "input": "worker modes"},
                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _job(url: str, key: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _wait_job(url: str, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    job = _job(url, key, job_id)
    while job["status"] not in ("succeeded", "dead") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = _job(url, key, job_id)
    return job


def _batch(url: str, key: str) -> Any:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    lines = b"".join(
        b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": '
        b'{"model": "fast", "messages": [{"role": "user", "content": "q %d"}]}}\n' % (i, i)
        for i in range(3)
    )
    f = client.files.create(file=("in.jsonl", lines), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    return client, batch


def _wait_batch(client: openai.OpenAI, batch: Any) -> Any:
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "cancelled") and (
            time.monotonic() < deadline):
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    return batch


def _still_waiting(url: str, key: str, job_id: str) -> None:
    """The job stays queued while only the gateway runs: a burst of requests the gateway
    answers (each one a turn of its event loop) leaves it untouched."""
    for _ in range(20):
        assert _job(url, key, job_id)["status"] == "queued"


def test_up_runs_jobs_and_batches_without_a_second_command(upstream: str,
                                                           tmp_path: Path) -> None:
    cfg = _config(upstream, tmp_path / "home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _process(["up", "-c", str(cfg), "--port", str(port)]) as proc:
        _wait_healthy(proc, url)
        key = _key(url)
        done = _wait_job(url, key, _submit(url, key))
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert done["result"]["models"] == ["fast"]
        client, batch = _batch(url, key)
        batch = _wait_batch(client, batch)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None and batch.request_counts.completed == 3


@pytest.mark.parametrize("command", [["up", "--no-worker"], ["serve"]],
                         ids=["up-no-worker", "serve"])
def test_without_an_embedded_worker_a_worker_process_runs_the_jobs(
        upstream: str, tmp_path: Path, command: list[str]) -> None:
    cfg = _config(upstream, tmp_path / "home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([*command, "-c", str(cfg), "--port", str(port)]) as proc:
        _wait_healthy(proc, url)
        key = _key(url)
        job_id = _submit(url, key)
        client, batch = _batch(url, key)
        _still_waiting(url, key, job_id)
        assert client.batches.retrieve(batch.id).status in ("validating", "in_progress")
        with _process(["worker", "-c", str(cfg), "-n", "4"]) as worker:
            done = _wait_job(url, key, job_id)
            assert done["status"] == "succeeded", done
            assert _wait_batch(client, batch).status == "completed"
            assert worker.poll() is None


@pytest.mark.parametrize("commands", [[["up"]], [["serve"], ["worker", "-n", "2"]]],
                         ids=["up", "serve+worker"])
def test_configured_event_consumers_run_in_the_worker(upstream: str, tmp_path: Path,
                                                      commands: list[list[str]]) -> None:
    """``events.consumers`` in the config: ``lockgate up`` alone (or ``serve`` with a
    ``lockgate worker``) enriches events from a NATS JetStream subject through the pipeline
    and publishes them to the sink."""
    import asyncio
    import uuid

    from lockgate.events.transports import open_transport
    from tests.events.test_events_consumer import read_all

    tag = "lgup" + uuid.uuid4().hex[:8]
    src_url, dst_url = f"nats://127.0.0.1:4222/{tag}.in", f"nats://127.0.0.1:4222/{tag}.out"
    home = tmp_path / "home"
    cfg = _config(upstream, home)
    cfg.write_text(cfg.read_text() + f"""
events:
  consumers:
    - source: {src_url}
      sink: {dst_url}
      task: summarize
      group: up-test
""")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def roundtrip() -> list[Any]:
        src = open_transport(src_url, group="producer")
        dst = open_transport(dst_url, group="reader")
        await src.open()
        await dst.open()
        try:
            for i in range(3):
                await src.publish({"id": f"ev{i}", "text": f"event {i}"}, event_id=f"ev{i}")
            return await read_all(dst, 3, timeout=60)
        finally:
            for t in (src, dst):
                await t.drop()
                await t.aclose()

    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(
            _process([*commands[0], "-c", str(cfg), "--port", str(port)]))
        _wait_healthy(gateway, url)
        for extra in commands[1:]:
            stack.enter_context(_process([*extra, "-c", str(cfg)]))
        got = asyncio.run(roundtrip())
    assert sorted(e["id"] for e in got) == ["ev0", "ev1", "ev2"], got
    assert all(e["enrichment"] for e in got)
