"""OpenAI Batch API shape on the job queue: files, batches, execution, resume, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.errors import BadRequest, NotFound
from lockgate.jobs.backends import open_queue
from lockgate.jobs.openai_batch import OpenAIBatchService, batch_aware_handler
from lockgate.jobs.queue import JobQueue
from lockgate.jobs.tasks import TaskRunner
from lockgate.jobs.worker import Worker, task_handler
from lockgate.pipeline.call import Principal
from lockgate.runtime import Runtime
from lockgate.settings import Config, ModelDeployment
from lockgate.testing.stub_upstream import StubUpstream
from tests.jobs.test_jobs_worker import run_worker_until

ALICE = Principal(key_id="k-alice", team_id="t-a")
BOB = Principal(key_id="k-bob", team_id="t-b")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Runtime, StubUpstream, JobQueue]]:
    stub = StubUpstream()
    await stub.start()
    cfg = Config(
        home=str(tmp_path / "home"),
        models=[
            ModelDeployment(
                name="m",
                provider="openai",
                base_url=stub.openai_base,
                model="gpt-stub",
                max_retries=0,
            )
        ],
    )
    rt = await Runtime.start(cfg)
    q = open_queue(f"sqlite:///{tmp_path / 'q.db'}")
    await q.open()
    yield rt, stub, q
    await q.aclose()
    await rt.aclose()
    await stub.stop()


def batch_file(ids: list[str], model: str = "m") -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": i,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "nope" if i == "bad" else model,
                    "messages": [{"role": "user", "content": f"hi {i}"}],
                },
            }
        )
        + b"\n"
        for i in ids
    )


async def read_lines(svc: OpenAIBatchService, file_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (await svc.file_content(file_id)).splitlines()]


async def test_batch_runs_through_the_queue(
    env: tuple[Runtime, StubUpstream, JobQueue], tmp_path: Path
) -> None:
    rt, stub, q = env
    svc = OpenAIBatchService(rt.store.engine, q)
    f = await svc.create_file(
        batch_file(["a", "b", "bad", "c"]), filename="in.jsonl", purpose="batch", principal=ALICE
    )
    assert f["object"] == "file" and f["purpose"] == "batch"
    b = await svc.create_batch(
        input_file_id=f["id"],
        endpoint="/v1/chat/completions",
        principal=ALICE,
        metadata={"run": "1"},
    )
    assert b["status"] == "validating" and b["request_counts"]["total"] == 4
    handler = batch_aware_handler(svc, rt.pipeline, task_handler(TaskRunner(rt.pipeline, {})))

    async def finished() -> bool:
        return bool((await svc.get(b["id"]))["status"] == "completed")

    await run_worker_until(Worker(q, handler, lease=10, poll_interval=0.02), finished)
    done = await svc.get(b["id"], ALICE)
    assert done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    out = await read_lines(svc, done["output_file_id"])
    assert sorted(str(x["custom_id"]) for x in out) == ["a", "b", "c"]
    first = next(x for x in out if x["custom_id"] == "a")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "stub reply: hi a"  # type: ignore[index]
    (err,) = await read_lines(svc, done["error_file_id"])
    assert err["custom_id"] == "bad" and err["error"]["code"] == "model_not_found"  # type: ignore[index]
    assert (await svc.get_file(done["output_file_id"], ALICE))["purpose"] == "batch_output"
    with pytest.raises(NotFound):
        await svc.get(b["id"], BOB)
    with pytest.raises(NotFound):
        await svc.file_content(done["output_file_id"], BOB)
    assert (await svc.list_page(BOB))["data"] == []
    assert (await svc.list_page(ALICE))["data"][0]["id"] == b["id"]
    assert stub.stats()["total"] == 3


async def test_resume_skips_written_lines(
    env: tuple[Runtime, StubUpstream, JobQueue], tmp_path: Path
) -> None:
    rt, stub, q = env
    svc = OpenAIBatchService(rt.store.engine, q)
    f = await svc.create_file(
        batch_file([f"r{i}" for i in range(5)]), filename="in.jsonl", purpose="batch"
    )
    b = await svc.create_batch(input_file_id=f["id"], endpoint="/v1/chat/completions")
    # a previous worker stored two results, then died
    await svc.records.change(b["id"], lambda r: r.update(status="in_progress"))  # type: ignore[func-returns-value]
    await svc.records.add_results([
        {"batch_id": b["id"], "custom_id": c, "line_no": n, "ok": True,
         "line": f'{{"id":"x","custom_id":"{c}","response":{{"status_code":200}},"error":null}}'}
        for n, c in ((0, "r0"), (3, "r3"))
    ])
    system = Principal(key_id="sys", team_id=None, is_master=True)
    rec = await svc.execute(rt.pipeline, b["id"], system)
    assert rec["status"] == "completed"
    assert rec["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    out_id = rec["output_file_id"]
    ids = [str(x["custom_id"]) for x in await read_lines(svc, out_id)]
    assert sorted(ids) == ["r0", "r1", "r2", "r3", "r4"] and len(ids) == 5
    assert stub.stats()["total"] == 3
    again = await svc.execute(rt.pipeline, b["id"], system)  # redelivered job: no-op
    assert again["status"] == "completed" and stub.stats()["total"] == 3


async def test_validation(env: tuple[Runtime, StubUpstream, JobQueue], tmp_path: Path) -> None:
    rt, _, q = env
    svc = OpenAIBatchService(rt.store.engine, q)
    dup = await svc.create_file(batch_file(["a", "a"]), filename="d.jsonl", purpose="batch")
    with pytest.raises(BadRequest, match="duplicate custom_id"):
        await svc.create_batch(input_file_id=dup["id"], endpoint="/v1/chat/completions")
    ok = await svc.create_file(batch_file(["a"]), filename="o.jsonl", purpose="batch")
    with pytest.raises(BadRequest, match="url /v1/embeddings"):
        await svc.create_batch(input_file_id=ok["id"], endpoint="/v1/embeddings")
    with pytest.raises(NotFound):
        await svc.create_batch(input_file_id="file-nope", endpoint="/v1/chat/completions")
    b = await svc.create_batch(input_file_id=ok["id"], endpoint="/v1/chat/completions")
    assert (await svc.cancel(b["id"]))["status"] == "cancelling"
    with pytest.raises(NotFound):
        await svc.get("batch_" + "x" * 300)  # ids past any length limit: 404, not OSError
    with pytest.raises(NotFound):
        await svc.get_file("file-" + "x" * 300)
