"""Two worker processes share one queue: every job runs exactly once, partitions stay ordered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lockgate.jobs.model import NewJob
from lockgate.jobs.queue import JobQueue
from tests.jobs.test_jobs_worker import wait_for

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


async def test_two_processes_share_the_queue(queue: JobQueue, url: str, tmp_path: Path) -> None:
    ids: list[str] = []
    part_order: dict[str, list[str]] = {"p1": [], "p2": []}
    for i in range(120):
        key = ("p1", "p2", None)[i % 3]
        res = await queue.enqueue(NewJob(task="t", input=i, partition_key=key))
        ids.append(res.job.id)
        if key:
            part_order[key].append(res.job.id)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    logs = [tmp_path / f"w{k}.log" for k in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "jobs_drain_proc.py"), url, str(log)], env=env)
        for log in logs
    ]
    try:

        async def drained() -> bool:
            assert all(p.poll() is None for p in procs), "a worker died"
            st = await queue.stats()
            return st.depth == 0 and st.in_flight == 0

        await wait_for(drained, timeout=60, step=0.1)

        async def ready() -> bool:
            return all(Path(f"{log}.ready").exists() for log in logs)

        await wait_for(ready, timeout=60)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=30) == 0
    runs = [
        line.split()[0] for log in logs if log.exists() for line in log.read_text().splitlines()
    ]
    assert sorted(runs) == sorted(ids)  # each job ran once, none lost
    for key, order in part_order.items():
        # a partition's jobs finished in submission order even across the two processes
        finished = [(await queue.get(i)).finished_at for i in order]
        assert finished == sorted(finished), key  # type: ignore[type-var]
