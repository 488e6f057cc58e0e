"""Jobs over HTTP against a real lockgate server and a real ``lockgate worker`` process.

Two gateways share the session's stand-in upstream:

* ``jobs_gw`` — once per queue backend (SQLite file, PostgreSQL schema, Redis Streams
  prefix, NATS JetStream prefix; unique names, dropped after), with a ``lockgate worker``
  subprocess reading the same config (same queue, same store);
* ``idle_gw`` — no worker, ``jobs.max_depth: 3`` and ``result_ttl: 1.5``: jobs stay queued
  (cancel, 429); the expiry test completes one with an in-process claim on the same queue.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from lockgate.jobs.backends import open_queue
from lockgate.jobs.queue import QueueOptions
from lockgate.jobs.webhooks import SIGNATURE_HEADER, verify
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config
from tests.support.postgres import fresh_database

WEBHOOK_SECRET = "whsec-gateway-jobs-test"
JOBS_EXTRA = """
jobs:
  default_model: fast
  poll_interval: 0.05
  lease: 10
  grace: 2
  max_depth: {max_depth}
  result_ttl: {result_ttl}
  queue_url: {queue_url}
  allow_private_webhooks: {private_hooks}
  webhook_secret: {webhook_secret}
  tasks:
    - name: poison
      model: always-500
      prompt: "{{{{input}}}}"
      max_attempts: 1
"""


def _queue_url(backend: str, home: Path) -> str:
    tag = "lg_gwjobs_" + uuid.uuid4().hex[:10]
    return {
        "sqlite": f"sqlite:///{home / 'jobs.db'}",
        "postgres": f"postgresql://postgres@127.0.0.1:5432/test?schema={tag}",
        "redis": f"redis://127.0.0.1:6379/0?prefix={tag}",
        "nats": f"nats://127.0.0.1:4222?prefix={tag}",
    }[backend]


def _start(upstream: str, home: Path, max_depth: int, result_ttl: float = 3600,
           queue_url: str | None = None, private_hooks: bool = False
           ) -> tuple[ServerThread, Gateway, Path]:
    home.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{home / 'lockgate.db'}"
    queue_url = queue_url or _queue_url("sqlite", home)
    extra = JOBS_EXTRA.format(max_depth=max_depth, result_ttl=result_ttl, queue_url=queue_url,
                              private_hooks=str(private_hooks).lower(),
                              webhook_secret=WEBHOOK_SECRET)
    text = gateway_config(upstream, home, db, extra)
    cfg_path = home / "lockgate.yaml"
    cfg_path.write_text(text)
    server = ServerThread(text, home)
    url = server.start()
    return server, Gateway(url, MASTER, text, home, db), cfg_path


async def _drop(queue_url: str) -> None:
    q = open_queue(queue_url)
    await q.open()
    try:
        await q.drop()
    finally:
        await q.aclose()


@pytest.fixture(scope="module", params=["sqlite", "postgres", "redis", "nats"])
def jobs_gw(upstream: str, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("jobsgw")
    queue_url = _queue_url(str(request.param), home)
    server, gw, cfg_path = _start(upstream, home, 1000, queue_url=queue_url, private_hooks=True)
    env = {**os.environ, "LOCKGATE_CONFIG": str(cfg_path)}
    env.pop("LOCKGATE_QUEUE_URL", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "worker", "--config", str(cfg_path), "-n", "4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        yield gw
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
        server.stop()
        asyncio.run(_drop(queue_url))
        print(out.decode(errors="replace")[-2000:])


@pytest.fixture(scope="module")
def idle_gw(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    server, gw, _ = _start(upstream, tmp_path_factory.mktemp("idlegw"), 3, 1.5)
    try:
        yield gw
    finally:
        server.stop()


def _client(gw: Gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gw.v1, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _wait_job(c: httpx.Client, job_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        r = c.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def _assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code, err


# ------------------------------------------------------------------ /v1/jobs


def test_submit_then_worker_completes_and_get_returns_result(jobs_gw: Gateway) -> None:
    key = jobs_gw.new_key()
    with _client(jobs_gw, key) as c:
        r = c.post("/jobs", json={"task": "classify", "input": "My invoice is wrong"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["object"] == "job" and job["id"].startswith("job_")
        assert job["status"] == "queued" and r.headers["location"] == f"/v1/jobs/{job['id']}"
        done = _wait_job(c, job["id"], ("succeeded", "dead"))
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    result = done["result"]
    assert result["output"]["label"] in ("billing", "bug", "feature_request", "account", "other")
    assert result["models"] == ["fast"] and result["usage"]["calls"] == 1
    assert done["finished_at"] is not None and done["expires_at"] is not None


class _Hooks(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers.get(SIGNATURE_HEADER, ""),
                              self.headers.get("X-Lockgate-Event", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hook_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    finally:
        srv.shutdown()


def test_completion_webhook_is_signed_and_recorded(jobs_gw: Gateway, hook_url: str) -> None:
    with _client(jobs_gw, jobs_gw.new_key()) as c:
        r = c.post("/jobs", json={"task": "summarize", "input": "hook me",
                                  "webhook_url": hook_url})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        done = _wait_job(c, job_id, ("succeeded", "dead"))
        assert done["status"] == "succeeded"
        deadline = time.monotonic() + 15
        while not (done["webhook_status"] or "").startswith("delivered"):
            assert time.monotonic() < deadline, done
            time.sleep(0.05)
            done = c.get(f"/jobs/{job_id}").json()
    mine = [(b, sig, ev) for b, sig, ev in _Hooks.received if orjson.loads(b)["id"] == job_id]
    assert len(mine) == 1, mine
    body, sig, event = mine[0]
    assert event == "job.completed", event
    assert orjson.loads(body)["result"]["output"]["summary"]
    assert verify(WEBHOOK_SECRET, body, sig)
    assert not verify("another-secret", body, sig)


def test_poison_job_is_dead_lettered_with_its_error(jobs_gw: Gateway) -> None:
    with _client(jobs_gw, jobs_gw.new_key()) as c:
        r = c.post("/jobs", json={"task": "poison", "input": "x"})
        assert r.status_code == 202, r.text
        done = _wait_job(c, r.json()["id"], ("succeeded", "dead"))
    assert done["status"] == "dead", done
    assert done["last_error"] and "500" in done["last_error"]


def test_idempotency_key_returns_the_same_job(jobs_gw: Gateway) -> None:
    key, other = jobs_gw.new_key(), jobs_gw.new_key()
    idem = "order-" + uuid.uuid4().hex
    with _client(jobs_gw, key) as c:
        first = c.post("/jobs", json={"task": "summarize", "input": "a", "idempotency_key": idem})
        again = c.post("/jobs", json={"task": "summarize", "input": "b", "idempotency_key": idem})
        header = c.post("/jobs", json={"task": "summarize", "input": "c"},
                        headers={"Idempotency-Key": idem})
        assert first.status_code == again.status_code == header.status_code == 202
        assert first.json()["id"] == again.json()["id"] == header.json()["id"]
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        done = _wait_job(c, first.json()["id"], ("succeeded", "dead"))
        assert done["status"] == "succeeded" and done["attempts"] == 1
    # keys are scoped to the submitter: another key's same idempotency key is another job
    with _client(jobs_gw, other) as c2:
        theirs = c2.post("/jobs", json={"task": "summarize", "input": "a", "idempotency_key": idem})
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_unknown_and_foreign_jobs_are_404(jobs_gw: Gateway) -> None:
    key, other = jobs_gw.new_key(), jobs_gw.new_key()
    with _client(jobs_gw, key) as c:
        _assert_openai_error(c.get("/jobs/job_doesnotexist"), 404, "job_not_found")
        _assert_openai_error(c.delete("/jobs/job_doesnotexist"), 404, "job_not_found")
        mine = c.post("/jobs", json={"task": "summarize", "input": "mine"}).json()["id"]
    with _client(jobs_gw, other) as c2:
        _assert_openai_error(c2.get(f"/jobs/{mine}"), 404, "job_not_found")
        _assert_openai_error(c2.delete(f"/jobs/{mine}"), 404, "job_not_found")
    with _client(jobs_gw, MASTER) as admin:
        assert admin.get(f"/jobs/{mine}").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (orjson.dumps({"input": "x"}), "task"),
        (orjson.dumps({"task": "classify"}), "input"),
        (orjson.dumps({"task": "no-such-task", "input": "x"}), "task"),
        (orjson.dumps({"task": "classify", "input": "x", "priority": "high"}), "priority"),
        (orjson.dumps({"task": "classify", "input": "x", "surprise": 1}), "surprise"),
        (orjson.dumps({"task": "classify", "input": "x", "webhook_url": "ftp://a"}),
         "webhook_url"),
    ],
)
def test_bad_bodies_are_400_in_openai_shape(jobs_gw: Gateway, body: bytes,
                                            param: str | None) -> None:
    with _client(jobs_gw, jobs_gw.new_key()) as c:
        r = c.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    _assert_openai_error(r, 400)
    assert r.json()["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert r.json()["error"]["param"] == param


def test_jobs_need_a_valid_key(jobs_gw: Gateway) -> None:
    with httpx.Client(base_url=jobs_gw.v1, timeout=10) as anon:
        _assert_openai_error(anon.post("/jobs", json={"task": "classify", "input": "x"}), 401)
        _assert_openai_error(anon.get("/jobs/job_x"), 401)
        _assert_openai_error(anon.get("/batches"), 401)
    with _client(jobs_gw, "sk-lg-not-a-key") as bad:
        _assert_openai_error(bad.post("/jobs", json={"task": "classify", "input": "x"}), 401)


async def test_finished_result_expires_to_410(idle_gw: Gateway) -> None:
    async with httpx.AsyncClient(base_url=idle_gw.v1, timeout=10,
                                 headers={"Authorization": f"Bearer {idle_gw.new_key()}"}) as c:
        r = await c.post("/jobs", json={"task": "classify", "input": "x", "priority": 1000})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        # the completing side stamps expires_at with its own jobs.result_ttl (as a worker does)
        queue = open_queue(f"sqlite:///{idle_gw.home / 'jobs.db'}", QueueOptions(result_ttl=1.5))
        await queue.open()
        try:
            (delivery,) = await queue.claim("test-worker", limit=1, lease=30)
            assert delivery.job.id == job_id
            assert await queue.complete(delivery, {"answer": 42})
        finally:
            await queue.aclose()
        done = (await c.get(f"/jobs/{job_id}")).json()
        assert done["status"] == "succeeded" and done["result"] == {"answer": 42}
        deadline = time.monotonic() + 15
        while (r := await c.get(f"/jobs/{job_id}")).status_code == 200:
            assert time.monotonic() < deadline, "result never expired"
            await asyncio.sleep(0.1)
        _assert_openai_error(r, 410, "job_expired")


def test_private_webhook_urls_are_refused_by_default(idle_gw: Gateway) -> None:
    with _client(idle_gw, idle_gw.new_key()) as c:
        for url in ("http://127.0.0.1:1/hook", "http://localhost/x", "http://10.0.0.5/x"):
            r = c.post("/jobs", json={"task": "classify", "input": "x", "webhook_url": url})
            _assert_openai_error(r, 400)
            assert r.json()["error"]["param"] == "webhook_url"


def test_cancel_a_queued_job(idle_gw: Gateway) -> None:
    with _client(idle_gw, idle_gw.new_key()) as c:
        r = c.post("/jobs", json={"task": "classify", "input": "cancel me"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        cancelled = c.delete(f"/jobs/{job_id}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert c.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_queue_gauges_are_exported(idle_gw: Gateway) -> None:
    text = httpx.get(idle_gw.url + "/metrics", timeout=10).text
    for name in ("lockgate_jobs_depth", "lockgate_jobs_oldest_age_seconds",
                 "lockgate_jobs_in_flight", "lockgate_jobs_dlq"):
        assert f'{name}{{queue="default"}}' in text, name


# ------------------------------------------------------------------ OpenAI Batch API via the SDK


def _sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def _batch_lines() -> bytes:
    lines = [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "fast", "messages": [{"role": "user", "content": f"question {i}"}]}}
        for i in range(5)
    ]
    lines.append({"custom_id": "req-bad", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "unreachable", "messages": [{"role": "user", "content": "x"}]}})
    return b"\n".join(orjson.dumps(x) for x in lines) + b"\n"


def test_openai_batch_end_to_end_with_the_sdk(jobs_gw: Gateway) -> None:
    client = _sdk(jobs_gw, jobs_gw.new_key())
    f = client.files.create(file=("requests.jsonl", _batch_lines()), purpose="batch")
    assert f.id.startswith("file-") and f.purpose == "batch" and f.bytes > 0
    assert client.files.retrieve(f.id).filename == "requests.jsonl"
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "nightly"})
    assert batch.status == "validating" and batch.request_counts is not None
    assert batch.request_counts.total == 6
    deadline = time.monotonic() + 30
    while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (5, 1)
    assert batch.metadata == {"run": "nightly"}
    assert batch.output_file_id and batch.error_file_id

    out = [orjson.loads(x) for x in client.files.content(batch.output_file_id).read().splitlines()]
    assert sorted(o["custom_id"] for o in out) == [f"req-{i}" for i in range(5)]
    for o in out:
        assert o["error"] is None and o["response"]["status_code"] == 200
        n = o["custom_id"].split("-")[1]
        assert f"question {n}" in o["response"]["body"]["choices"][0]["message"]["content"]
    errs = [orjson.loads(x) for x in client.files.content(batch.error_file_id).read().splitlines()]
    assert [e["custom_id"] for e in errs] == ["req-bad"]
    assert errs[0]["error"]["message"] and errs[0]["response"]["status_code"] >= 500

    listed = client.batches.list(limit=100)
    assert batch.id in [b.id for b in listed.data]
    # another key sees none of it
    stranger = _sdk(jobs_gw, jobs_gw.new_key())
    with pytest.raises(openai.NotFoundError):
        stranger.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(batch.output_file_id)
    assert batch.id not in [b.id for b in stranger.batches.list().data]
    mine = [x.id for x in client.files.list(purpose="batch")]
    assert f.id in mine and batch.output_file_id not in mine  # outputs are batch_output
    assert batch.output_file_id in [x.id for x in client.files.list()]
    assert f.id not in [x.id for x in stranger.files.list()]


def test_openai_batch_cancel_and_bad_input(idle_gw: Gateway) -> None:
    client = _sdk(idle_gw, idle_gw.new_key())
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    bad = client.files.create(file=("bad.jsonl", b'{"custom_id": "a"}\n'), purpose="batch")
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert "line 1" in str(exc.value)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    good = client.files.create(file=("ok.jsonl", _batch_lines()), purpose="batch")
    batch = client.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelling"
    deleted = client.files.delete(bad.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(bad.id)


# last: it fills the idle gateway's queue
def test_full_queue_is_429_with_retry_after(idle_gw: Gateway) -> None:
    with _client(idle_gw, idle_gw.new_key()) as c:
        statuses = []
        for i in range(6):
            r = c.post("/jobs", json={"task": "summarize", "input": f"fill {i}"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {202}, statuses
        assert len(statuses) <= 4  # max_depth 3 (the batch test's queued job may hold one)
        _assert_openai_error(r, 429, "queue_full")
        assert int(r.headers["retry-after"]) >= 1


# ------------------------------------------------------------------ two gateways, one store


@pytest.fixture(scope="module")
def twin_gws(upstream: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateways on one PostgreSQL database, no queue_url and no webhook secret."""
    for db in fresh_database("lg_twin"):
        servers, gws = [], []
        try:
            for i in range(2):
                home = tmp_path_factory.mktemp(f"twin{i}")
                text = gateway_config(upstream, home, db, "jobs: {default_model: fast}\n")
                server = ServerThread(text, home)
                servers.append(server)
                gws.append(Gateway(server.start(), MASTER, text, home, db))
            yield gws[0], gws[1]
        finally:
            for server in servers:
                server.stop()


def test_two_gateways_share_jobs_files_and_batches(twin_gws: tuple[Gateway, Gateway]) -> None:
    a, b = twin_gws
    key = a.new_key()
    with _client(a, key) as ca, _client(b, key) as cb:
        r = ca.post("/jobs", json={"task": "classify", "input": "x"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert cb.get(f"/jobs/{job_id}").json()["status"] == "queued"
        assert cb.delete(f"/jobs/{job_id}").json()["status"] == "cancelled"
        assert ca.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
        # no jobs.webhook_secret and unsigned webhooks not allowed: refused, nothing queued
        r = ca.post("/jobs", json={"task": "classify", "input": "x",
                                   "webhook_url": "https://hooks.example.com/h"})
        _assert_openai_error(r, 400, "webhook_secret_missing")
        assert r.json()["error"]["param"] == "webhook_url"
    sa, sb = _sdk(a, key), _sdk(b, key)
    f = sa.files.create(file=("in.jsonl", _batch_lines()), purpose="batch")
    assert sb.files.retrieve(f.id).bytes == len(_batch_lines())
    assert sb.files.content(f.id).read() == _batch_lines()
    batch = sa.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert sb.batches.retrieve(batch.id).status == "validating"
    assert sb.batches.cancel(batch.id).status == "cancelling"
    assert sa.batches.retrieve(batch.id).status == "cancelling"
    assert batch.id in [x.id for x in sb.batches.list().data]
    assert not (a.home / "jobs.db").exists() and not (a.home / "batches").exists()
