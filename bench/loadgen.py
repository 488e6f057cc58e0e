"""Load generation for the bench: ``wrk`` for throughput and latency, a small keep-alive
client for the gateways' own overhead headers.

``wrk`` (C, epoll) is the load generator: it is far cheaper per request than any
Python client, so it is not the bottleneck. A generated Lua script makes every
request a POST of the same chat-completion body with an ``Authorization`` header,
and its ``done`` hook prints one ``BENCHJSON {...}`` line with the exact
percentiles (microseconds), which :func:`parse_wrk_output` reads. wrk is a closed
loop: ``connections`` is the concurrency; each connection sends its next request
as soon as the previous answer arrives.

:func:`probe_overhead_header` sends requests one at a time over one keep-alive
connection and averages a response header such as ``x-lockgate-overhead-ms``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HeaderProbe",
    "WrkResult",
    "parse_wrk_output",
    "probe_overhead_header",
    "run_wrk",
    "write_wrk_script",
    "wrk_command",
]

_MARK = "BENCHJSON "

_LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect\":%d,"
    .. "\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d,\"p50\":%.1f,\"p90\":%.1f,"
    .. "\"p99\":%.1f,\"p999\":%.1f,\"mean\":%.1f,\"max\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max))
end
"""


def _lua_string(value: str) -> str:
    level = "="
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def write_wrk_script(path: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    """Write the wrk Lua script: POST ``body`` with ``headers``, report via ``done``."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    path.write_text("\n".join(lines) + "\n" + _LUA_DONE)
    return path


@dataclass(frozen=True)
class WrkResult:
    """One measured wrk run. Latencies in milliseconds."""

    connections: int
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: Mapping[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_wrk_output(text: str, connections: int) -> WrkResult:
    """Read the ``BENCHJSON`` line printed by the generated script's ``done`` hook."""
    for line in text.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK):])
            break
    else:
        raise ValueError(f"no {_MARK.strip()} line in wrk output:\n{text[-2000:]}")
    us = 1000.0
    return WrkResult(
        connections=connections,
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50"] / us,
        p90_ms=data["p90"] / us,
        p99_ms=data["p99"] / us,
        p999_ms=data["p999"] / us,
        mean_ms=data["mean"] / us,
        max_ms=data["max"] / us,
        errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")},
    )


def wrk_command(
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 10.0,
    wrk: str = "wrk",
) -> list[str]:
    """The wrk command line (for callers that run it in the background, e.g. the soak)."""
    exe = shutil.which(wrk)
    if exe is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    return [
        exe, f"-t{min(threads, connections)}", f"-c{connections}",
        f"-d{max(1, round(duration_s))}s", f"--timeout={max(1, round(timeout_s))}s",
        "-s", str(script), url,
    ]


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 10.0,
    wrk: str = "wrk",
) -> WrkResult:
    """Run wrk against ``url`` at ``connections`` concurrency for ``duration_s`` seconds."""
    argv = wrk_command(url, script, connections, duration_s, threads, timeout_s, wrk)
    proc = subprocess.run(argv, capture_output=True, text=True,
                          timeout=duration_s + timeout_s + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk_output(proc.stdout, connections)


@dataclass(frozen=True)
class HeaderProbe:
    """Sequential requests over one connection: the header's values and client latency (ms)."""

    header: str
    values_ms: list[float]
    latencies_ms: list[float]
    failures: int

    @property
    def mean_ms(self) -> float | None:
        return statistics.fmean(self.values_ms) if self.values_ms else None

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.values_ms) if self.values_ms else None


def probe_overhead_header(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    header: str,
    requests: int,
    timeout: float = 30.0,
) -> HeaderProbe:
    """Send ``requests`` POSTs one at a time; collect ``header`` (a float in ms) from each."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    values: list[float] = []
    latencies: list[float] = []
    failures = 0
    try:
        for _ in range(requests):
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            resp.read()
            latencies.append((time.perf_counter() - t0) * 1000.0)
            raw = resp.getheader(header)
            if resp.status != 200:
                failures += 1
            elif raw is not None:
                try:
                    values.append(float(raw))
                except ValueError:
                    failures += 1
    finally:
        conn.close()
    return HeaderProbe(header, values, latencies, failures)
