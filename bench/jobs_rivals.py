"""Dramatiq and Celery running the jobs workload, for ``bench/jobs_bench.py``.

One worker process per run (``threads`` threads: Dramatiq's default is 8, Celery's thread
pool gets the same), fed by ``producers`` threads of this process, on a Redis or RabbitMQ
broker. ``queue`` = a no-op job; ``e2e`` = the job POSTs one chat completion straight to the
stand-in upstream (no gateway in the path: neither has governance to apply, so this
flatters them). Returns (seconds from first send to last run, lost, duplicated).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

__all__ = ["run_rival"]


def _env(ns: str, broker: str, mode: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "LG_YARD_NS": ns,
        "LG_YARD_BROKER": broker,
        "LG_YARD_MODE": mode,
        "LG_YARD_UPSTREAM": f"127.0.0.1:{port}",
        "PYTHONPATH": str(HERE),
    }


def _worker_cmd(system: str, ns: str, threads: int) -> list[str]:
    if system == "dramatiq":
        return [sys.executable, "-m", "dramatiq", "jobs_dramatiq_actors", "--processes", "1",
                "--threads", str(threads), "--queues", ns]
    return [sys.executable, "-m", "celery", "-A", "jobs_celery_tasks", "worker", "--pool",
            "threads", "--concurrency", str(threads), "-Q", ns, "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def _drop_rabbit_queues(ns: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        ch = conn.channel()
        for q in (ns, f"{ns}.DQ", f"{ns}.XQ"):
            ch.queue_delete(q)
    finally:
        conn.close()


def run_rival(system: str, broker: str, mode: str, n: int, producers: int, threads: int,
              port: int) -> tuple[float, int, int]:
    import redis

    ns = "lgyard" + uuid.uuid4().hex[:8]
    env = _env(ns, broker, mode, port)
    os.environ.update({k: env[k] for k in ("LG_YARD_NS", "LG_YARD_BROKER", "LG_YARD_MODE")})
    sys.path.insert(0, str(HERE))
    module = importlib.reload(importlib.import_module(
        "jobs_dramatiq_actors" if system == "dramatiq" else "jobs_celery_tasks"))
    if system == "dramatiq":
        def send(i: int) -> None:
            module.bench_job.send(i)
    else:
        def send(i: int) -> None:
            module.bench_job.delay(i)
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    worker = subprocess.Popen(_worker_cmd(system, ns, threads), env=env, cwd=str(HERE),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        send(-1)  # warm-up job: the worker is up and consuming before the clock starts
        deadline = time.monotonic() + 120
        while not r.sismember(f"{ns}:done", "-1") and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.perf_counter()
        def burst(k: int) -> None:
            for i in range(k, n, producers):
                send(i)

        with ThreadPoolExecutor(producers) as pool:
            list(pool.map(burst, range(producers)))
        deadline = time.monotonic() + 600
        while int(r.scard(f"{ns}:done") or 0) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        done = int(r.scard(f"{ns}:done") or 0) - 1
        runs = int(r.get(f"{ns}:runs") or 0) - 1
        return seconds, n - done, runs - done
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        keys = list(r.scan_iter(match=f"{ns}*", count=1000))
        if keys:
            r.delete(*keys)
        if system == "celery" and broker == "redis":
            r.delete(ns)
        if broker == "rabbitmq":
            _drop_rabbit_queues(ns)
