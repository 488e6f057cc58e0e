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


async def test_sigkill_during_a_busy_run_loses_nothing(
    queue: JobQueue, url: str, tmp_path: Path
) -> None:
    """Two workers drain 150 jobs; one is SIGKILLed mid-run and replaced. Every job ends
    succeeded exactly once, partitions keep their order, nothing is dead-lettered."""
    ids: list[str] = []
    order: dict[str, list[str]] = {"p1": [], "p2": []}
    for i in range(150):
        key = ("p1", "p2", None)[i % 3]
        res = await queue.enqueue(NewJob(task="t", input=i, partition_key=key, max_attempts=5))
        ids.append(res.job.id)
        if key:
            order[key].append(res.job.id)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def start(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "jobs_drain_proc.py"), url, str(log), "1.0"], env=env
        )
        return proc, log

    victim, victim_log = start("victim")
    procs = [victim]
    try:
        # the victim starts alone so that it surely holds jobs when it is killed: started
        # together on a loaded box, the other worker could drain the queue before it got going
        async def victim_ready() -> bool:
            assert victim.poll() is None
            return Path(f"{victim_log}.ready").exists()

        await wait_for(victim_ready, timeout=60)
        other, other_log = start("other")
        procs.append(other)

        async def victim_busy() -> bool:
            assert victim.poll() is None
            return victim_log.exists() and len(victim_log.read_text().splitlines()) >= 20

        await wait_for(victim_busy, timeout=60)
        victim.send_signal(signal.SIGKILL)  # jobs it held are now stuck until their lease ends
        victim.wait()
        spare, spare_log = start("spare")
        procs.append(spare)

        async def drained() -> bool:
            st = await queue.stats()
            return st.depth == 0 and st.in_flight == 0

        await wait_for(drained, timeout=90, step=0.1)

        async def ready() -> bool:
            return all(Path(f"{log}.ready").exists() for log in (other_log, spare_log))

        await wait_for(ready, timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs[1:]:
            assert p.wait(timeout=30) == 0
    jobs = [await queue.get(i) for i in ids]
    assert {j.state for j in jobs} == {"succeeded"}
    assert (await queue.stats()).dlq == 0
    for key, job_ids in order.items():
        finished = [(await queue.get(i)).finished_at for i in job_ids]
        assert finished == sorted(finished), key  # type: ignore[type-var]
    runs = [
        line.split()[0]
        for log in (victim_log, other_log, spare_log)
        for line in log.read_text().splitlines()
    ]
    assert set(runs) == set(ids)  # every job ran; a few may have run twice (killed mid-run)
