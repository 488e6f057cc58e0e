"""Batch runs: a run killed half-way resumes without redoing or duplicating records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from lockgate.jobs.batch import done_indexes, read_records, run_batch
from lockgate.jobs.tasks import TaskRunner, builtin_tasks
from lockgate.runtime import Runtime
from lockgate.settings import Config, ModelDeployment, TaskSpec
from lockgate.testing.stub_upstream import StubUpstream

SRC = Path(__file__).parent.parent.parent / "src"


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def test_read_records_jsonl_and_csv(tmp_path: Path) -> None:
    j = tmp_path / "a.jsonl"
    j.write_text('{"id": 1}\n\n"two"\n')
    assert list(read_records(j)) == [{"id": 1}, "two"]
    c = tmp_path / "a.csv"
    c.write_text("id,text\n1,hello\n2,world\n")
    assert list(read_records(c)) == [{"id": "1", "text": "hello"}, {"id": "2", "text": "world"}]
    bad = tmp_path / "b.jsonl"
    bad.write_text("{nope\n")
    with pytest.raises(ValueError, match=r"b\.jsonl:1"):
        list(read_records(bad))


def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"index": 0}\n{"index": 1}\n{"ind')
    assert done_indexes(out) == {0, 1}
    assert out.read_bytes() == b'{"index": 0}\n{"index": 1}\n'


async def test_batch_rejects_with_reasons(stub: StubUpstream, tmp_path: Path) -> None:
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
    try:
        spec = TaskSpec(name="t", model="m", prompt="Summarize {{input.text}}", max_attempts=2)
        runner = TaskRunner(rt.pipeline, {"t": spec})
        src = tmp_path / "in.jsonl"
        src.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n{"id": "c", "text": "y"}\n')
        out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
        s = await run_batch(runner, "t", src, out, rej, concurrency=2)
        assert (s.total, s.done, s.failed) == (3, 2, 1)
        assert sorted(str(x["id"]) for x in lines(out)) == ["a", "c"]
        (r,) = lines(rej)
        assert r["id"] == "b" and "TaskInputInvalid" in str(r["error"])
        again = await run_batch(runner, "t", src, out, rej, concurrency=2)
        assert (again.skipped, again.done, again.failed) == (3, 0, 0)
    finally:
        await rt.aclose()


async def test_killed_batch_resumes_without_duplicates(stub: StubUpstream, tmp_path: Path) -> None:
    n = 60
    src = tmp_path / "tickets.jsonl"
    src.write_bytes(
        b"".join(orjson.dumps({"id": f"t{i}", "text": f"ticket {i}"}) + b"\n" for i in range(n))
    )
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'home'}\nmodels:\n  - name: local\n    provider: openai\n"
        f"    base_url: {stub.openai_base}\n    model: slow:80\n    max_retries: 0\n"
    )
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "lockgate",
        "batch",
        "run",
        str(src),
        "--task",
        "summarize",
        "--out",
        str(out),
        "-n",
        "2",
        "-y",
        "-c",
        str(cfg),
    ]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(lines(out)) < 10:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "batch made no progress"
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    await asyncio.sleep(0.5)  # let the stub (in this loop) count requests already on the wire
    first = len(done_indexes(out))
    assert 10 <= first < n
    calls_before = stub.stats()["total"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while proc.poll() is None:
        await asyncio.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    rows = lines(out)
    assert len(rows) == n
    assert sorted(int(str(r["index"])) for r in rows) == list(range(n))
    assert {r["id"] for r in rows} == {f"t{i}" for i in range(n)}
    # the second run only called the model for the records that were missing
    assert stub.stats()["total"] - calls_before == n - first
    assert not (tmp_path / "out.rejects.jsonl").read_bytes()


def test_builtins_exist() -> None:
    assert set(builtin_tasks()) == {"classify", "extract", "summarize", "triage"}
