"""The yardstick for ``bench/jobs_bench.py``: the same workload through Dramatiq on Redis.

What users would pick instead of lockgate's queue: Dramatiq 2 with its Redis broker,
one worker process (``--threads`` threads, Dramatiq's default 8), jobs enqueued by
``--producers`` threads from this process. ``queue`` = a no-op actor; ``e2e`` = the actor
POSTs one chat completion straight to the fast stand-in upstream (no gateway: Dramatiq has
no governance to apply, so this flatters it). Prints jobs/s and lost/duplicated counts;
``--record`` appends to ``bench/RESULTS.md``.

Run: ``.venv/bin/python bench/jobs_yardstick.py [--jobs 4000] [--modes queue,e2e]``
(needs ``pip install 'dramatiq[redis]'`` and the Redis server on 127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.procs import free_port, wait_until  # noqa: E402


def _health(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def one_run(mode: str, n: int, producers: int, threads: int, port: int) -> tuple[float, int, int]:
    import redis

    ns = "lgyard" + uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "LG_YARD_NS": ns,
        "LG_YARD_MODE": mode,
        "LG_YARD_UPSTREAM": f"127.0.0.1:{port}",
        "PYTHONPATH": str(HERE),
    }
    os.environ.update({"LG_YARD_NS": ns, "LG_YARD_MODE": mode})
    import importlib

    from bench import jobs_dramatiq_actors as actors

    actors = importlib.reload(actors)  # picks up this run's namespace
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "jobs_dramatiq_actors",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ],
        env=env,
        cwd=str(HERE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)  # worker boot, not timed
        started = time.perf_counter()
        with ThreadPoolExecutor(producers) as pool:
            list(
                pool.map(
                    lambda k: [actors.bench_job.send(i) for i in range(k, n, producers)],
                    range(producers),
                )
            )
        deadline = time.monotonic() + 600
        while int(r.scard(f"{ns}:done") or 0) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        done = int(r.scard(f"{ns}:done") or 0)
        runs = int(r.get(f"{ns}:runs") or 0)
        return seconds, n - done, runs - done
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        keys = list(r.scan_iter(match=f"{ns}*", count=1000))
        if keys:
            r.delete(*keys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=4000)
    p.add_argument("--modes", default="queue,e2e")
    p.add_argument("--producers", type=int, default=16)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), "--port", str(port)], start_new_session=True
    )
    rows = []
    try:
        wait_until(lambda: _health(port), timeout=15)
        for mode in args.modes.split(","):
            seconds, lost, dup = one_run(mode, args.jobs, args.producers, args.threads, port)
            rate = args.jobs / seconds
            print(f"dramatiq  {mode:6s} {rate:8.0f} jobs/s  (lost {lost}, dup {dup})", flush=True)
            rows.append((mode, rate, lost, dup))
    finally:
        os.killpg(upstream.pid, 15)
        upstream.wait()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        "\n".join(
            [
                "",
                f"### Jobs yardstick: Dramatiq on Redis ({stamp})",
                "",
                f"`bench/jobs_yardstick.py --jobs {args.jobs} --producers {args.producers} "
                f"--threads {args.threads}`: Dramatiq 2 + Redis broker, one worker process with "
                f"{args.threads} threads; `e2e` actors POST straight to the stand-in upstream "
                "(no gateway in the path). "
                f"Load average at the end: {os.getloadavg()[0]:.1f}.",
                "",
                "| system | mode | jobs | jobs/s end to end | lost | duplicated |",
                "|---|---|---:|---:|---:|---:|",
                *[
                    f"| dramatiq+redis | {m} | {args.jobs} | {r:.0f} | {lo} | {d} |"
                    for m, r, lo, d in rows
                ],
            ]
        )
        + "\n"
    )
    print(text)
    if args.record:
        with (HERE / "RESULTS.md").open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
