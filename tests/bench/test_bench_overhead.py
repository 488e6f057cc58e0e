"""The overhead bench's parts: the stand-in upstream over real HTTP, wrk script and output
handling, process cleanup, the soak slope and the RESULTS.md record."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bench.loadgen import parse_wrk_output, run_wrk, write_wrk_script
from bench.procs import ProcessGroup, free_port, session_pids, wait_until
from bench.report import (
    RUNS_MARKER,
    LevelResult,
    RunResult,
    SoakResult,
    TargetResult,
    _soak_lines,
    record,
    render_markdown,
)

REPO = Path(__file__).resolve().parents[2]

WRK_OUT = """Running 1s test @ http://127.0.0.1:1/v1/chat/completions
  1 threads and 8 connections
BENCHJSON {"requests":2000,"duration_us":2000000,"bytes":1,"connect":0,"read":0,"write":0,\
"status":3,"timeout":1,"p50":250.0,"p90":400.0,"p99":1500.0,"p999":2000.0,"mean":300.0,\
"max":4000.0}
"""


@pytest.fixture
def upstream(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    with ProcessGroup() as group:
        server = group.start("upstream", [sys.executable, str(REPO / "bench" / "upstream.py"),
                                          "--port", str(port)], tmp_path / "up.log")

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(listening, 20, server, "upstream")
        yield port


def test_upstream_answers_chat_over_one_keep_alive_connection(upstream: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=5)
    bodies = []
    for _ in range(3):
        conn.request("POST", "/v1/chat/completions", body=b'{"model":"m","messages":[]}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        bodies.append(json.loads(resp.read()))
    conn.close()
    assert bodies[0]["object"] == "chat.completion"
    assert bodies[0]["choices"][0]["message"]["content"] == "ok"
    assert bodies[0]["usage"]["total_tokens"] == 10


def test_upstream_streams_sse_and_404s_unknown_paths(upstream: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=b'{"stream": true}')
    resp = conn.getresponse()
    text = resp.read().decode()
    assert resp.getheader("content-type") == "text/event-stream"
    events = [ln[6:] for ln in text.split("\n\n") if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 1
    conn.request("GET", "/nope")
    resp = conn.getresponse()
    assert resp.status == 404
    assert json.loads(resp.read())["error"]["code"] == "not_found"


def test_upstream_answers_pipelined_requests_in_order(upstream: int) -> None:
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
           b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", upstream), timeout=5) as s:
        s.sendall(req)
        data = b""
        deadline = time.monotonic() + 5
        while b'{"status":"ok"}' not in data and time.monotonic() < deadline:
            data += s.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"chat.completion") < data.index(b'{"status":"ok"}')


def test_parse_wrk_output_reads_the_done_line() -> None:
    result = parse_wrk_output(WRK_OUT, 8)
    assert result.requests == 2000
    assert result.rps == pytest.approx(1000.0)
    assert result.p50_ms == pytest.approx(0.25)
    assert result.p99_ms == pytest.approx(1.5)
    assert result.error_count == 4
    with pytest.raises(ValueError, match="BENCHJSON"):
        parse_wrk_output("Running 1s test\nRequests/sec: 1\n", 8)


def test_wrk_script_quotes_body_that_contains_lua_brackets(tmp_path: Path) -> None:
    script = write_wrk_script(tmp_path / "s.lua", b'{"x":"]=]"}', {"Authorization": "Bearer k"})
    text = script.read_text()
    assert 'wrk.method = "POST"' in text
    assert '[==[{"x":"]=]"}]==]' in text
    assert "wrk.headers[ [=[Authorization]=] ] = [=[Bearer k]=]" in text


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_run_against_the_upstream_counts_successes(upstream: int, tmp_path: Path) -> None:
    script = write_wrk_script(tmp_path / "s.lua", b'{"model":"m"}',
                              {"Content-Type": "application/json"})
    result = run_wrk(f"http://127.0.0.1:{upstream}/v1/chat/completions", script, 2, 1)
    assert result.requests > 0
    assert result.error_count == 0
    assert 0 < result.p50_ms <= result.p99_ms


def test_process_group_kills_the_whole_session(tmp_path: Path) -> None:
    group = ProcessGroup()
    started = group.start("sleepers", ["sh", "-c", "sleep 300 & sleep 300 & wait"],
                          tmp_path / "s.log")
    wait_until(lambda: len(session_pids(started.pid)) >= 3, 10)
    group.stop(started, grace=2)
    assert session_pids(started.pid) == []
    assert group.started == []
    assert started.proc.returncode is not None


def test_soak_slope_ignores_warm_up_samples() -> None:
    samples = [(0.0, 10.0), (10.0, 80.0)] + [(60.0 + 10 * i, 100.0 + 0.5 * i) for i in range(10)]
    soak = SoakResult("lockgate w=1", 150, 8, samples, warmup_s=60, wrk=None, cpu_ms_per_req=None)
    assert soak.slope_mb_per_min() == pytest.approx(3.0)  # 0.5 MB per 10 s
    flat = SoakResult("x", 150, 8, [(60.0 + i, 50.0) for i in range(5)], 60, None, None)
    assert flat.slope_mb_per_min() == pytest.approx(0.0)


def _level(rps_requests: int, p50: float, p99: float) -> LevelResult:
    out = WRK_OUT.replace('"requests":2000', f'"requests":{rps_requests}')
    out = out.replace('"p50":250.0', f'"p50":{p50 * 1000}').replace('"p99":1500.0',
                                                                     f'"p99":{p99 * 1000}')
    out = out.replace('"status":3,"timeout":1', '"status":0,"timeout":0')
    return LevelResult(parse_wrk_output(out, 1), 1.0, 0.1, 0.0)


def test_render_markdown_computes_added_latency_and_ratio_verdicts() -> None:
    run = RunResult("2026-01-01 00:00 UTC", "bench/overhead.py", {"nproc": "2"}, ["setup"], [1])
    run.targets = [
        TargetResult("direct", "direct", 1, {1: _level(20000, 0.05, 0.5)}),
        TargetResult("lockgate w=1", "lockgate", 1, {1: _level(3000, 0.85, 3.9)}),
        TargetResult("litellm w=1", "litellm", 1, {1: _level(200, 15.0, 40.0)}),
    ]
    md = render_markdown(run)
    assert "p50 0.80 ms (target <= 1), p99 3.40 ms (target <= 3): **FAIL**" in md
    assert "**15.0x** (target >= 10x): **PASS**" in md
    assert "| lockgate w=1 | 1,500 | 0.85 / 3.90 | 0.80 / 3.40 |" in md


def test_record_inserts_newest_run_first(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    record(path, "## run one\n")
    record(path, "## run two\n")
    text = path.read_text()
    assert text.index(RUNS_MARKER) < text.index("## run two") < text.index("## run one")
    assert text.startswith("# lockgate overhead bench")


def test_overhead_cli_help_runs() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "overhead.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "--soak" in proc.stdout and "--no-litellm" in proc.stdout


def test_gc_probe_counts_full_collections_across_processes(tmp_path: Path) -> None:
    code = ("import gc, sys; sys.path.insert(0, sys.argv[1]); from bench import gcprobe; "
            "gcprobe.install(__import__('pathlib').Path(sys.argv[2])); "
            "[gc.collect() for _ in range(3)]")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path)], check=True,
                       timeout=60)
    from bench.gcprobe import read_totals

    totals = read_totals(tmp_path)
    assert totals[2][0] >= 6  # 3 explicit full collections in each of 2 processes
    assert totals[2][1] > 0
    assert read_totals(tmp_path, pids=[])[2] == (0, 0.0)


def test_mem_probe_sees_native_memory_apart_from_python_objects(tmp_path: Path) -> None:
    """A process that mallocs 64 MB outside Python: malloc in-use rises by that much while
    Python's allocated blocks do not; two processes' samples are summed per index."""
    code = textwrap.dedent("""
        import ctypes, pathlib, sys, time
        sys.path.insert(0, sys.argv[1])
        from bench import memprobe
        memprobe.install(pathlib.Path(sys.argv[2]), every=0.1)
        time.sleep(0.35)
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        bufs = [libc.malloc(1 << 20) for _ in range(64)]
        for b in bufs:
            ctypes.memset(b, 1, 1 << 20)
        time.sleep(0.45)
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path)], check=True,
                       timeout=60)
    from bench.memprobe import read_series

    series = read_series(tmp_path)
    assert len(list(tmp_path.glob("mem-*.jsonl"))) == 2 and len(series) >= 6
    before, after = series[0], series[-1]
    assert after["malloc_in_use_mb"] - before["malloc_in_use_mb"] >= 2 * 60  # 64 MB each
    assert abs(after["py_blocks"] - before["py_blocks"]) < 0.05 * before["py_blocks"]
    soak = SoakResult("lockgate w=1", 10, 8, [(float(i), 100.0) for i in range(10)], 0.0, None,
                      None, mem=[{**row, "t": float(i)} for i, row in enumerate(series)])
    md = "\n".join(_soak_lines(soak))
    assert "malloc in use (glibc mallinfo2)" in md and "Python allocated blocks" in md


def test_sequential_probe_times_every_request_within_the_run(upstream: int) -> None:
    from bench.hotpath import probe_sequential

    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    seq = probe_sequential(f"http://127.0.0.1:{upstream}/v1/chat/completions", body,
                           {"Content-Type": "application/json"}, 0.5)
    assert seq.failures == 0 and len(seq.latencies_ms) > 50
    # one connection, one request at a time: the latencies fit inside the run
    assert sum(seq.latencies_ms) / 1000 <= seq.wall_s
    assert 0 < seq.pct(0.5) <= seq.pct(0.99) <= max(seq.latencies_ms)  # type: ignore[operator]


def test_c1_target_is_read_from_the_sequential_probe_and_wrk_is_checked() -> None:
    from bench.hotpath import SequentialResult, issue12_verdicts

    run = RunResult("2026-01-01 00:00 UTC", "bench/overhead.py", {"nproc": "2"}, ["setup"], [1])
    direct = TargetResult("direct", "direct", 1, {1: _level(20000, 0.05, 0.5)})
    w1 = TargetResult("lockgate w=1", "lockgate", 1, {1: _level(3000, 0.85, 30.0)})
    direct.sequential = SequentialResult([0.1] * 990 + [0.2] * 10, 1.0)
    w1.sequential = SequentialResult([0.5] * 980 + [1.4] * 20, 1.0)
    run.targets = [direct, w1]
    text = "\n".join(issue12_verdicts(run, {}))
    assert "p50 0.400 ms (target <= 0.5), p99 1.200 ms (target <= 1.5)" in text
    assert "(sequential client, 1,000 and 1,000 requests)" in text and "**PASS**" in text
    assert "- wrk at c=1, not used for the target: added p50 0.800 ms, p99 29.500 ms" in text
    md = render_markdown(run)  # the table's added column is the sequential client's too
    assert "| lockgate w=1 | 1,500 | 0.85 / 30.0 | 0.40 / 1.20 |" in md
