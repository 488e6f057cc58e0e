"""Jobs per second, end to end, for each queue backend, side by side in one run.

Each backend gets the same workload: one producer enqueues N jobs while one
worker process (this one; ``--concurrency`` jobs in flight) claims, runs and
completes them. A job is either

* ``queue``: a no-op handler — the queue's own cost (enqueue + claim + complete);
* ``e2e``: a prompt task through the real gateway pipeline (``Runtime``: routing,
  retries, accounting, batched audit) to the fast stand-in upstream
  (``bench/upstream.py``, run as its own process).

After each run it checks that every job succeeded exactly once (no job lost,
no result stored twice: the worker counts refused duplicate completions) and
prints a table; ``--record`` appends it to ``bench/RESULTS.md`` (section "Jobs").

In the same run, ``--rivals`` puts the same workload through Dramatiq and Celery
(``bench/jobs_rivals.py``: one worker process each, on Redis and on RabbitMQ). Neither
speaks NATS, so the comparable broker class for lockgate-on-NATS-JetStream is the other
dedicated message broker with acknowledgements and redelivery, RabbitMQ; lockgate-on-Redis
compares with both on the very same Redis. Their ``e2e`` jobs POST straight to the stand-in
upstream (no gateway), lockgate's go through the whole pipeline.

Run: ``.venv/bin/python bench/jobs_bench.py [--jobs 3000] [--backends sqlite,postgres,redis,nats]
[--modes queue,e2e] [--concurrency 64] [--worker-procs 1]
[--rivals dramatiq:redis,celery:redis,dramatiq:rabbitmq,celery:rabbitmq] [--record]``. Needs
the PostgreSQL, Redis, NATS and RabbitMQ servers of this machine for those backends (unique
schema / key prefix / queue, dropped after) and ``pip install dramatiq celery`` for rivals.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent))

from bench.procs import cpu_seconds, free_port, wait_until  # noqa: E402
from lockgate.jobs.backends import open_queue  # noqa: E402
from lockgate.jobs.model import Job, NewJob  # noqa: E402
from lockgate.jobs.queue import JobQueue, QueueOptions  # noqa: E402
from lockgate.jobs.tasks import TaskRunner  # noqa: E402
from lockgate.jobs.worker import Worker, task_handler  # noqa: E402
from lockgate.runtime import Runtime  # noqa: E402
from lockgate.settings import Config, ModelDeployment, TaskSpec  # noqa: E402


@dataclass
class Row:
    backend: str
    mode: str
    jobs: int
    seconds: float
    enqueue_seconds: float
    succeeded: int
    duplicates: int
    lost: int
    cpu: dict[str, float] | None = None
    """CPU seconds over the run: ``worker`` (its processes), ``producer`` (this process,
    enqueueing and watching), ``broker`` (the NATS server; ``--worker-procs`` runs only)."""

    def cpu_ms_per_job(self, part: str) -> float | None:
        if not self.cpu or part not in self.cpu or not self.jobs:
            return None
        return self.cpu[part] * 1000 / self.jobs

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


def queue_url(backend: str, tmp: Path) -> str:
    tag = "lgbench_" + uuid.uuid4().hex[:8]
    if backend == "sqlite":
        return f"sqlite:///{tmp / (tag + '.db')}"
    if backend == "postgres":
        return f"postgresql://postgres@127.0.0.1:5432/test?schema={tag}"
    if backend == "redis":
        return f"redis://127.0.0.1:6379/0?prefix={tag}"
    if backend == "nats":
        return f"nats://127.0.0.1:4222?prefix={tag}"
    raise SystemExit(f"unknown backend {backend}")


def make_handler(mode: str, runtime: Runtime | None) -> Any:
    if mode == "e2e":
        assert runtime is not None
        spec = TaskSpec(name="bench", model="fast", prompt="{{input.text}}", json_mode=False)
        return task_handler(TaskRunner(runtime.pipeline, {"bench": spec}))

    async def handler(job: Job) -> Any:
        return {"ok": job.input["i"]}

    return handler


def fast_config(home: Path, port: int) -> Config:
    return Config(
        home=str(home),
        models=[
            ModelDeployment(
                name="fast",
                provider="openai",
                model="bench-model",
                base_url=f"http://127.0.0.1:{port}/v1",
                max_retries=0,
            )
        ],
    )


def broker_pids(backend: str) -> list[int]:
    """The local broker server's processes (NATS: ``nats-server``), for CPU accounting."""
    name = {"nats": "nats-server", "redis": "redis-server"}.get(backend)
    if name is None:
        return []
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def worker_process(url: str, mode: str, concurrency: int, port: int, home: str) -> None:
    """``--_worker``: drain the queue until SIGTERM, then print the worker's stats as JSON."""
    import json
    import signal

    runtime = await Runtime.start(fast_config(Path(home), port)) if mode == "e2e" else None
    q = open_queue(url, QueueOptions())
    await q.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = Worker(
        q, make_handler(mode, runtime), concurrency=concurrency, lease=60, poll_interval=0.005
    )
    stats = await worker.run(stop)
    await q.aclose()
    if runtime is not None:
        await runtime.aclose()
    print(json.dumps({"completed": stats.completed, "duplicates": stats.duplicates}), flush=True)


async def one_run_procs(
    backend: str,
    mode: str,
    n: int,
    concurrency: int,
    producers: int,
    procs: int,
    tmp: Path,
    port: int,
) -> Row:
    """Producers here, ``procs`` worker processes draining."""
    import json
    import signal

    url = queue_url(backend, tmp)
    q: JobQueue = open_queue(url, QueueOptions(max_depth=10 * n))
    await q.open()
    workers: list[subprocess.Popen[str]] = []
    try:
        for k in range(procs):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--_worker",
                        url,
                        mode,
                        str(concurrency),
                        str(port),
                        str(tmp / f"whome{k}"),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        # warm-up job (not timed): the workers are up and draining before the clock starts
        warm = (await q.enqueue(NewJob(task="bench", input={"i": -1, "text": "warm"}))).job.id
        deadline = time.monotonic() + 120
        while (await q.get(warm)).state != "succeeded" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ids: list[str] = []

        async def producer(start: int) -> None:
            for i in range(start, n, producers):
                res = await q.enqueue(NewJob(task="bench", input={"i": i, "text": f"job {i}"}))
                ids.append(res.job.id)

        wpids, bpids = [w.pid for w in workers], broker_pids(backend)
        cpu0 = (cpu_seconds(wpids), _self_cpu(), cpu_seconds(bpids))
        started = time.perf_counter()
        await asyncio.gather(*(producer(k) for k in range(producers)))
        enqueue_seconds = time.perf_counter() - started
        while True:
            st = await q.stats()
            if st.depth == 0 and st.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
        cpu1 = (cpu_seconds(wpids), _self_cpu(), cpu_seconds(bpids))
        cpu = {"worker": cpu1[0] - cpu0[0], "producer": cpu1[1] - cpu0[1]}
        if bpids:
            cpu["broker"] = cpu1[2] - cpu0[2]
        dup = 0
        for w in workers:
            w.send_signal(signal.SIGTERM)
            out, _ = w.communicate(timeout=60)
            dup += int(json.loads(out.strip().splitlines()[-1])["duplicates"])
        succeeded = 0
        for job_id in ids:
            if (await q.get(job_id)).state == "succeeded":
                succeeded += 1
        return Row(
            backend, f"{mode} x{procs}p", n, seconds, enqueue_seconds, succeeded, dup,
            n - succeeded, cpu,
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        await q.drop()
        await q.aclose()


async def one_run(
    backend: str,
    mode: str,
    n: int,
    concurrency: int,
    producers: int,
    tmp: Path,
    runtime: Runtime | None,
) -> Row:
    q: JobQueue = open_queue(queue_url(backend, tmp), QueueOptions(max_depth=10 * n))
    await q.open()
    try:
        handler = make_handler(mode, runtime)
        worker = Worker(q, handler, concurrency=concurrency, lease=60, poll_interval=0.005)
        stop = asyncio.Event()
        ids: list[str] = []
        started = time.perf_counter()

        async def producer(start: int) -> None:
            for i in range(start, n, producers):
                res = await q.enqueue(NewJob(task="bench", input={"i": i, "text": f"job {i}"}))
                ids.append(res.job.id)

        async def produce() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(producer(k) for k in range(producers)))
            return time.perf_counter() - t0

        wtask = asyncio.create_task(worker.run(stop))
        enqueue_seconds = await produce()
        while worker.stats.completed + worker.stats.dead < n:
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - started
        stop.set()
        await wtask
        succeeded = 0
        for job_id in ids:
            if (await q.get(job_id)).state == "succeeded":
                succeeded += 1
        return Row(
            backend,
            mode,
            n,
            seconds,
            enqueue_seconds,
            succeeded,
            worker.stats.duplicates,
            n - succeeded,
        )
    finally:
        await q.drop()
        await q.aclose()


async def _lockgate_run(args: argparse.Namespace, backend: str, mode: str, tmp: Path,
                        port: int, runtime: Runtime | None) -> Row:
    if args.worker_procs:
        return await one_run_procs(backend, mode, args.jobs, args.concurrency, args.producers,
                                   args.worker_procs, tmp, port)
    return await one_run(backend, mode, args.jobs, args.concurrency, args.producers, tmp,
                         runtime)


def _rival_run(args: argparse.Namespace, rival: str, mode: str, port: int) -> Row:
    from bench.jobs_rivals import run_rival

    system, broker = rival.split(":")
    seconds, lost, dup = run_rival(system, broker, mode, args.jobs, args.producers,
                                   args.rival_threads, port)
    return Row(f"{system}+{broker}", f"{mode} x1p", args.jobs, seconds, 0.0, args.jobs - lost,
               dup, lost)


async def main_async(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    modes = args.modes.split(",")
    upstream = None
    runtime = None
    port = 0
    with tempfile.TemporaryDirectory(prefix="lgjobsbench") as tmpdir:
        tmp = Path(tmpdir)
        try:
            if "e2e" in modes:
                port = free_port()
                upstream = subprocess.Popen(
                    [sys.executable, str(HERE / "upstream.py"), "--port", str(port)],
                    start_new_session=True,
                )
                wait_until(lambda: _health(port), timeout=15)
                runtime = await Runtime.start(fast_config(tmp / "home", port))
            if not port and args.rivals:
                port = free_port()
                upstream = subprocess.Popen(
                    [sys.executable, str(HERE / "upstream.py"), "--port", str(port)],
                    start_new_session=True,
                )
                wait_until(functools.partial(_health, port), timeout=15)
            systems = [("lockgate", b) for b in args.backends.split(",")] + [
                ("rival", r) for r in filter(None, args.rivals.split(","))
            ]
            for rnd in range(args.rounds):
                # rotate the order every round: no system always runs first (or last)
                k = rnd % len(systems)
                for mode in modes:
                    for kind, name in systems[k:] + systems[:k]:
                        if kind == "lockgate":
                            row = await _lockgate_run(args, name, mode, tmp, port, runtime)
                        else:
                            row = _rival_run(args, name, mode, port)
                        cpu = " ".join(f"{k} {row.cpu_ms_per_job(k):.3f}"
                                       for k in (row.cpu or {}))
                        print(
                            f"round {rnd + 1} {row.backend:17s} {row.mode:9s} {row.rate:8.0f} "
                            f"jobs/s (lost {row.lost}, dup {row.duplicates})"
                            + (f"  CPU ms/job: {cpu}" if cpu else ""),
                            flush=True,
                        )
                        rows.append(row)
        finally:
            if runtime is not None:
                await runtime.aclose()
            if upstream is not None:
                os.killpg(upstream.pid, 15)
                upstream.wait()
    return rows


def _health(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def render(rows: list[Row], args: argparse.Namespace) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## Jobs ({stamp})",
        "",
        f"`bench/jobs_bench.py --jobs {args.jobs} --concurrency {args.concurrency} "
        f"--producers {args.producers} --worker-procs {args.worker_procs} "
        f"--backends {args.backends} --modes {args.modes} --rounds {args.rounds}` on "
        f"{os.cpu_count()} CPUs ({platform.python_implementation()} "
        f"{platform.python_version()}). {args.producers} concurrent producers enqueue; "
        + (
            f"{args.worker_procs} separate worker process(es)"
            if args.worker_procs
            else "a worker in the same process and event loop"
        )
        + f" ({args.concurrency} jobs in flight each) drain. Rivals ({args.rivals or 'none'}):"
        f" one Dramatiq/Celery worker process with {args.rival_threads} threads, the same"
        " producers; their `e2e` jobs POST straight to the stand-in upstream (no gateway)."
        " `queue` = no-op job (the queue's "
        "own cost: enqueue, claim under a lease, complete); `e2e` = a prompt task through the "
        "gateway pipeline (routing, accounting, batched audit) to the fast stand-in upstream. "
        "jobs/s = jobs / (first enqueue .. last completion). Lost/duplicated are checked after "
        "each run: every job must end `succeeded`, stored once. "
        f"Machine load average at the end: {os.getloadavg()[0]:.1f} (shared with other work).",
        "",
        f"Each configuration ran {args.rounds} time(s), the order rotated every round; the "
        "table shows the median and the range.",
        "",
        "| system | mode | jobs | jobs/s end to end, median | range | enqueue/s (median) "
        "| lost | duplicated | CPU ms/job: worker / producer / broker (median) |",
        "|---|---|---:|---:|---|---:|---:|---:|---|",
    ]
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.backend, r.mode), []).append(r)
    for (backend, mode), rs in groups.items():
        rates = sorted(r.rate for r in rs)
        enq = sorted(r.jobs / r.enqueue_seconds for r in rs if r.enqueue_seconds)
        name = backend if backend.count("+") else f"lockgate on {backend}"
        parts = []
        for part in ("worker", "producer", "broker"):
            vals = [v for r in rs if (v := r.cpu_ms_per_job(part)) is not None]
            parts.append(f"{statistics.median(vals):.3f}" if vals else "-")
        lines.append(
            f"| {name} | {mode} | {rs[0].jobs} | {statistics.median(rates):.0f} | "
            f"{rates[0]:.0f}-{rates[-1]:.0f} | "
            f"{f'{statistics.median(enq):.0f}' if enq else '-'} | "
            f"{sum(r.lost for r in rs)} | {sum(r.duplicates for r in rs)} | "
            f"{' / '.join(parts)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--backends", default="sqlite,postgres,redis")
    p.add_argument("--modes", default="queue,e2e")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--producers", type=int, default=16, help="concurrent enqueuers")
    p.add_argument(
        "--worker-procs",
        type=int,
        default=0,
        help="run workers in N separate processes (0: in this process)",
    )
    p.add_argument("--rivals", default="dramatiq:redis,celery:redis,dramatiq:rabbitmq,"
                   "celery:rabbitmq", help="system:broker list run in the same session ('' none)")
    p.add_argument("--rival-threads", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1, help="repeat everything, rotating order")
    p.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    p.add_argument("--_worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        url, mode, conc, port, home = args._worker
        import uvloop

        uvloop.install()
        asyncio.run(worker_process(url, mode, int(conc), int(port), home))
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = asyncio.run(main_async(args))
    text = render(rows, args)
    print(text)
    if args.record:
        with (HERE / "RESULTS.md").open("a") as f:
            f.write(text)
    if any(r.lost or r.duplicates for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
