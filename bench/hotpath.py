"""Issue 12's hot-path measurements, used by ``bench/overhead.py``.

- :func:`probe_stream_ttfb`: time to the first SSE ``data:`` line of a streamed chat, one
  request at a time over one keep-alive connection (so the direct upstream and a gateway
  are timed the same way); the difference of the p50s is the streaming TTFB lockgate adds.
- :func:`measure_stream_cpu`: a wrk run of streamed chats; the gateway's CPU per stream,
  and per chunk as (CPU per stream - CPU per non-stream request) / upstream chunks.
- :func:`write_varying_wrk_script`: a wrk script whose every request has a new body (a
  counter in the message), so a response cache misses every time (the controls-on target).
- :data:`CONTROLS_YAML`: the controls-on configuration (Redis limits + budget, PII redact,
  response cache on; audit is on in every lockgate target).
- :func:`probe_sequential`: one request at a time over one keep-alive connection for N
  seconds, each timed with ``perf_counter``: the c=1 latency the issue's target is read from.
  wrk's own c=1 latencies are not used for it: on this box they add up to more than the run's
  wall time at one connection (e.g. 16,362 requests, mean 0.85 ms, in 8 s), which a
  sequential client cannot do, and their p99 (8-120 ms) disagrees with this probe's and with
  the gateway's own per-request clock (both ~1-2 ms) in the same run (bench/RESULTS.md,
  issue 12, fourth round). The report prints wrk's numbers and that check next to it.
- :func:`issue12_verdicts`: the issue's targets against one run's results.
"""

from __future__ import annotations

import socket
import statistics
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bench.loadgen import _LUA_DONE, WrkResult, _lua_string, run_wrk, write_wrk_script
from bench.procs import cpu_seconds
from bench.report import sequential_added

if TYPE_CHECKING:
    from bench.report import RunResult, TargetResult
    from bench.targets import Target

__all__ = [
    "CONTROLS_YAML",
    "STREAM_BODY",
    "UPSTREAM_STREAM_CHUNKS",
    "SequentialResult",
    "StreamResult",
    "issue12_verdicts",
    "measure_stream_cpu",
    "probe_sequential",
    "probe_stream_ttfb",
    "write_varying_wrk_script",
]

STREAM_BODY = orjson.dumps({
    "model": "bench",
    "messages": [{"role": "user", "content": "Say ok."}],
    "max_tokens": 8,
    "stream": True,
})
UPSTREAM_STREAM_CHUNKS = 3
"""``data:`` chunks bench/upstream.py streams before ``[DONE]`` (2 content + usage)."""

CONTROLS_YAML = """
redis_url: redis://127.0.0.1:6379/0
redis_prefix: "{prefix}"
teams:
  bench:
    limits: {{rpm: 100000000, tpm: 10000000000}}
    budget: {{daily: 1000000000}}
    key_limits: {{rpm: 100000000}}
guards:
  pii: {{action: redact}}
cache: {{enabled: true, ttl_seconds: 60}}
"""
"""Appended to the lockgate config of the controls-on target (``prefix``: own Redis keys)."""


@dataclass
class StreamResult:
    """Streaming numbers of one target."""

    ttfb_ms: list[float] = field(default_factory=list)
    failures: int = 0
    cpu_ms_per_stream: float | None = None
    streams_per_s: float | None = None

    @property
    def ttfb_p50(self) -> float | None:
        return statistics.median(self.ttfb_ms) if self.ttfb_ms else None

    @property
    def ttfb_p99(self) -> float | None:
        if len(self.ttfb_ms) < 2:
            return None
        return statistics.quantiles(self.ttfb_ms, n=100)[98]


def _raw_post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[str, int, bytes]:
    """Host, port and the bytes of one HTTP/1.1 POST of ``body`` to ``url``."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    return host, port, head.encode() + body


@dataclass
class SequentialResult:
    """Latencies (ms) of requests sent one at a time over one connection."""

    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    failures: int = 0

    def pct(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) by rank, or None without samples."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def probe_sequential(url: str, body: bytes, headers: Mapping[str, str], seconds: float,
                     timeout: float = 30.0) -> SequentialResult:
    """Requests one at a time over one keep-alive connection for ``seconds``; every latency
    is from before ``sendall`` to the last byte of the response (``perf_counter``)."""
    host, port, request = _raw_post(url, body, headers)
    result = SequentialResult()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        start = time.perf_counter()
        end = start + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            sock.sendall(request)
            status, _ = _read_response(sock, buf, t0)
            if status != 200:
                result.failures += 1
            else:
                result.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        result.wall_s = time.perf_counter() - start
    return result


def _read_response(sock: socket.socket, buf: bytearray, t0: float) -> tuple[int, float | None]:
    """Read one HTTP/1.1 response (Content-Length or chunked); status and ms to the first
    ``data:`` line of its body."""
    first: float | None = None
    while b"\r\n\r\n" not in buf:
        _recv(sock, buf)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    buf[:] = rest
    if b"transfer-encoding: chunked" in lower:
        while True:
            if first is None and b"data:" in buf:
                first = (time.perf_counter() - t0) * 1000.0
            end = buf.find(b"0\r\n\r\n")
            if end != -1 and (end == 0 or buf[end - 2:end] == b"\r\n"):
                del buf[:end + 5]
                return status, first
            _recv(sock, buf)
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(buf) < length:
        if first is None and b"data:" in buf:
            first = (time.perf_counter() - t0) * 1000.0
        _recv(sock, buf)
    if first is None and b"data:" in buf[:length]:
        first = (time.perf_counter() - t0) * 1000.0
    del buf[:length]
    return status, first


def _recv(sock: socket.socket, buf: bytearray) -> None:
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("connection closed mid-response")
    buf += data


def probe_stream_ttfb(url: str, headers: Mapping[str, str], requests: int,
                      body: bytes = STREAM_BODY, timeout: float = 30.0) -> StreamResult:
    """``requests`` streamed chats one at a time; ms from sending to the first ``data:``."""
    host, port, request = _raw_post(url, body, headers)
    result = StreamResult()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        for _ in range(requests):
            t0 = time.perf_counter()
            sock.sendall(request)
            status, first = _read_response(sock, buf, t0)
            if status != 200 or first is None:
                result.failures += 1
            else:
                result.ttfb_ms.append(first)
    return result


def measure_stream_cpu(target: Target, workdir: Path, connections: int, seconds: float,
                       threads: int = 1) -> tuple[float | None, float]:
    """CPU ms per streamed chat of the target's processes under wrk, and streams/s."""
    if target.server is None:
        return None, 0.0
    script = write_wrk_script(workdir / f"stream-{target.server.name}.lua", STREAM_BODY,
                              target.headers)
    run_wrk(target.url, script, connections, min(seconds, 2.0), threads)  # warm-up
    pids = target.server.pids()
    cpu0 = cpu_seconds(pids)
    wrk = run_wrk(target.url, script, connections, seconds, threads)
    cpu1 = cpu_seconds(sorted(set(pids) | set(target.server.pids())))
    per = (cpu1 - cpu0) * 1000.0 / wrk.requests if wrk.requests else None
    return per, wrk.rps


def write_varying_wrk_script(path: Path, headers: Mapping[str, str]) -> Path:
    """POST a chat whose message carries a per-request counter (every request a cache
    miss); same ``done`` hook as :func:`bench.loadgen.write_wrk_script`."""
    lines = [
        'wrk.method = "POST"',
        "local n = 0",
        "local id = tostring(math.random(1, 1000000000))",
    ]
    for name, value in headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    lines += [
        "request = function()",
        "  n = n + 1",
        '  local body = \'{"model":"bench","messages":[{"role":"user","content":"Say ok \' '
        '.. id .. \'-\' .. n .. \' (mail me at a@b.example)"}],"max_tokens":8}\'',
        "  return wrk.format(nil, nil, nil, body)",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n" + _LUA_DONE)
    return path


# ------------------------------------------------------------------ verdicts


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _p(t: TargetResult, c: int, what: str) -> float | None:
    lv = t.levels.get(c)
    return None if lv is None else float(getattr(lv.wrk, what))


def _c1_lines(w1: TargetResult, direct: TargetResult) -> list[str]:
    """Added latency at c=1 from the sequential probe, with wrk's c=1 numbers and whether
    they are possible (at one connection the latencies cannot add up to more than the run)."""
    lines: list[str] = []
    added = sequential_added(w1, direct)
    if added is not None:
        a50, a99 = added
        seq_w, seq_d = w1.sequential, direct.sequential
        lines.append(
            f"- added latency at c=1 (sequential client, {len(seq_w.latencies_ms):,} and "
            f"{len(seq_d.latencies_ms):,} requests): p50 {a50:.3f} ms (target <= 0.5), "
            f"p99 {a99:.3f} ms (target <= 1.5) ({seq_w.pct(0.5):.3f} / {seq_w.pct(0.99):.3f} "
            f"vs {seq_d.pct(0.5):.3f} / {seq_d.pct(0.99):.3f} ms direct): "
            f"**{_verdict(a50 <= 0.5 and a99 <= 1.5)}**")
    lv_w, lv_d = w1.levels.get(1), direct.levels.get(1)
    if lv_w is not None and lv_d is not None:
        def busy(w: WrkResult) -> float:
            return w.requests * w.mean_ms / 1000.0

        lines.append(
            f"- wrk at c=1, not used for the target: added p50 "
            f"{lv_w.wrk.p50_ms - lv_d.wrk.p50_ms:.3f} ms, p99 "
            f"{lv_w.wrk.p99_ms - lv_d.wrk.p99_ms:.3f} ms; its latencies add up to "
            f"{busy(lv_w.wrk):.1f} s (lockgate) and {busy(lv_d.wrk):.1f} s (direct) in "
            f"{lv_w.wrk.duration_s:.1f} s runs at one connection")
    return lines


def issue12_verdicts(run: RunResult, streams: Mapping[str, StreamResult]) -> list[str]:
    """Issue 12's targets, one line each (MISS when measured and not met)."""
    by = {t.name: t for t in run.targets if not t.error}
    direct, w1 = by.get("direct"), by.get("lockgate w=1")
    lines = ["Issue 12 targets (lockgate w=1 unless named):"]
    if w1 is None or direct is None:
        return [*lines, "- not measured (no direct or lockgate w=1 row)"]
    peak = w1.peak_level()
    cpu = peak.target_cpu_ms_per_req if peak else None
    c_peak = next((c for c, lv in w1.levels.items() if lv is peak), None)
    if cpu is not None and peak is not None:
        drained = (f"; includes writing the {peak.audit_backlog:,} audit rows still queued "
                   f"when wrk stopped ({peak.drain_s:.1f} s)" if peak.audit_backlog else "")
        lines.append(f"- gateway CPU per request (non-stream, audit on, at its peak c={c_peak}"
                     f"{drained}): {cpu:.3f} ms (target <= 0.35): **{_verdict(cpu <= 0.35)}**")
    p50 = _p(w1, 1, "p50_ms")
    lines += _c1_lines(w1, direct)
    ll2 = by.get("litellm w=2")
    if ll2 is not None and ll2.peak_rps and w1.peak_rps:
        ratio = w1.peak_rps / ll2.peak_rps
        lines.append(f"- peak requests/s, lockgate 1 worker vs LiteLLM 2 workers: "
                     f"{w1.peak_rps:,.0f} / {ll2.peak_rps:,.0f} = {ratio:.1f}x (target >= 25x): "
                     f"**{_verdict(ratio >= 25)}**")
        sustained = max(lv.sustained_rps for lv in w1.levels.values())
        if sustained < w1.peak_rps * 0.99:
            lines.append(f"  - counting the time to write the audit backlog a level left "
                         f"(requests / (run + drain)), lockgate's best is {sustained:,.0f} "
                         f"requests/s: {sustained / ll2.peak_rps:.1f}x")
    ctl = by.get("lockgate w=1 controls")
    if ctl is not None:
        c50 = _p(ctl, 1, "p50_ms")
        if c50 is not None and p50 is not None:
            more = c50 - p50
            lines.append(f"- controls on (Redis limits + budget, PII redact, cache miss, audit) "
                         f"vs off, p50 at c=1: +{more:.3f} ms (target <= 1): "
                         f"**{_verdict(more <= 1.0)}**")
    s_direct, s_w1 = streams.get("direct"), streams.get("lockgate w=1")
    if s_direct and s_w1 and s_direct.ttfb_p50 is not None and s_w1.ttfb_p50 is not None:
        added = s_w1.ttfb_p50 - s_direct.ttfb_p50
        lines.append(f"- streaming time to first `data:` added, p50: {added:.3f} ms "
                     f"({s_w1.ttfb_p50:.3f} vs {s_direct.ttfb_p50:.3f} ms direct, "
                     f"n={len(s_w1.ttfb_ms)}) (target <= 0.5): **{_verdict(added <= 0.5)}**")
    if s_w1 and s_w1.cpu_ms_per_stream is not None and cpu is not None:
        per_chunk = (s_w1.cpu_ms_per_stream - cpu) / UPSTREAM_STREAM_CHUNKS
        lines.append(f"- streaming CPU: {s_w1.cpu_ms_per_stream:.3f} ms per stream "
                     f"({s_w1.streams_per_s or 0:,.0f} streams/s); per chunk "
                     f"({UPSTREAM_STREAM_CHUNKS} upstream chunks, over the non-stream request): "
                     f"{per_chunk:.3f} ms (reported, no target)")
    for t in (t for t in run.targets if t.kind.startswith("lockgate") and t.rss_mb):
        if t.workers > 1 and len(t.worker_rss_mb) >= t.workers:
            # the largest worker; uvicorn's supervisor (no requests, no app) is shown beside
            per_worker = t.worker_rss_mb[0]
            rest = (t.rss_mb or 0) - sum(t.worker_rss_mb[: t.workers])
            how = (f" (largest of {t.workers} workers: "
                   f"{', '.join(f'{r:.0f}' for r in t.worker_rss_mb[: t.workers])} MB; "
                   f"supervisor and helpers {rest:.0f} MB; all processes / {t.workers} = "
                   f"{(t.rss_mb or 0) / t.workers:.0f} MB)")
        else:
            per_worker, how = (t.rss_mb or 0) / max(1, t.workers), ""
        lines.append(f"- RSS per worker, {t.name}: {per_worker:.0f} MB{how} (target <= 150): "
                     f"**{_verdict(per_worker <= 150)}**")
    return lines
