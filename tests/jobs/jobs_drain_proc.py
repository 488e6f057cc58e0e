"""A worker process that logs every job run: ``python jobs_drain_proc.py QUEUE_URL LOG [LEASE]``.

Each run appends ``<job id> <attempt>`` to LOG; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from typing import Any

from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import Job
from lockgate.jobs.worker import Worker


async def main(url: str, log: str, lease: float) -> None:
    queue = open_queue(url)
    await queue.open()
    out = open(log, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole run

    async def handler(job: Job) -> Any:
        await asyncio.sleep(random.random() * 0.02)
        out.write(f"{job.id} {job.attempts}\n")
        return job.input

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(log + ".ready", "w") as ready:  # SIGTERM is handled from here on
        ready.write("ok")
    await Worker(queue, handler, concurrency=8, lease=lease, poll_interval=0.01).run(stop)
    out.close()
    await queue.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 10.0))
