"""A worker process killed (SIGKILL, by itself) right after it stored a job's result.

usage: python jobs_webhook_proc.py QUEUE_URL MARKER_DIR
The worker has a webhook sender (so its outbox deliverer runs), but the process dies
between ``queue.complete`` returning and anything else running: the moment where a
webhook sent "in the background after saving the result" used to be lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import Delivery, Job
from lockgate.jobs.queue import QueueOptions
from lockgate.jobs.webhooks import WebhookSender
from lockgate.jobs.worker import Worker


async def main(url: str, marker_dir: Path) -> None:
    queue = open_queue(url, QueueOptions(backoff_base=0.05, backoff_cap=0.2))
    await queue.open()
    complete = queue.complete

    async def complete_then_die(d: Delivery, result: Any) -> bool:
        stored = await complete(d, result)
        (marker_dir / f"stored-{d.job.id}").write_text(str(stored))
        os.kill(os.getpid(), signal.SIGKILL)  # no await in between: nothing else runs
        return stored

    queue.complete = complete_then_die  # type: ignore[method-assign]

    async def handler(job: Job) -> Any:
        return {"answer": job.input}

    sender = WebhookSender("proc-secret", attempts=3, backoff_base=0.05)
    worker = Worker(queue, handler, concurrency=1, lease=5, poll_interval=0.02, webhooks=sender)
    await worker.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
