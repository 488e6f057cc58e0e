"""Facade pass-through vs nginx, in front of the same upstream, in one run.

    python bench/facade_bench.py [--seconds 5] [--rounds 5] [--concurrency 1,32] [--no-log]

Starts the stand-in upstream (``python -m lockgate.testing.stub_upstream``, answering
``GET /v1/models``), nginx (Debian package; ``proxy_pass`` with upstream keep-alive, one
worker process) and ``lockgate facade`` (one process, no rules matching the path, the call
log on unless ``--no-log``) on loopback, then measures with ``wrk --latency``.

Every measurement lasts ``--seconds`` (the same for the upstream, nginx and the facade).
Each round, at each concurrency, runs ``direct, A, direct, B, direct`` where A/B are nginx
and the facade (``--log-both``: and a second facade with the call log off), their order
rotated every round; a proxy's added latency is its p50 minus the mean p50 of the two
direct runs around it, so slow drift of a shared machine's load
falls on both proxies alike. Reported: the median over the rounds and the range (min-max)
of each proxy's added p50, of the ratio facade/nginx (per round), and of req/s.

The CPU time the proxy process spent per request (``/proc``; nginx: its worker) is printed
too: unlike latency it hardly moves with the load of other work on a shared machine.

Targets (issue 16): facade added p50 <= 1 ms and <= 2x nginx's added p50 at c=1. Prints a
Markdown section with the machine load before and after (append it to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.procs import free_port, wait_port  # noqa: E402

PATH = "/v1/models"


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(parent: int, timeout: float = 10) -> int:
    """The (first) child process of ``parent``: nginx's worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    return int(stat.parent.name)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.05)
    raise RuntimeError(f"process {parent} has no child")


def measure(url: str, conns: int, seconds: float, pid: int | None
            ) -> tuple[float, float, float, float]:
    """(requests/s, p50 ms, p99 ms, CPU us per request of process ``pid``)."""
    before = cpu_seconds(pid) if pid is not None else 0.0
    rps, p50, p99, n = wrk(url, conns, seconds)
    used = cpu_seconds(pid) - before if pid is not None else 0.0
    return rps, p50, p99, used * 1e6 / max(n, 1)


def wrk(url: str, conns: int, seconds: float) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, requests)."""
    threads = 1 if conns == 1 else 2
    secs = max(1, round(seconds))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, n


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


def _round_order(i: int, proxies: list[str]) -> list[str]:
    """direct, P1, direct, P2, ..., direct with the proxies' order rotated every round."""
    k = i % len(proxies)
    turn = proxies[k:] + proxies[:k]
    out = ["direct"]
    for name in turn:
        out += [name, "direct"]
    return out


def _rng(values: list[float], fmt: str) -> str:
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}-{format(max(values), fmt)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--no-log", action="store_true", help="facade call log off (log_calls)")
    ap.add_argument("--log-both", action="store_true",
                    help="also run a second facade with the call log off ('facade-nolog')")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (make services installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-facade-bench-"))
    up, ngx, fac, fac2 = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cfg = tmp / "lockgate.yaml"
    cfg.write_text(f"home: {tmp / 'home'}\nmodels: []\nfacades:\n"
                   f"  - {{name: bench, port: {fac}, upstream: 'http://127.0.0.1:{up}', "
                   f"log_calls: {'false' if args.no_log else 'true'}}}\n")
    cfg2 = tmp / "nolog.yaml"
    cfg2.write_text(f"home: {tmp / 'home2'}\nmodels: []\nfacades:\n"
                    f"  - {{name: bench2, port: {fac2}, upstream: 'http://127.0.0.1:{up}', "
                    "log_calls: false}\n")
    procs = [
        subprocess.Popen([sys.executable, "-m", "lockgate.testing.stub_upstream", "--port",
                          str(up)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(nginx_conf(tmp, ngx, up))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "lockgate", "facade", "-c", str(cfg)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    if args.log_both:
        procs.append(subprocess.Popen([sys.executable, "-m", "lockgate", "facade", "-c",
                                       str(cfg2)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    proxies = ["nginx", "facade"] + (["facade-nolog"] if args.log_both else [])
    load_before = os.getloadavg()
    started = time.gmtime()
    # (proxy, c) -> per round (added p50 ms, req/s, p99 ms, CPU us/req);
    # direct: c -> per run (p50, req/s, p99)
    added: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    direct: dict[int, list[tuple[float, float, float]]] = {}
    try:
        targets = {"direct": up, "nginx": ngx, "facade": fac}
        pids: dict[str, int | None] = {"direct": None, "nginx": child_pid(procs[1].pid),
                                       "facade": procs[2].pid}
        if args.log_both:
            targets["facade-nolog"] = fac2
            pids["facade-nolog"] = procs[3].pid
        for p in targets.values():
            wait_port(p)
        for port in targets.values():  # warm-up: connections, caches
            wrk(f"http://127.0.0.1:{port}{PATH}", 4, 1)
        for i in range(args.rounds):
            for c in levels:
                runs = [(name, measure(f"http://127.0.0.1:{targets[name]}{PATH}", c,
                                       args.seconds, pids[name]))
                        for name in _round_order(i, proxies)]
                d = [r for name, r in runs if name == "direct"]
                direct.setdefault(c, []).extend((p50, rps, p99) for rps, p50, p99, _ in d)
                for k in range(1, len(runs), 2):
                    name, (rps, p50, p99, cpu) = runs[k]
                    base = (runs[k - 1][1][1] + runs[k + 1][1][1]) / 2
                    added.setdefault((name, c), []).append((p50 - base, rps, p99, cpu))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"## Facade pass-through vs nginx, {time.strftime('%Y-%m-%d %H:%M UTC', started)}"
          f" ({commit})\n")
    print(f"`python bench/facade_bench.py --seconds {args.seconds:g} --rounds {args.rounds} "
          f"--concurrency {args.concurrency}{' --no-log' if args.no_log else ''}"
          f"{' --log-both' if args.log_both else ''}` on "
          f"{platform.machine()}, {os.cpu_count()} cores (shared), Python "
          f"{platform.python_version()}; load average (1/5/15 min) "
          f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
          f"{'/'.join(f'{x:.1f}' for x in load_after)} after. Upstream: the stand-in "
          f"(`GET {PATH}`); nginx 1 worker with upstream keep-alive; `lockgate facade` one "
          f"process, call log {'off' if args.no_log else 'on'}"
          f"{' (facade-nolog: a second one with it off)' if args.log_both else ''}; wrk, "
          f"{args.seconds:g} s per measurement for every target; each round direct, then each "
          "proxy followed by direct, the proxies' order rotated every round; median "
          "(min-max) over the rounds.\n")
    print("| c | target | req/s | p50 ms | p99 ms | added p50 ms | proxy CPU us/req |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        dr = direct[c]
        print(f"| {c} | direct | {_rng([x[1] for x in dr], ',.0f')} | "
              f"{_rng([x[0] for x in dr], '.3f')} | {_rng([x[2] for x in dr], '.3f')} |  |  |")
        for name in proxies:
            rows = added[(name, c)]
            base_p50 = [x[0] for x in dr]
            p50s = [x[0] + statistics.median(base_p50) for x in rows]
            print(f"| {c} | {name} | {_rng([x[1] for x in rows], ',.0f')} | "
                  f"{_rng(p50s, '.3f')} | {_rng([x[2] for x in rows], '.3f')} | "
                  f"{_rng([x[0] for x in rows], '.3f')} | {_rng([x[3] for x in rows], '.0f')} |")
    c1 = levels[0]
    fa = [x[0] for x in added[("facade", c1)]]
    ng = [x[0] for x in added[("nginx", c1)]]
    ratios = [f / n if n > 0 else float("inf") for f, n in zip(fa, ng, strict=True)]
    mf, mn = statistics.median(fa), statistics.median(ng)
    ratio = mf / mn if mn > 0 else float("inf")
    print(f"\nAt c={c1}: facade adds {_rng(fa, '.3f')} ms p50 (target <= 1 ms: "
          f"{'met' if mf <= 1 else 'NOT met'}); nginx adds {_rng(ng, '.3f')} ms; ratio of the "
          f"medians {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'}); "
          f"per-round ratios {_rng(ratios, '.2f')}.")


if __name__ == "__main__":
    main()
