"""The gateway app's own CPU per chat request, without uvicorn and without sockets to the client.

    PYTHONPATH=src .venv/bin/python bench/inproc.py [--requests 40000] [--concurrency 64]
        [--profile out.pstats] [--controls]

Starts the stand-in upstream (bench/upstream.py), a fresh home with a team and a virtual key
(the CLI, as bench/targets.py does), builds :func:`lockgate.server.create_app` in this process,
runs its lifespan and drives ``POST /v1/chat/completions`` through the ASGI callable directly
(``--concurrency`` coroutines, each a fresh scope; the body arrives in one ``http.request``
message). Reports the main thread's CPU per request (``time.thread_time``), the process's
(audit writer thread included, after the audit backlog is written) and wall requests/s. With
``--profile`` the measured part runs under cProfile (slower; read the shares, not the totals).
With ``--controls`` the config is bench/hotpath.py's controls-on one (Redis limits + budget,
PII redact, cache) under its own Redis prefix, and every request has a new body (a cache miss,
an e-mail address to redact), as the ``lockgate w=1 controls`` target of bench/overhead.py.

Against the ``lockgate serve`` numbers of bench/ab_hotpath.py this splits a request's cost into
the app's part and the server's (uvicorn, the client socket, the kernel). Not a recorded
target: a tool for finding where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# run as a script, bench/ is first on the path and its profile.py would hide the stdlib's
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cProfile  # noqa: E402

from bench.hotpath import CONTROLS_YAML  # noqa: E402
from bench.procs import ProcessGroup  # noqa: E402
from bench.targets import (  # noqa: E402
    MASTER_KEY,
    _create_virtual_key,
    _lockgate_config,
    drop_redis_prefix,
    lockgate_command,
    start_upstream,
)

BODY = b'{"model": "bench", "messages": [{"role": "user", "content": "hello"}]}'


def _body(n: int | None) -> bytes:
    """The request body; with a counter, a new one per request (as the varying wrk script)."""
    if n is None:
        return BODY
    return (b'{"model":"bench","messages":[{"role":"user","content":"Say ok %d '
            b'(mail me at a@b.example)"}],"max_tokens":8}' % n)


def _scope(key: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "server": ("127.0.0.1", 4000), "client": ("127.0.0.1", 50000),
        "scheme": "http", "method": "POST", "root_path": "", "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:4000"), (b"content-type", b"application/json"),
                    (b"authorization", f"Bearer {key}".encode()),
                    (b"content-length", str(len(body)).encode())],
        "state": {},
    }


async def _drive(app: Any, key: str, total: int, concurrency: int,
                 profile: cProfile.Profile | None, vary: bool) -> tuple[float, float, int]:
    statuses: dict[int, int] = {}
    counter = itertools.count()

    async def one() -> None:
        sent = False
        body = _body(next(counter) if vary else None)

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(_scope(key, body), receive, send)

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    for _ in range(200):  # warm-up
        await one()
    statuses.clear()
    per = total // concurrency
    ru0 = resource.getrusage(resource.RUSAGE_THREAD)
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    if profile is not None:
        profile.disable()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    done = per * concurrency
    print(f"main thread user {1e3 * (ru.ru_utime - ru0.ru_utime) / done:.4f} ms/request, "
          f"system {1e3 * (ru.ru_stime - ru0.ru_stime) / done:.4f} ms/request")
    if statuses.get(200) != done:
        raise SystemExit(f"unexpected statuses: {statuses}")
    return cpu, wall, done


async def _main(args: argparse.Namespace, key: str) -> None:
    from lockgate.interpreter import settle_after_startup
    from lockgate.server import create_app

    app = create_app()
    profile = cProfile.Profile() if args.profile else None
    async with app.router.lifespan_context(app):
        settle_after_startup()
        proc0 = time.process_time()
        cpu, wall, done = await _drive(app, key, args.requests, args.concurrency, profile,
                                       args.controls)
        await app.state.runtime.audit.flush(timeout=300)
        proc = time.process_time() - proc0
    print(f"requests {done}  wall {wall:.2f}s  {done / wall:,.0f} req/s")
    print(f"main thread CPU {1e3 * cpu / done:.4f} ms/request; "
          f"process (audit written) {1e3 * proc / done:.4f} ms/request")
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=40_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--profile", default="")
    ap.add_argument("--controls", action="store_true")
    args = ap.parse_args()
    import uvloop

    with tempfile.TemporaryDirectory(prefix="lockgate-inproc-") as tmp, ProcessGroup() as group:
        work = Path(tmp)
        upstream = start_upstream(group, work)
        home = work / "home"
        home.mkdir()
        config = _lockgate_config(work / "lockgate.yaml", upstream.url)
        prefix = f"lginproc{os.getpid()}:"
        if args.controls:
            config.write_text(config.read_text() + CONTROLS_YAML.format(prefix=prefix))
        env = {**os.environ, "LOCKGATE_MASTER_KEY": MASTER_KEY, "LOCKGATE_HOME": str(home),
               "LOCKGATE_CONFIG": str(config)}
        notes: list[str] = []
        key = _create_virtual_key(lockgate_command(Path("/nonexistent")), config, env, notes)
        if notes:
            raise SystemExit("; ".join(notes))
        os.environ.update({k: env[k] for k in ("LOCKGATE_MASTER_KEY", "LOCKGATE_HOME",
                                               "LOCKGATE_CONFIG")})
        try:
            uvloop.run(_main(args, key))
        finally:
            if args.controls:
                drop_redis_prefix(prefix)


if __name__ == "__main__":
    main()
