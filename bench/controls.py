"""What governance costs on the request path: the same load with controls off and on.

    .venv/bin/python bench/controls.py                # ~1 min, appends to bench/RESULTS.md
    .venv/bin/python bench/controls.py --no-record    # print only

Targets (each ``lockgate serve`` with 1 worker, a fresh SQLite home, audit on, in
front of the fast stand-in upstream ``bench/upstream.py``):

- ``off``: no governance configured (the foundation path);
- ``on (memory)``: team rate limits + team budget + per-key limits, breaker,
  guards (PII ``redact`` on every message, injection ``flag``) with in-process state;
- ``on (redis)``: the same with ``redis_url`` (Redis on 127.0.0.1:6379, own key prefix,
  deleted afterwards): one Lua round-trip to admit, one to settle, breaker outcomes.

The response cache stays off (a hit would skip the upstream and flatter the numbers).
Per target: wrk at 1 and 8 connections (``--seconds`` each, after a warm-up) and 300
sequential requests reading ``x-lockgate-overhead-ms`` (time inside lockgate).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.loadgen import probe_overhead_header, run_wrk, write_wrk_script  # noqa: E402
from bench.procs import ProcessGroup, cpu_seconds, free_port, wait_until  # noqa: E402
from bench.targets import (  # noqa: E402
    BENCH_BODY,
    CHAT_PATH,
    MASTER_KEY,
    _answers_chat,
    _clean_env,
    _create_virtual_key,
    drop_redis_prefix,
    lockgate_command,
    start_upstream,
)

REDIS_URL = "redis://127.0.0.1:6379/0"

_CONTROLS = """
teams:
  bench:
    limits: {rpm: 100000000, tpm: 10000000000}
    budget: {daily: 1000000000}
    key_limits: {rpm: 100000000}
breaker: {}
guards:
  pii: {action: redact}
  injection: {action: flag}
"""


@dataclass
class Row:
    name: str
    p50_c1: float
    p50_c8: float
    rps_c8: float
    cpu_ms: float
    overhead_ms: float | None
    errors: int


def _config(path: Path, upstream_url: str, variant: str, prefix: str) -> Path:
    base = upstream_url.removesuffix(CHAT_PATH) + "/v1"
    text = ("models:\n  - {name: bench, provider: openai, base_url: " + base
            + ", model: bench-model, api_key: sk-bench,"
            + " pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n")
    if variant != "off":
        text += _CONTROLS
    if variant == "redis":
        text += f"redis_url: {REDIS_URL}\nredis_prefix: \"{prefix}\"\n"
    path.write_text(text)
    return path


def measure(group: ProcessGroup, work: Path, upstream_url: str, variant: str, prefix: str,
            seconds: float) -> Row:
    cmd = lockgate_command(Path(sys.executable).parent / "lockgate")
    home = work / f"home-{variant}"
    home.mkdir()
    config = _config(work / f"{variant}.yaml", upstream_url, variant, prefix)
    env = _clean_env({"LOCKGATE_MASTER_KEY": MASTER_KEY, "LOCKGATE_HOME": str(home)})
    key = _create_virtual_key(cmd, config, env, [])
    port = free_port()
    server = group.start(f"lockgate-{variant}", [*cmd, "serve", "--config", str(config),
                                                  "--port", str(port)],
                         work / f"{variant}.log", env=env)
    url = f"http://127.0.0.1:{port}{CHAT_PATH}"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    wait_until(lambda: _answers_chat(url, headers), 90, server, f"lockgate {variant}")
    script = write_wrk_script(work / f"{variant}.lua", BENCH_BODY, headers)
    run_wrk(url, script, 8, 2)  # warm-up
    c1 = run_wrk(url, script, 1, seconds)
    cpu0 = cpu_seconds(server.pids())
    c8 = run_wrk(url, script, 8, seconds)
    cpu_ms = (cpu_seconds(server.pids()) - cpu0) * 1000.0 / max(1, c8.requests)
    probe = probe_overhead_header(url, BENCH_BODY, headers, "x-lockgate-overhead-ms", 300)
    group.stop(server)
    return Row(variant, c1.p50_ms, c8.p50_ms, c8.rps, cpu_ms, probe.p50_ms,
               c1.error_count + c8.error_count + probe.failures)


def render(rows: list[Row], seconds: float) -> str:
    off = rows[0]
    lines = [
        f"## Governance controls overhead ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"bench/controls.py, {os.cpu_count()} cores)",
        "",
        "lockgate w=1 in front of bench/upstream.py, audit on, SQLite. `on`: team limits + "
        "budget + per-key limits, breaker, PII redact + injection flag on every request "
        f"(cache off). wrk {seconds:g} s per level; CPU = gateway process CPU per request "
        "during the c=8 run (the least noise-sensitive number on a shared machine); overhead "
        "= median of `x-lockgate-overhead-ms` over 300 sequential requests.",
        "",
        "| target | p50 c=1 (ms) | p50 c=8 (ms) | req/s c=8 | CPU/request (ms) | "
        "overhead p50 (ms) | Δ p50 c=1 vs off (ms) | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ov = f"{r.overhead_ms:.3f}" if r.overhead_ms is not None else "-"
        lines.append(f"| {r.name} | {r.p50_c1:.3f} | {r.p50_c8:.3f} | {r.rps_c8:.0f} | "
                     f"{r.cpu_ms:.3f} | {ov} | "
                     f"{r.p50_c1 - off.p50_c1:+.3f} | {r.errors} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--no-redis", action="store_true")
    args = ap.parse_args()
    prefix = "lgbench-ctl-" + uuid.uuid4().hex[:8] + ":"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lg-controls-") as tmp, ProcessGroup() as group:
        work = Path(tmp)
        upstream = start_upstream(group, work)
        variants = ["off", "memory"] + ([] if args.no_redis else ["redis"])
        try:
            for v in variants:
                rows.append(measure(group, work, upstream.url, v, prefix, args.seconds))
                print(f"{v}: {rows[-1]}", file=sys.stderr, flush=True)
        finally:
            if not args.no_redis:
                drop_redis_prefix(prefix, REDIS_URL)
    for r in rows:
        r.name = {"off": "off", "memory": "on (memory)", "redis": "on (redis)"}[r.name]
    out = render(rows, args.seconds)
    print(out)
    if not args.no_record:
        results = REPO / "bench" / "RESULTS.md"
        existing = results.read_text() if results.exists() else "# bench results\n"
        marker = "<!-- runs: newest first; bench/overhead.py inserts below this line -->"
        if marker in existing:  # keep bench/overhead.py's run list at the end
            results.write_text(existing.replace(marker, out + "\n" + marker, 1))
        else:
            results.write_text(existing.rstrip("\n") + "\n\n" + out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
