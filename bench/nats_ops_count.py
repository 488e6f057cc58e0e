"""What the NATS job queue asks of the server per job: messages by kind, and server CPU.

Drains ``--jobs`` no-op jobs (each sleeping ``--job-sleep`` seconds, so jobs overlap as in a
real worker) through one in-process :class:`~lockgate.jobs.worker.Worker` while
``--producers`` coroutines enqueue, counting every message the client sends
(``nats.aio.client.Client.publish``: JetStream publishes with an answer, core publishes,
acks/naks, API requests) and every job message delivered by a pull. The NATS server's CPU
over the drain comes from ``/proc/<nats-server pid>/stat`` (same machine only). No
``stats()`` polling during the drain, unlike ``jobs_bench.py``.

Run: ``PYTHONPATH=src .venv/bin/python bench/nats_ops_count.py [--jobs 4000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from nats.aio.client import Client

from lockgate.jobs import nats_wire
from lockgate.jobs.model import Job, NewJob
from lockgate.jobs.nats_queue import NatsQueue
from lockgate.jobs.queue import QueueOptions
from lockgate.jobs.worker import Worker

counts: collections.Counter[str] = collections.Counter()


def _kind(subject: str, payload: bytes, reply: str, headers: Any) -> str:
    if subject.startswith("$JS.API."):
        return "API request " + ".".join(subject.split(".")[2:4])
    if subject.startswith("$JS.ACK."):
        word = bytes(payload[:4]).decode(errors="replace")
        return f"{word} (with reply)" if reply else word
    if subject.startswith("$KV."):
        return "KV write (create/compare-and-set)"
    token = subject.split(".")[1] if "." in subject else subject
    return f"publish {token}.* " + ("(answered)" if reply else "(no answer)")


def _install_counters() -> None:
    publish = Client.publish

    async def counted(self: Client, subject: str, payload: bytes = b"", reply: str = "",
                      headers: Any = None) -> None:
        counts[_kind(subject, payload, reply, headers)] += 1
        await publish(self, subject, payload, reply, headers)

    Client.publish = counted  # type: ignore[method-assign]
    on_msg = nats_wire._Lane.on_msg

    async def delivered(self: nats_wire._Lane, msg: Any) -> None:
        if not (msg.headers and msg.headers.get("Status")):
            counts["delivery from " + self.api.rsplit(".", 1)[-1]] += 1
        await on_msg(self, msg)

    nats_wire._Lane.on_msg = delivered  # type: ignore[method-assign]


def _server_cpu() -> float | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "nats-server":
                    f = (d / "stat").read_text().split(")")[1].split()
                    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
    return None


async def main(n: int, concurrency: int, producers: int, job_sleep: float) -> None:
    q = NatsQueue(f"nats://127.0.0.1:4222?prefix=lgopcount_{uuid.uuid4().hex[:8]}",
                  QueueOptions(max_depth=10 * n))
    await q.open()

    async def handler(job: Job) -> Any:
        await asyncio.sleep(job_sleep)
        return {"ok": job.input["i"]}

    worker = Worker(q, handler, concurrency=concurrency, lease=60, poll_interval=0.005)
    stop = asyncio.Event()
    try:
        counts.clear()
        cpu0, t0 = _server_cpu(), time.perf_counter()
        task = asyncio.create_task(worker.run(stop))

        async def produce(k: int) -> None:
            for i in range(k, n, producers):
                await q.enqueue(NewJob(task="b", input={"i": i}))

        await asyncio.gather(*(produce(k) for k in range(producers)))
        while worker.stats.completed < n:
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - t0
        cpu1 = _server_cpu()
        stop.set()
        await task
    finally:
        await q.drop()
        await q.aclose()
    print(f"{n} jobs in {seconds:.2f} s ({n / seconds:.0f} jobs/s, in-process worker)")
    if cpu0 is not None and cpu1 is not None:
        print(f"nats-server CPU: {1e6 * (cpu1 - cpu0) / n:.0f} us per job")
    for kind, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:45s} {v:7d}  {v / n:.3f} per job")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--producers", type=int, default=16)
    p.add_argument("--job-sleep", type=float, default=0.02)
    a = p.parse_args()
    _install_counters()
    asyncio.run(main(a.jobs, a.concurrency, a.producers, a.job_sleep))
