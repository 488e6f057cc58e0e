"""Facade pass-through vs nginx, in front of the same upstream, in one run.

    python bench/facade_bench.py [--seconds 5] [--rounds 3] [--concurrency 1,32]

Starts the stand-in upstream (``python -m lockgate.testing.stub_upstream``, answering
``GET /v1/models``), nginx (Debian package; ``proxy_pass`` with upstream keep-alive, one
worker process) and ``lockgate facade`` (one process, no rules matching the path) on
loopback, then measures with ``wrk --latency`` at each concurrency: the upstream directly,
through nginx, through the facade -- interleaved, ``--rounds`` times, medians reported.

Added latency = p50 through the proxy - p50 direct (same round). Targets (issue 16):
facade added p50 <= 1 ms and <= 2x nginx's added p50 at c=1. Prints a Markdown section
(append it to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def wrk(url: str, conns: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms)."""
    threads = 1 if conns == 1 else 2
    secs = max(1, round(seconds))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return rps, p50, p99


def nginx_conf(prefix: Path, port: int, upstream: int) -> Path:
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream legacy {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://legacy;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    return conf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="1,32")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (make services installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-facade-bench-"))
    up, ngx, fac = free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cfg = tmp / "lockgate.yaml"
    cfg.write_text(f"home: {tmp / 'home'}\nmodels: []\nfacades:\n"
                   f"  - {{name: bench, port: {fac}, upstream: 'http://127.0.0.1:{up}'}}\n")
    procs = [
        subprocess.Popen([sys.executable, "-m", "lockgate.testing.stub_upstream", "--port",
                          str(up)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(nginx_conf(tmp, ngx, up))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "lockgate", "facade", "-c", str(cfg)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        for p in (up, ngx, fac):
            wait_port(p)
        targets = {"direct": up, "nginx": ngx, "facade": fac}
        for port in targets.values():  # warm-up: connections, caches
            wrk(f"http://127.0.0.1:{port}{PATH}", 4, 1)
        results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for c in levels:
                for name, port in targets.items():
                    results.setdefault((name, c), []).append(
                        wrk(f"http://127.0.0.1:{port}{PATH}", c, args.seconds))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, c: int, i: int) -> float:
        return statistics.median(r[i] for r in results[(name, c)])

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"## Facade pass-through vs nginx, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f" ({commit})\n")
    print(f"`python bench/facade_bench.py --seconds {args.seconds:g} --rounds {args.rounds} "
          f"--concurrency {args.concurrency}` on {platform.machine()}, {os.cpu_count()} cores "
          f"(shared), Python {platform.python_version()}; upstream: the stand-in "
          f"(`GET {PATH}`); nginx 1 worker with upstream keep-alive; `lockgate facade` one "
          "process; wrk, medians of the rounds.\n")
    print("| c | target | req/s | p50 ms | p99 ms | added p50 ms |")
    print("|---|---|---|---|---|---|")
    for c in levels:
        base = med("direct", c, 1)
        for name in ("direct", "nginx", "facade"):
            added = "" if name == "direct" else f"{med(name, c, 1) - base:.3f}"
            print(f"| {c} | {name} | {med(name, c, 0):,.0f} | {med(name, c, 1):.3f} | "
                  f"{med(name, c, 2):.3f} | {added} |")
    c1 = levels[0]
    fa = med("facade", c1, 1) - med("direct", c1, 1)
    ng = med("nginx", c1, 1) - med("direct", c1, 1)
    ratio = fa / ng if ng > 0 else float("inf")
    print(f"\nAt c={c1}: facade adds {fa:.3f} ms p50 (target <= 1 ms: "
          f"{'met' if fa <= 1 else 'NOT met'}); nginx adds {ng:.3f} ms; ratio {ratio:.2f}x "
          f"(target <= 2x: {'met' if ratio <= 2 else 'NOT met'}).")


if __name__ == "__main__":
    main()
