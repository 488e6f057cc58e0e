"""Tasks run through the real gateway pipeline (Runtime) against the stand-in upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.errors import BadRequest, NotFound
from lockgate.jobs.model import JobNotFound
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.submission import JobService
from lockgate.jobs.tasks import (
    TaskInputInvalid,
    TaskOutputInvalid,
    TaskRunner,
    parse_json_answer,
    render,
)
from lockgate.jobs.taskspec import task_specs
from lockgate.jobs.worker import Worker, task_handler
from lockgate.pipeline.call import Principal
from lockgate.runtime import Runtime
from lockgate.settings import Config, JobsSettings, ModelDeployment, TaskSpec
from lockgate.testing.stub_upstream import StubUpstream
from tests.jobs.test_jobs_worker import run_worker_until


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def runtime(stub: StubUpstream, tmp_path: Path) -> AsyncIterator[Runtime]:
    cfg = Config(
        home=str(tmp_path / "home"),
        models=[
            ModelDeployment(
                name="m",
                provider="openai",
                base_url=stub.openai_base,
                model="gpt-stub",
                max_retries=0,
            ),
            ModelDeployment(
                name="flaky",
                provider="openai",
                base_url=stub.openai_base,
                model="error-500",
                max_retries=0,
            ),
        ],
    )
    rt = await Runtime.start(cfg)
    yield rt
    await rt.aclose()


SYSTEM = Principal(key_id="test", team_id=None, is_master=True)


def test_render_and_parse() -> None:
    assert render("a {{input.x}} {{ input.y.0 }}", {"input": {"x": 1, "y": ["z"]}}) == "a 1 z"
    assert render("{{input}}", {"input": {"k": 1}}) == '{"k":1}'
    with pytest.raises(TaskInputInvalid):
        render("{{input.missing}}", {"input": {}})
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer('Sure! {"a": 2} hope that helps') == {"a": 2}
    with pytest.raises(TaskOutputInvalid):
        parse_json_answer("no json here")


def test_task_spec_validation() -> None:
    with pytest.raises(ValueError, match="needs 'labels'"):
        TaskSpec(name="c", kind="classify")
    with pytest.raises(ValueError, match="invalid JSON schema"):
        TaskSpec(name="p", prompt="x", output_schema={"type": "nonsense"})


async def test_builtin_tasks_through_pipeline(runtime: Runtime, stub: StubUpstream) -> None:
    specs = task_specs(JobsSettings(default_model="m"))
    runner = TaskRunner(runtime.pipeline, specs, default_model="m")
    ticket = {"text": "I was double charged on order 123"}
    res = await runner.run("triage", ticket, principal=SYSTEM)
    assert res.calls == 2 and res.output["label"] == "billing"
    assert res.output["team"] == "finance" and res.confidence == 1.0
    assert isinstance(res.output["entities"], list)
    assert res.prompt_tokens > 0
    summary = await runner.run("summarize", "long text", principal=SYSTEM)
    assert isinstance(summary.output["summary"], str)
    sent = stub.stats()
    assert sent["total"] == 3


async def test_prompt_task_chain_and_output_contract(runtime: Runtime) -> None:
    spec = TaskSpec(
        name="chain",
        model="m",
        steps=[
            {
                "name": "first",
                "prompt": "Say something about {{input.topic}}",
                "output_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
            },
            {"name": "second", "prompt": "Use {{steps.first.word}}"},
        ],
    )
    runner = TaskRunner(runtime.pipeline, {"chain": spec})
    res = await runner.run("chain", {"topic": "cats"}, principal=SYSTEM)
    assert res.output["word"].startswith("stub reply: Say something about cats")
    assert res.output["text"].startswith("stub reply: Use stub reply:")
    # json_mode off: the stub answers plain text, which breaks the contract
    strict = TaskSpec(
        name="strict",
        model="m",
        prompt="hi",
        json_mode=False,
        output_schema={"type": "object"},
    )
    with pytest.raises(TaskOutputInvalid):
        await TaskRunner(runtime.pipeline, {"strict": strict}).run("strict", 1, principal=SYSTEM)


async def test_gateway_errors_surface(runtime: Runtime) -> None:
    runner = TaskRunner(runtime.pipeline, {"x": TaskSpec(name="x", model="nope", prompt="hi")})
    with pytest.raises(NotFound):
        await runner.run("x", 1, principal=SYSTEM)


async def test_worker_runs_tasks_and_dead_letters_poison(runtime: Runtime, queue: JobQueue) -> None:
    specs: dict[str, TaskSpec] = {
        **task_specs(JobsSettings(default_model="m")),
        "needs_field": TaskSpec(name="needs_field", model="m", prompt="{{input.text}}"),
        "upstream_down": TaskSpec(name="upstream_down", model="flaky", prompt="x", max_attempts=2),
    }
    service = JobService(queue, specs)
    good = await service.submit("classify", "refund please", principal=SYSTEM)
    poison = await service.submit("needs_field", {"other": 1}, principal=SYSTEM)
    down = await service.submit("upstream_down", "x", principal=SYSTEM)
    runner = TaskRunner(runtime.pipeline, specs, default_model="m")
    ids = [good.job.id, poison.job.id, down.job.id]

    async def settled() -> bool:
        states = [(await queue.get(i)).state for i in ids]
        return all(s in ("succeeded", "dead") for s in states)

    worker = Worker(queue, task_handler(runner), concurrency=3, lease=5, poll_interval=0.02)
    await run_worker_until(worker, settled)
    g = await queue.get(good.job.id)
    assert g.state == "succeeded" and g.result["output"]["label"] == "billing"
    p = await queue.get(poison.job.id)
    assert p.state == "dead" and p.attempts == 1  # permanent: no pointless retries
    assert "TaskInputInvalid" in (p.last_error or "")
    d = await queue.get(down.job.id)
    assert d.state == "dead" and d.attempts == 2 and "502" in (d.last_error or "")


async def test_service_scopes_idempotency_and_ownership(queue: JobQueue) -> None:
    specs = task_specs(JobsSettings())
    svc = JobService(queue, specs, webhooks_signed=True, webhook_allow=("hooks.example.com",))
    a = Principal(key_id="ka", team_id="ta")
    b = Principal(key_id="kb", team_id="tb")
    ja = await svc.submit("summarize", "x", principal=a, idempotency_key="same")
    jb = await svc.submit("summarize", "x", principal=b, idempotency_key="same")
    assert ja.job.id != jb.job.id
    again = await svc.submit("summarize", "y", principal=a, idempotency_key="same")
    assert again.job.id == ja.job.id and not again.created
    assert (await svc.get(ja.job.id, a)).id == ja.job.id
    with pytest.raises(JobNotFound):
        await svc.get(ja.job.id, b)
    with pytest.raises(BadRequest):
        await svc.submit("nope", 1)
    for bad in (
        "ftp://x/y",
        "http://127.0.0.1:9/h",
        "http://localhost/h",
        "http://[::1]/h",
        "http://10.1.2.3/h",
        "http://169.254.169.254/latest",
    ):
        with pytest.raises(BadRequest, match="webhook_url"):
            await svc.submit("summarize", 1, webhook_url=bad)
    ok = await svc.submit("summarize", 1, webhook_url="https://hooks.example.com/x")
    assert ok.job.webhook_url == "https://hooks.example.com/x"
    local = JobService(queue, specs, allow_private_webhooks=True, webhooks_signed=True)
    assert (await local.submit("summarize", 2, webhook_url="http://127.0.0.1:9/h")).created
    assert (await queue.get(ja.job.id)).max_attempts == specs["summarize"].max_attempts
    assert (await queue.get(ok.job.id)).webhook_status == "waiting"
    assert (await queue.get(ja.job.id)).webhook_status is None


async def test_jobs_max_attempts_is_the_default_of_tasks_that_set_none() -> None:
    settings = JobsSettings(
        max_attempts=7,
        tasks=[
            TaskSpec(name="mine", prompt="x"),
            TaskSpec(name="pinned", prompt="x", max_attempts=2),
        ],
    )
    specs = task_specs(settings)
    assert specs["mine"].max_attempts == 7
    assert specs["summarize"].max_attempts == 7  # built-ins too
    assert specs["pinned"].max_attempts == 2
    assert task_specs(JobsSettings())["summarize"].max_attempts == 3
