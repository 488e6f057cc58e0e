"""A worker process for the SIGKILL test: the first attempt of every job hangs.

usage: python jobs_worker_proc.py QUEUE_URL MARKER_DIR LEASE
Writes MARKER_DIR/started-<job id> when it starts a job's first attempt, then
sleeps (the test kills it with SIGKILL); later attempts would answer at once.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import Job
from lockgate.jobs.queue import QueueOptions
from lockgate.jobs.worker import Worker


async def main(url: str, marker_dir: Path, lease: float) -> None:
    queue = open_queue(url, QueueOptions(backoff_base=0.05, backoff_cap=0.2))
    await queue.open()

    async def handler(job: Job) -> Any:
        with (marker_dir / "effects.log").open("a") as f:
            f.write(f"{job.id} {job.attempts} proc\n")
        if job.attempts == 1:
            (marker_dir / f"started-{job.id}").write_text("x")
            await asyncio.sleep(3600)
        return {"by": "proc"}

    worker = Worker(queue, handler, concurrency=2, lease=lease, poll_interval=0.05)
    await worker.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])))
