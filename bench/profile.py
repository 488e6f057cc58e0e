"""Optional profiling of a gateway under load with py-spy (``overhead.py --profile DIR``).

:func:`profile_under_load` runs ``py-spy record --format raw`` on every process of
a target while wrk holds a fixed concurrency on it (a separate, unmeasured run:
sampling perturbs the numbers), and writes the collapsed stacks plus a short
text summary (:func:`summarize_collapsed`): the frames with the most samples
on top of the stack (self) and anywhere in it (inclusive). py-spy needs ptrace
rights (root, or CAP_SYS_PTRACE); ``pip install py-spy``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.loadgen import run_wrk

__all__ = ["profile_under_load", "summarize_collapsed"]


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "handle (lockgate/api/openai.py:42)"; drop the line number.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def summarize_collapsed(text: str, top: int = 25) -> str:
    """Top self and inclusive frames from py-spy's collapsed (``--format raw``) output."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] += count
        for frame in set(frames):
            incl_c[frame] += count
    if total == 0:
        return "no samples\n"
    out = [f"samples: {total}", "", f"top {top} self (on-CPU leaf frames):"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_c.most_common(top)]
    out += ["", f"top {top} inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl_c.most_common(top)]
    return "\n".join(out) + "\n"


def profile_under_load(
    pids: list[int],
    url: str,
    script: Path,
    connections: int,
    seconds: float,
    out_dir: Path,
    name: str,
    threads: int = 1,
) -> Path | None:
    """Sample ``pids`` with py-spy while wrk loads ``url``; returns the summary path."""
    beside = Path(sys.executable).parent / "py-spy"
    exe = str(beside) if beside.exists() else shutil.which("py-spy")
    if exe is None or not pids:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    raw_paths: list[Path] = []
    for pid in pids:
        raw = out_dir / f"{name}-{pid}.collapsed.txt"
        raw_paths.append(raw)
        procs.append(subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--rate", "250", "--nonblocking", "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        run_wrk(url, script, connections, seconds, threads)
    finally:
        for p in procs:
            try:
                p.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    text = "".join(r.read_text() for r in raw_paths if r.exists())
    summary = out_dir / f"{name}-summary.txt"
    summary.write_text(f"{name}: c={connections}, {seconds:.0f} s, pids {pids}\n"
                       + summarize_collapsed(text))
    return summary
