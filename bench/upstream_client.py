"""Client-side CPU of the providers' upstream HTTP client, A/B between source trees.

Starts the stand-in upstream (``bench/upstream.py``, its own process) and, for each
``--src LABEL=DIR``, a child process that imports ``lockgate.providers.upstream_http`` from
``DIR`` and drives ``UpstreamHTTP.post_json`` (and, with ``--stream``, ``stream``) at each
concurrency level for ``--requests`` requests on uvloop. The child reports its own CPU time
(user + system, ``time.process_time``) per request: only the client's cost, not the
upstream's. Rounds alternate between the trees (``--rounds``) so machine noise hits both;
the table shows the median per tree and level.

Run: ``python bench/upstream_client.py --src before=/path/old/src --src after=src``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO))

from bench.procs import free_port, wait_port  # noqa: E402

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import asyncio, json, sys, time
import uvloop
from yarl import URL
from lockgate.providers.upstream_http import UpstreamHTTP
from lockgate.settings import Timeouts

url, conc, n, stream = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
SBODY = b'{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'

async def main():
    http = UpstreamHTTP(timeouts=Timeouts(), headers={"Authorization": "Bearer sk-bench"},
                        max_connections=64)
    u = URL(url)
    left = [n]

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            if stream:
                async for _ev in http.stream(u, SBODY):
                    pass
            else:
                await http.post_json(u, BODY)

    await asyncio.gather(*(worker() for _ in range(conc)))  # warm-up: connections open
    left[0] = n
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    c1, t1 = time.process_time(), time.perf_counter()
    await http.aclose()
    print(json.dumps({"cpu_ms": (c1 - c0) * 1000 / n, "rps": n / (t1 - t0)}))

uvloop.run(main())
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--src", action="append", required=True, metavar="LABEL=DIR")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stream", action="store_true", help="also measure streamed answers")
    args = ap.parse_args(argv)
    trees = [tuple(s.split("=", 1)) for s in args.src]
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = [False, True] if args.stream else [False]
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    results: dict[tuple[str, bool, int], list[dict[str, float]]] = {}
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for _ in range(args.rounds):
            for stream in modes:
                for conc in levels:
                    for label, src in trees:
                        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                        out = subprocess.run(
                            [sys.executable, "-c", _CHILD, url, str(conc), str(args.requests),
                             "1" if stream else "0"],
                            env=env, capture_output=True, text=True, check=True,
                        )
                        results.setdefault((label, stream, conc), []).append(
                            json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        upstream.terminate()
        upstream.wait(5)
    print(f"{'tree':<12} {'mode':<7} {'conc':>5} {'client CPU ms/req':>18} {'req/s':>8}")
    for stream in modes:
        for conc in levels:
            for label, _src in trees:
                runs = results[(label, stream, conc)]
                cpu = statistics.median(r["cpu_ms"] for r in runs)
                rps = statistics.median(r["rps"] for r in runs)
                mode = "stream" if stream else "json"
                print(f"{label:<12} {mode:<7} {conc:>5} {cpu:>18.4f} {rps:>8.0f}")


if __name__ == "__main__":
    main()
