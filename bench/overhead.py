"""lockgate overhead bench: one command, every target side by side in the same run.

    .venv/bin/python bench/overhead.py            # full run, recorded in bench/RESULTS.md
    .venv/bin/python bench/overhead.py --quick    # 3 s per level, printed only
    .venv/bin/python bench/overhead.py --soak 600 # also a 10-minute RSS soak of lockgate

It starts a fast stand-in upstream (``bench/upstream.py``), then measures with
``wrk`` at each concurrency level (default 1, 8, 64): the upstream directly,
lockgate with 1 and 2 workers, and LiteLLM's proxy with 1 and 2 workers (its own
venv, created on first use; ``--no-litellm`` skips it). Each target is started
fresh, checked with one real request, warmed up, measured, then stopped. Every
server runs in its own session and is killed on exit, Ctrl-C or error.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO))

from bench.gcprobe import read_totals  # noqa: E402
from bench.hotpath import (  # noqa: E402
    CONTROLS_YAML,
    issue12_verdicts,
    measure_stream_cpu,
    probe_sequential,
    probe_stream_ttfb,
    write_varying_wrk_script,
)
from bench.loadgen import (  # noqa: E402
    parse_wrk_output,
    probe_overhead_header,
    run_wrk,
    write_wrk_script,
    wrk_command,
)
from bench.memprobe import read_series  # noqa: E402
from bench.procs import (  # noqa: E402
    ProcessGroup,
    Started,
    cpu_seconds,
    machine_busy_seconds,
    rss_bytes,
)
from bench.profile import profile_under_load  # noqa: E402
from bench.report import (  # noqa: E402
    LevelResult,
    RunResult,
    SoakResult,
    TargetResult,
    machine_info,
    record,
    render_markdown,
)
from bench.targets import (  # noqa: E402
    BENCH_BODY,
    LITELLM_VERSION,
    Target,
    drop_redis_prefix,
    ensure_litellm_venv,
    lockgate_command,
    start_litellm,
    start_lockgate,
    start_upstream,
    wait_audit_drained,
)

__all__ = ["Options", "main", "measure_target", "soak"]

DEFAULT_LITELLM_VENV = Path.home() / ".cache" / "lockgate-bench" / "litellm-venv"


def _log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


@dataclass(frozen=True)
class Options:
    """How each target is measured."""

    levels: list[int]
    duration: float
    warmup: float
    workdir: Path
    probe_requests: int
    threads: int
    profile_dir: Path | None = None
    profile_concurrency: int = 8
    profile_seconds: float = 10.0
    stream_requests: int = 0
    """With ``--stream``: sequential streamed chats for the TTFB probe (direct, lockgate w=1)."""


def measure_target(target: Target, upstream: Started, opts: Options) -> TargetResult:
    """Warm up, one measured wrk run per concurrency level, the header probe, the profile."""
    levels, duration, warmup, threads = opts.levels, opts.duration, opts.warmup, opts.threads
    workdir, probe_requests = opts.workdir, opts.probe_requests
    result = TargetResult(target.name, target.kind, target.workers, notes=list(target.notes))
    if target.varying_body:
        script = write_varying_wrk_script(workdir / f"{_slug(target.name)}.lua", target.headers)
    else:
        script = write_wrk_script(workdir / f"{_slug(target.name)}.lua", BENCH_BODY,
                                  target.headers)
    own = target.server if target.server is not None else upstream
    if warmup > 0:
        run_wrk(target.url, script, max(levels), warmup, threads)
    for c in levels:
        if warmup > 0:
            run_wrk(target.url, script, c, min(warmup, 2.0), threads)
        wait_audit_drained(target)  # the warm-up's audit rows are not this level's
        own_pids, up_pids = own.pids(), upstream.pids()
        t0, u0 = cpu_seconds(own_pids), cpu_seconds(up_pids)
        m0, k0, w0 = machine_busy_seconds(), _children_cpu(), time.monotonic()
        gc0 = read_totals(target.gc_dir)[2] if target.gc_dir else None
        wrk = run_wrk(target.url, script, c, duration, threads)
        # the requests' audit rows may still be queued: CPU per request includes writing them
        backlog, drain_s = wait_audit_drained(target)
        gc1 = read_totals(target.gc_dir)[2] if target.gc_dir else None
        own_pids2 = sorted(set(own_pids) | set(own.pids()))
        t1, u1 = cpu_seconds(own_pids2), cpu_seconds(up_pids)
        m1, k1, w1 = machine_busy_seconds(), _children_cpu(), time.monotonic()
        ours = (t1 - t0) + (k1 - k0) + (0.0 if own is upstream else u1 - u0)
        other = max(0.0, (m1 - m0) - ours) / max(w1 - w0, 1e-9)
        gc2 = (gc1[0] - gc0[0], gc1[1] - gc0[1]) if gc0 and gc1 else None
        level = LevelResult(wrk, t1 - t0, u1 - u0, other, gc2, backlog, drain_s)
        result.levels[c] = level
        _log(f"  {target.name:14s} c={c:<3d} {wrk.rps:9,.0f} rps  p50 {wrk.p50_ms:8.2f} ms  "
             f"p99 {wrk.p99_ms:8.2f} ms  errors {wrk.error_count}  "
             f"cpu {level.target_cpu_ms_per_req or 0:.3f} ms/req  other load {other:.2f} cores"
             + (f"  gen-2 gc {gc2[0]} x, {gc2[1] * 1000:.0f} ms" if gc2 else "")
             + (f"  audit backlog {backlog:,} rows, written in {drain_s:.1f} s"
                if backlog else ""))
        if c == 1:  # right after the c=1 level: the same steady state, before heavier levels
            seq = probe_sequential(target.url, BENCH_BODY, target.headers, duration)
            result.sequential = seq
            _log(f"  {target.name:14s} c=1 sequential client: {len(seq.latencies_ms):,} "
                 f"requests, p50 {seq.pct(0.5) or 0:.3f} ms  p99 {seq.pct(0.99) or 0:.3f} ms  "
                 f"p99.9 {seq.pct(0.999) or 0:.3f} ms  failed {seq.failures}")
    if target.overhead_header and probe_requests > 0:
        result.probe = probe_overhead_header(target.url, BENCH_BODY, target.headers,
                                             target.overhead_header, probe_requests)
        if result.probe.failures:
            result.notes.append(f"{result.probe.failures} failed requests in the header probe")
        if not result.probe.values_ms:
            result.notes.append(f"no {target.overhead_header} header in the responses")
    pids = own.pids()
    result.rss_mb = rss_bytes(pids) / 2**20
    # with N > 1 workers the session leader is uvicorn's supervisor, not a worker
    serving = [p for p in pids if p != own.proc.pid] if target.workers > 1 else pids
    result.worker_rss_mb = sorted((rss_bytes([p]) / 2**20 for p in serving), reverse=True)
    if opts.stream_requests > 0 and (target.name == "direct" or (target.name.endswith("w=1")
                                     and target.kind in ("lockgate", "lockgate-variant"))):
        streamed = probe_stream_ttfb(target.url, target.headers, opts.stream_requests)
        if target.server is not None and target.kind != "direct":
            streamed.cpu_ms_per_stream, streamed.streams_per_s = measure_stream_cpu(
                target, workdir, 8, duration, threads)
        result.stream = streamed
        _log(f"  {target.name:14s} stream: first data p50 {streamed.ttfb_p50 or 0:.3f} ms, "
             f"cpu {streamed.cpu_ms_per_stream or 0:.3f} ms/stream, {streamed.failures} failed")
    if opts.profile_dir is not None and target.server is not None:
        summary = profile_under_load(target.server.pids(), target.url, script,
                                     opts.profile_concurrency, opts.profile_seconds,
                                     opts.profile_dir, _slug(target.name), threads)
        result.notes.append(f"py-spy profile at c={opts.profile_concurrency}: {summary}"
                            if summary else "profile skipped: py-spy not found")
    return result


def soak(
    start: Callable[[], Target],
    group: ProcessGroup,
    seconds: float,
    connections: int,
    interval: float,
    workdir: Path,
    threads: int,
) -> SoakResult:
    """Hold ``connections`` concurrent clients on a fresh target and sample its RSS."""
    target = start()
    assert target.server is not None
    server = target.server
    _log(f"soak: {target.name}, {seconds:.0f} s at c={connections}, RSS every {interval:.0f} s")
    script = write_wrk_script(workdir / "soak.lua", BENCH_BODY, target.headers)
    samples: list[tuple[float, float]] = []
    cpu0 = cpu_seconds(server.pids())
    argv = wrk_command(target.url, script, connections, seconds, threads)
    t0, wall0 = time.monotonic(), time.time()
    wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        next_sample = t0
        while wrk.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                pids = server.pids()
                samples.append((now - t0, rss_bytes(pids) / 2**20))
                next_sample += interval
                if len(samples) % max(1, int(60 / interval)) == 0:
                    _log(f"  soak t={now - t0:5.0f}s rss {samples[-1][1]:.1f} MB")
            time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
        out = wrk.stdout.read() if wrk.stdout else ""
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    cpu1 = cpu_seconds(server.pids())
    samples.append((time.monotonic() - t0, rss_bytes(server.pids()) / 2**20))
    try:
        result = parse_wrk_output(out, connections)
    except ValueError:
        result = None
    group.stop(server)
    cpu_ms = (cpu1 - cpu0) * 1000 / result.requests if result and result.requests else None
    mem = [] if target.mem_dir is None else [
        {**row, "t": row["t"] - wall0} for row in read_series(target.mem_dir)]
    return SoakResult(target.name, seconds, connections, samples,
                      warmup_s=min(120.0, seconds * 0.2), wrk=result, cpu_ms_per_req=cpu_ms,
                      mem=mem)


def _parse_levels(text: str) -> list[int]:
    levels = sorted({int(x) for x in text.split(",") if x.strip()})
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def _parse_workers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text.strip() else []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/overhead.py",
        description="Measure lockgate's added latency and throughput against the direct "
                    "upstream and LiteLLM's proxy, side by side.")
    p.add_argument("--quick", action="store_true",
                   help="3 s per level, 1 s warm-up, short probe; not recorded unless --record")
    p.add_argument("--duration", type=float, help="seconds per measured level (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per target (default 2)")
    p.add_argument("--concurrency", type=_parse_levels, default=[1, 8, 64],
                   help="comma-separated levels (default 1,8,64)")
    p.add_argument("--lockgate-workers", type=_parse_workers, default=[1, 2],
                   help="lockgate worker counts to run, e.g. 1,2 ('' skips lockgate)")
    p.add_argument("--litellm-workers", type=_parse_workers, default=[1, 2],
                   help="LiteLLM worker counts to run (default 1,2)")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM entirely")
    p.add_argument("--no-lockgate", action="store_true", help="skip lockgate")
    p.add_argument("--litellm-venv", type=Path, default=DEFAULT_LITELLM_VENV,
                   help=f"venv for LiteLLM, created if missing (default {DEFAULT_LITELLM_VENV})")
    p.add_argument("--litellm-version", default=LITELLM_VERSION)
    p.add_argument("--lockgate-bin", type=Path, default=Path(sys.executable).parent / "lockgate",
                   help="the lockgate CLI (default: next to this Python)")
    p.add_argument("--lockgate-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra env for lockgate (e.g. LOCKGATE_DATABASE_URL=...); repeatable")
    p.add_argument("--upstream", choices=["bench", "stub"], default="bench",
                   help="bench: bench/upstream.py (default); stub: lockgate.testing.stub_upstream")
    p.add_argument("--probe-requests", type=int,
                   help="sequential requests for the overhead-header probe (default 300)")
    p.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads (default 1: one epoll thread out-runs every target here)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="after the matrix, run a soak of this many seconds sampling RSS")
    p.add_argument("--soak-only", action="store_true",
                   help="skip the matrix; run only the soak (with --soak)")
    p.add_argument("--soak-target", choices=["lockgate", "litellm"], default="lockgate")
    p.add_argument("--soak-workers", type=int, default=1)
    p.add_argument("--soak-concurrency", type=int, default=8)
    p.add_argument("--soak-interval", type=float, default=5.0)
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="after measuring each gateway, profile it with py-spy under load "
                        "(separate, unmeasured run); collapsed stacks and a summary go to DIR")
    p.add_argument("--profile-concurrency", type=int, default=8)
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument("--gc-probe", action="store_true",
                   help="run lockgate under bench/gcprobe.py and report full (gen-2) garbage "
                        "collections per level")
    p.add_argument("--mem-probe", action="store_true",
                   help="run the soak's lockgate under bench/memprobe.py and report malloc "
                        "in-use and Python allocated blocks beside RSS")
    p.add_argument("--lockgate-src", action="append", default=[], metavar="LABEL=DIR",
                   help="also run lockgate w=1 from another source tree (PYTHONPATH=DIR), "
                   "named 'lockgate[LABEL] w=1': a before/after comparison in one run")
    p.add_argument("--controls", action="store_true",
                   help="also run 'lockgate w=1 controls': Redis limits + budget, PII redact, "
                   "response cache on with a new body per request (every call a miss)")
    p.add_argument("--stream", action="store_true",
                   help="also measure streaming: time to the first data line (direct and "
                   "lockgate w=1) and CPU per stream and per chunk")
    p.add_argument("--stream-requests", type=int, default=300)
    p.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    rec = p.add_mutually_exclusive_group()
    rec.add_argument("--record", dest="record", action="store_true", default=None,
                     help="record in RESULTS.md (default for full runs)")
    rec.add_argument("--no-record", dest="record", action="store_false",
                     help="print only")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the temp dir with configs, logs and stores")
    return p


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    probe_n = args.probe_requests if args.probe_requests is not None else (
        100 if args.quick else 300)
    do_record = args.record if args.record is not None else not args.quick
    if args.soak_only and args.soak <= 0:
        print("--soak-only needs --soak SECONDS", file=sys.stderr)
        return 2
    extra_env = dict(kv.split("=", 1) for kv in args.lockgate_env)
    variants = [tuple(kv.split("=", 1)) for kv in args.lockgate_src]
    lockgate_workers = [] if args.no_lockgate else args.lockgate_workers
    lockgate_cmd = lockgate_command(args.lockgate_bin)
    litellm_workers = [] if args.no_litellm else args.litellm_workers

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C / SIGINT stops the run even when started in the background (where the shell
    # would have it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    command = " ".join(shlex.quote(a) for a in
                       [os.path.relpath(sys.executable, Path.cwd()),
                        os.path.relpath(Path(__file__).resolve(), Path.cwd()),
                        *(sys.argv[1:] if argv is None else argv)])
    run = RunResult(
        started_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        command=command,
        machine=machine_info(REPO, sys.executable),
        setup=[],
        concurrency=args.concurrency,
        quick=args.quick,
        load_before=_loadavg(),
    )
    _log(f"workdir {workdir}; {duration:.0f} s per level, warm-up {warmup:.0f} s, "
         f"levels {args.concurrency}")
    exit_code = 0
    try:
        with ProcessGroup() as group:
            upstream = start_upstream(group, workdir, args.upstream)
            assert upstream.server is not None
            up_url = upstream.url
            upstream_desc = ("bench/upstream.py (raw asyncio protocol, uvloop, httptools)"
                             if args.upstream == "bench" else "lockgate.testing.stub_upstream")
            run.setup = [
                f"Upstream: {upstream_desc}, one process, fixed chat.completion with usage; "
                "the `direct` row is it alone.",
                f"Load: wrk, {args.wrk_threads} thread(s), closed loop, c connections; "
                f"{warmup:.0f} s warm-up per target and up to 2 s per level, then {duration:.0f} s "
                f"measured per level; POST /v1/chat/completions, {len(BENCH_BODY)}-byte JSON "
                "body.",
                "All processes share the same CPUs (no pinning: with 2 cores, pinning would "
                "leave the 2-worker gateways one core); latencies are wrk's, client side.",
                "lockgate: `lockgate serve --workers N`, fresh SQLite store in a temp "
                "LOCKGATE_HOME, audit logging on (default), a virtual key from "
                "`lockgate keys create`.",
                f"LiteLLM {args.litellm_version} proxy: `litellm --num_workers N`, no database, "
                "debug off, LITELLM_LOCAL_MODEL_COST_MAP=True, master-key auth, own venv.",
            ]
            opts = Options(args.concurrency, duration, warmup, workdir, probe_n,
                           args.wrk_threads, args.profile, args.profile_concurrency,
                           args.profile_seconds, args.stream_requests if args.stream else 0)
            if not args.soak_only:
                _log("direct upstream")
                run.targets.append(measure_target(
                    upstream, upstream.server,
                    Options(args.concurrency, duration, warmup, workdir, 0, args.wrk_threads,
                            stream_requests=opts.stream_requests)))
                for w in lockgate_workers:
                    run.targets.append(_run_one(
                        f"lockgate w={w}", "lockgate", w,
                        lambda w=w: start_lockgate(  # type: ignore[misc]
                            group, workdir, up_url, w, lockgate_cmd, extra_env,
                            gc_probe=args.gc_probe),
                        group, upstream.server, opts))
                for label, src in variants:
                    run.targets.append(_run_one(
                        f"lockgate[{label}] w=1", "lockgate-variant", 1,
                        lambda label=label, src=src: _kind(start_lockgate(  # type: ignore[misc]
                            group, workdir, up_url, 1, lockgate_cmd, extra_env,
                            tag=f"-{_slug(label)}", src=Path(src),
                            name=f"lockgate[{label}] w=1"), "lockgate-variant"),
                        group, upstream.server, opts))
                if args.controls:
                    prefix = f"lgbench:{uuid.uuid4().hex[:8]}:"
                    try:
                        run.targets.append(_run_one(
                            "lockgate w=1 controls", "lockgate-controls", 1,
                            lambda: _controls(start_lockgate(
                                group, workdir, up_url, 1, lockgate_cmd, extra_env,
                                tag="-controls", config_extra=CONTROLS_YAML.format(
                                    prefix=prefix), name="lockgate w=1 controls")),
                            group, upstream.server, opts))
                    finally:
                        drop_redis_prefix(prefix)
                if litellm_workers:
                    try:
                        exe = ensure_litellm_venv(args.litellm_venv, args.litellm_version)
                    except (subprocess.CalledProcessError, OSError) as exc:
                        exe = None
                        for w in litellm_workers:
                            run.targets.append(TargetResult(f"litellm w={w}", "litellm", w,
                                                            error=f"venv setup failed: {exc}"))
                    if exe is not None:
                        for w in litellm_workers:
                            run.targets.append(_run_one(
                                f"litellm w={w}", "litellm", w,
                                lambda w=w: start_litellm(  # type: ignore[misc]
                                    group, workdir, up_url, w, exe),
                                group, upstream.server, opts))
            if args.soak > 0:
                if args.soak_target == "lockgate":
                    def start_soak() -> Target:
                        return start_lockgate(group, workdir, up_url, args.soak_workers,
                                              lockgate_cmd, extra_env, tag="-soak",
                                              mem_probe=args.mem_probe)
                else:
                    exe_soak = ensure_litellm_venv(args.litellm_venv, args.litellm_version)

                    def start_soak() -> Target:
                        return start_litellm(group, workdir, up_url, args.soak_workers, exe_soak,
                                             tag="-soak")
                try:
                    run.soak = soak(start_soak, group, args.soak, args.soak_concurrency,
                                    args.soak_interval, workdir, args.wrk_threads)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    _log(f"soak FAILED: {exc}")
                    run.soak_error = str(exc).splitlines()[0][:300]
    except KeyboardInterrupt:
        _log("interrupted; servers stopped; partial results below are not recorded")
        print(render_markdown(run))
        exit_code = 130
    except RuntimeError as exc:  # the upstream failed: nothing to compare
        _log(f"FAILED: {exc}")
        exit_code = 1
    finally:
        run.load_after = _loadavg()
        if not args.keep_workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _log(f"kept {workdir}")
    if exit_code:
        return exit_code
    section = render_markdown(run)
    streams = {t.name: t.stream for t in run.targets if t.stream is not None}
    if any(t.name == "lockgate w=1" for t in run.targets):
        section += "\n".join(issue12_verdicts(run, streams)) + "\n"
    print(section)
    if do_record:
        record(args.results, section)
        _log(f"recorded in {args.results}")
    return 1 if any(t.error for t in run.targets) or run.soak_error else 0


def _kind(target: Target, kind: str) -> Target:
    target.kind = kind
    return target


def _controls(target: Target) -> Target:
    """The controls-on target: its own kind, a cache miss per request, no header probe (the
    probe repeats one body: cache hits)."""
    target.kind = "lockgate-controls"
    target.varying_body = True
    target.overhead_header = None
    return target


def _run_one(
    name: str,
    kind: str,
    workers: int,
    start: Callable[[], Target],
    group: ProcessGroup,
    upstream: Started,
    opts: Options,
) -> TargetResult:
    """Start one gateway, measure it, stop it; a failure becomes a 'not run' row."""
    _log(f"{name}: starting")
    target: Target | None = None
    try:
        target = start()
        _log(f"{name}: ready")
        return measure_target(target, upstream, opts)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        _log(f"{name}: FAILED: {exc}")
        return TargetResult(name, kind, workers, error=str(exc).splitlines()[0][:300])
    finally:
        if target is not None and target.server is not None:
            group.stop(target.server)
        else:  # a server that failed before becoming a Target
            for started in list(group.started):
                if started.name != "upstream":
                    group.stop(started)
        time.sleep(0.5)  # let the port and the CPU settle before the next target


if __name__ == "__main__":
    sys.exit(main())
