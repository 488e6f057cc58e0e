"""Result records of an overhead-bench run, the machine description, and their markdown.

:func:`render_markdown` turns a :class:`RunResult` into the section that is printed
and recorded in ``bench/RESULTS.md`` (:func:`record`, newest run first, below the
file's introduction). Derived numbers:

* *added p50/p99 at c=1*: the target's percentile minus the direct upstream's
  percentile, both at concurrency 1 in the same run (a difference of percentiles,
  not a percentile of per-request differences);
* *peak rps*: the best requests/s over the concurrency levels;
* *CPU ms/req*: user+system CPU of every process of the target (workers included)
  during the measured run, divided by the requests served;
* *other load*: CPU the rest of the machine (other users of the box) used during the
  measured runs, in cores, so a loaded box shows in the record.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import HeaderProbe, WrkResult

__all__ = [
    "LevelResult",
    "RunResult",
    "SoakResult",
    "TargetResult",
    "machine_info",
    "record",
    "render_markdown",
    "sequential_added",
]

RUNS_MARKER = "<!-- runs: newest first; bench/overhead.py inserts below this line -->"
_INTRO = f"""# lockgate overhead bench: recorded runs

Written by `bench/overhead.py` (see `bench/README.md` for what is measured and how).
Each section is one run: the exact command, the machine, and per target the
requests/s and client-side latency percentiles per concurrency level, against the
same stand-in upstream in the same run.

Targets: added latency at c=1 <= 1 ms p50 and <= 3 ms p99 (audit logging on);
peak throughput >= 10x LiteLLM's best in the same run; RSS flat over a 10-minute soak.

{RUNS_MARKER}
"""


@dataclass
class LevelResult:
    """One measured concurrency level of one target."""

    wrk: WrkResult
    target_cpu_s: float
    upstream_cpu_s: float
    other_cpu_cores: float
    """Average cores busy outside the bench's own processes during the run."""
    gc2: tuple[int, float] | None = None
    """Full (generation-2) collections during the run: (count, seconds), all workers summed."""
    audit_backlog: int | None = None
    """lockgate: audit records still queued when wrk stopped (``lockgate_audit_pending``)."""
    drain_s: float = 0.0
    """lockgate: seconds until that backlog was written; ``target_cpu_s`` includes them, so
    CPU per request counts every request's audit write."""

    @property
    def sustained_rps(self) -> float:
        """Requests over the run plus the time to write their audit records."""
        return self.wrk.requests / (self.wrk.duration_s + self.drain_s)

    @property
    def target_cpu_ms_per_req(self) -> float | None:
        return self.target_cpu_s * 1000 / self.wrk.requests if self.wrk.requests else None

    @property
    def upstream_cpu_ms_per_req(self) -> float | None:
        return self.upstream_cpu_s * 1000 / self.wrk.requests if self.wrk.requests else None


@dataclass
class TargetResult:
    name: str
    kind: str
    workers: int
    levels: dict[int, LevelResult] = field(default_factory=dict)
    probe: HeaderProbe | None = None
    rss_mb: float | None = None
    """Sum over the target's processes (with ``--workers N``, the supervisor and N workers)."""
    worker_rss_mb: list[float] = field(default_factory=list)
    """Each serving process's own RSS (lockgate: the workers, not the supervisor)."""
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    stream: Any = None
    """bench.hotpath.StreamResult with ``--stream`` (direct and lockgate w=1)."""
    sequential: Any = None
    """bench.hotpath.SequentialResult: the c=1 probe with one sequential client (c=1 runs)."""

    @property
    def peak_rps(self) -> float | None:
        return max((lv.wrk.rps for lv in self.levels.values()), default=None)

    def peak_level(self) -> LevelResult | None:
        if not self.levels:
            return None
        return max(self.levels.values(), key=lambda lv: lv.wrk.rps)


@dataclass
class SoakResult:
    target: str
    duration_s: float
    connections: int
    samples: list[tuple[float, float]]
    """(seconds since start, RSS MB summed over the target's processes)."""
    warmup_s: float
    wrk: WrkResult | None
    cpu_ms_per_req: float | None
    mem: list[dict[str, float]] = field(default_factory=list)
    """bench/memprobe.py samples (``--mem-probe``); ``t`` in seconds since the soak began."""

    def slope_mb_per_min(self) -> float | None:
        pts = [(t, m) for t, m in self.samples if t >= self.warmup_s]
        if len(pts) < 3:
            return None
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mm = sum(m for _, m in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var == 0:
            return None
        return sum((t - mt) * (m - mm) for t, m in pts) / var * 60.0


@dataclass
class RunResult:
    started_at: str
    command: str
    machine: dict[str, str]
    setup: list[str]
    concurrency: list[int]
    targets: list[TargetResult] = field(default_factory=list)
    soak: SoakResult | None = None
    soak_error: str | None = None
    quick: bool = False
    load_before: str = ""
    load_after: str = ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _cmd_first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0].strip() if out else "unknown"


def machine_info(repo: Path, python: str) -> dict[str, str]:
    """nproc, CPU model, memory, kernel, Python, wrk version and the lockgate commit."""
    commit = _cmd_first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_first_line(["git", "-C", str(repo), "status", "--porcelain", "--", "src"])
    wrk = shutil.which("wrk")
    wrk_version = _cmd_first_line([wrk, "-v"]) if wrk else "missing"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory": _mem_total(),
        "kernel": platform.release(),
        "python": _cmd_first_line([python, "-VV"]),
        "wrk": re.sub(r"\s+\[.*$", "", wrk_version),
        "lockgate commit": commit + (" (+ uncommitted changes in src/)"
                                     if dirty not in ("", "unknown") else ""),
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def sequential_added(target: TargetResult, direct: TargetResult) -> tuple[float, float] | None:
    """Added p50/p99 (ms) at c=1 from both targets' sequential-client probes, if they ran."""
    ts, ds = target.sequential, direct.sequential
    if ts is None or ds is None:
        return None
    values = (ts.pct(0.5), ts.pct(0.99), ds.pct(0.5), ds.pct(0.99))
    if None in values:
        return None
    t50, t99, d50, d99 = values
    return t50 - d50, t99 - d99


def _added(target: TargetResult, direct: TargetResult | None) -> tuple[float, float] | None:
    """Added p50/p99 at c=1: from the sequential client when both targets have it (wrk's
    c=1 latencies are not reliable on the bench box, bench/hotpath.py), else from wrk."""
    if direct is None:
        return None
    added = sequential_added(target, direct)
    if added is not None:
        return added
    if 1 not in target.levels or 1 not in direct.levels:
        return None
    t, d = target.levels[1].wrk, direct.levels[1].wrk
    return t.p50_ms - d.p50_ms, t.p99_ms - d.p99_ms


def _best(run: RunResult, kind: str) -> TargetResult | None:
    cands = [t for t in run.targets if t.kind == kind and t.peak_rps]
    return max(cands, key=lambda t: t.peak_rps or 0.0) if cands else None


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render_markdown(run: RunResult) -> str:
    """The run as a markdown section (heading, command, machine, tables, verdicts)."""
    direct = next((t for t in run.targets if t.kind == "direct"), None)
    kind = "quick run" if run.quick else "full run"
    if run.soak is not None and not run.targets:
        kind = "soak only"
    out: list[str] = [f"## {run.started_at} — {kind}", ""]
    out.append(f"Command: `{run.command}`")
    out.append("")
    m = run.machine
    out.append(f"Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('memory')} RAM, "
               f"Linux {m.get('kernel')}, {m.get('python')}, {m.get('wrk')}, "
               f"lockgate {m.get('lockgate commit')}.")
    out.append(f"Load average before / after: {run.load_before} / {run.load_after}.")
    others = [lv.other_cpu_cores for t in run.targets for lv in t.levels.values()]
    if others:
        avg_other = sum(others) / len(others)
        busy = " — **the box was loaded by other work during this run**" if avg_other > 0.3 else ""
        out.append(f"CPU used by other processes during the measured runs: "
                   f"{avg_other:.2f} cores on average, {max(others):.2f} at most{busy}.")
    out.append("")
    for line in run.setup:
        out.append(f"- {line}")
    out.append("")

    levels = run.concurrency
    head = ["target"]
    for c in levels:
        head += [f"c={c} rps", f"c={c} p50 / p99 ms"]
    head += ["added p50 / p99 ms at c=1 (sequential client if run, else wrk)", "peak rps",
             "CPU ms/req at peak",
             "own overhead header, mean ms"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for t in run.targets:
        row = [t.name]
        if t.error:
            row += ["not run"] + ["-"] * (len(head) - 2)
            out.append("| " + " | ".join(row) + " |")
            continue
        for c in levels:
            lv = t.levels.get(c)
            if lv is None:
                row += ["-", "-"]
            else:
                err = f" ({lv.wrk.error_count} errors)" if lv.wrk.error_count else ""
                row += [_rps(lv.wrk.rps) + err, f"{_ms(lv.wrk.p50_ms)} / {_ms(lv.wrk.p99_ms)}"]
        added = _added(t, direct) if t.kind != "direct" else None
        row.append(f"{_ms(added[0])} / {_ms(added[1])}" if added else "-")
        row.append(_rps(t.peak_rps))
        peak = t.peak_level()
        cpu = peak.target_cpu_ms_per_req if peak else None
        row.append(_ms(cpu) + (" (upstream)" if t.kind == "direct" and cpu is not None else ""))
        if t.probe is not None and t.probe.mean_ms is not None:
            row.append(f"{_ms(t.probe.mean_ms)} ({t.probe.header}, n={len(t.probe.values_ms)})")
        else:
            row.append("-")
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    verdicts = _verdicts(run, direct)
    if verdicts:
        out += [*verdicts, ""]

    for t in run.targets:
        for note in t.notes:
            out.append(f"- {t.name}: {note}")
        if t.error:
            out.append(f"- {t.name}: not run: {t.error}")
    if any(t.notes or t.error for t in run.targets):
        out.append("")

    if run.soak is not None:
        out += [*_soak_lines(run.soak), ""]
    if run.soak_error:
        out += [f"Soak: not run: {run.soak_error}", ""]

    out += _detail_table(run)
    return "\n".join(out) + "\n"


def _verdicts(run: RunResult, direct: TargetResult | None) -> list[str]:
    lines: list[str] = []
    lockgates = [t for t in run.targets if t.kind == "lockgate" and not t.error]
    w1 = next((t for t in lockgates if t.workers == 1), lockgates[0] if lockgates else None)
    if w1 is not None:
        added = _added(w1, direct)
        if added is not None:
            ok = added[0] <= 1.0 and added[1] <= 3.0
            lines.append(f"- lockgate added latency at c=1 ({w1.name}): p50 {added[0]:.2f} ms "
                         f"(target <= 1), p99 {added[1]:.2f} ms (target <= 3): **{_verdict(ok)}**")
    best_lg, best_ll = _best(run, "lockgate"), _best(run, "litellm")
    if best_lg and best_ll and best_lg.peak_rps and best_ll.peak_rps:
        ratio = best_lg.peak_rps / best_ll.peak_rps
        lines.append(f"- peak throughput: lockgate {best_lg.peak_rps:,.0f} rps ({best_lg.name}) vs "
                     f"LiteLLM {best_ll.peak_rps:,.0f} rps ({best_ll.name}): **{ratio:.1f}x** "
                     f"(target >= 10x): **{_verdict(ratio >= 10)}**")
    if direct and direct.peak_rps and best_lg and best_lg.peak_rps:
        lines.append(f"- the upstream alone served {direct.peak_rps:,.0f} rps at its peak "
                     f"({direct.peak_rps / best_lg.peak_rps:.1f}x lockgate's best), so it was "
                     "not the bottleneck" if direct.peak_rps > 3 * best_lg.peak_rps else
                     f"- warning: the upstream alone served only {direct.peak_rps:,.0f} rps, "
                     "not clearly above the gateways; it may be a bottleneck")
    return lines


def _soak_lines(soak: SoakResult) -> list[str]:
    mbs = [mb for _, mb in soak.samples]
    slope = soak.slope_mb_per_min()
    lines = [f"Soak: {soak.target}, {soak.duration_s:.0f} s at c={soak.connections}, "
             f"RSS (sum over its processes) sampled {len(mbs)} times."]
    steady = [mb for t, mb in soak.samples if t >= soak.warmup_s]
    if mbs:
        lines.append(f"- RSS MB: first {mbs[0]:.1f}, after warm-up "
                     f"{steady[0] if steady else mbs[-1]:.1f}, last {mbs[-1]:.1f}, "
                     f"max {max(mbs):.1f}")
    if len(steady) >= 6:
        third = len(steady) // 3
        early, late = steady[:third], steady[-third:]
        lines.append(f"- mean RSS of the first / last third after warm-up: "
                     f"{sum(early) / len(early):.1f} / {sum(late) / len(late):.1f} MB")
    if slope is not None and steady:
        mean = sum(steady) / len(steady)
        allowed = max(10.0, 0.1 * mean)
        flat = abs(slope) * 10 <= allowed
        lines.append(f"- slope after the first {soak.warmup_s:.0f} s (least squares): "
                     f"{slope:+.3f} MB/min = {slope * 10:+.1f} MB per 10 min; flat means within "
                     f"{allowed:.0f} MB per 10 min (10% of the mean, at least 10 MB): "
                     f"**{_verdict(flat)}**")
    if soak.wrk is not None:
        lines.append(f"- served {soak.wrk.requests:,} requests ({soak.wrk.rps:,.0f} rps), "
                     f"{soak.wrk.error_count} errors, p50 {_ms(soak.wrk.p50_ms)} ms, "
                     f"p99 {_ms(soak.wrk.p99_ms)} ms, CPU {_ms(soak.cpu_ms_per_req)} ms/req")
    return lines + _mem_lines(soak)


def _mem_lines(soak: SoakResult) -> list[str]:
    """What the memory probe saw after warm-up: malloc (native) vs Python allocations."""
    rows = [r for r in soak.mem if r["t"] >= soak.warmup_s]
    if len(rows) < 3:
        return []
    third = max(1, len(rows) // 3)
    lines = [f"- memory probe (bench/memprobe.py, {len(rows)} samples after warm-up), "
             "first / last third mean and range:"]
    for key, label, unit in (("malloc_in_use_mb", "malloc in use (glibc mallinfo2)", "MB"),
                             ("py_blocks", "Python allocated blocks", "k"),
                             ("gc_objects", "objects tracked by the GC", "k")):
        vals = [r[key] for r in rows if key in r]
        if len(vals) < 3:
            continue
        scale = 1.0 if unit == "MB" else 1000.0
        early, late = vals[:third], vals[-third:]
        lines.append(f"  - {label}: {sum(early) / len(early) / scale:,.1f} / "
                     f"{sum(late) / len(late) / scale:,.1f} {unit} "
                     f"(range {min(vals) / scale:,.1f} - {max(vals) / scale:,.1f}, "
                     f"last {vals[-1] / scale:,.1f})")
    return lines


def _detail_table(run: RunResult) -> list[str]:
    if not any(t.levels for t in run.targets):
        return []
    out = ["<details><summary>per level detail</summary>", "",
           "| target | c | requests | rps | p50 | p90 | p99 | p99.9 | max (ms) | errors | "
           "target CPU ms/req | upstream CPU ms/req | other load (cores) | gen-2 GC (n, ms) | "
           "audit backlog at the end (rows, s to write) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in run.targets:
        for c, lv in sorted(t.levels.items()):
            w = lv.wrk
            errs = ", ".join(f"{k} {v}" for k, v in w.errors.items() if v) or "0"
            out.append(
                f"| {t.name} | {c} | {w.requests:,} | {_rps(w.rps)} | {_ms(w.p50_ms)} | "
                f"{_ms(w.p90_ms)} | {_ms(w.p99_ms)} | {_ms(w.p999_ms)} | {_ms(w.max_ms)} | "
                f"{errs} | {_ms(lv.target_cpu_ms_per_req)} | {_ms(lv.upstream_cpu_ms_per_req)} | "
                f"{lv.other_cpu_cores:.2f} | "
                f"{f'{lv.gc2[0]}, {lv.gc2[1] * 1000:.0f}' if lv.gc2 else '-'} | "
                f"{f'{lv.audit_backlog:,}, {lv.drain_s:.1f}' if lv.audit_backlog else '-'} |")
    rss = [f"{t.name} {t.rss_mb:.0f} MB" for t in run.targets if t.rss_mb is not None]
    if rss:
        out += ["", "RSS after the run (sum over the target's processes): " + ", ".join(rss) + "."]
    out += ["", "</details>"]
    return out


def record(path: Path, section: str) -> None:
    """Insert ``section`` into ``path`` below the runs marker (creating the file if needed)."""
    text = path.read_text() if path.exists() else _INTRO
    if RUNS_MARKER not in text:
        text = text.rstrip("\n") + "\n\n" + RUNS_MARKER + "\n"
    head, tail = text.split(RUNS_MARKER, 1)
    path.write_text(head + RUNS_MARKER + "\n\n" + section.rstrip("\n") + "\n" + tail)
