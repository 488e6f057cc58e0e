"""Run the lockgate CLI with a memory probe (``overhead.py --soak ... --mem-probe``).

RSS alone cannot say *what* grows. Every process that imports this module (the
CLI process and every uvicorn worker, which re-imports the main module) starts
a daemon thread that every ``$LOCKGATE_BENCH_MEM_EVERY`` seconds (default 10)
appends one JSON line to ``$LOCKGATE_BENCH_MEM_DIR/mem-<pid>.jsonl``:

- ``malloc_in_use_mb`` / ``malloc_free_mb``: glibc ``mallinfo2()`` over all
  arenas (memory C code and Python's large objects hold / malloc keeps free);
  absent where the C library has no ``mallinfo2``;
- ``py_blocks``: ``sys.getallocatedblocks()``, Python's own allocations;
- ``gc_objects``: objects the collector tracks (not counting ``gc.freeze``'s);
- ``threads``.

Python blocks flat while malloc in-use moves means native memory (a C
extension, SQLite, the driver's statement cache); both moving means Python
objects are kept. That is how the statement-cache swings of the audit writer
were found (bench/RESULTS.md, 2026-12-02).

Usage (what the bench does): ``python bench/memprobe.py serve --config ...``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["install", "read_series", "sample"]

_ENV_DIR = "LOCKGATE_BENCH_MEM_DIR"
_ENV_EVERY = "LOCKGATE_BENCH_MEM_EVERY"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()


def sample() -> dict[str, float]:
    """One reading of this process's memory (see the module docs for the fields)."""
    out: dict[str, float] = {"t": time.time(), "py_blocks": float(sys.getallocatedblocks()),
                             "gc_objects": float(len(gc.get_objects())),
                             "threads": float(threading.active_count())}
    if _MALLINFO2 is not None:
        info = _MALLINFO2()
        out["malloc_in_use_mb"] = (info.uordblks + info.hblkhd) / 2**20
        out["malloc_free_mb"] = info.fordblks / 2**20
    return out


def install(out_dir: Path, every: float = 10.0) -> None:
    """Append a :func:`sample` to ``out_dir/mem-<pid>.jsonl`` every ``every`` seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"mem-{os.getpid()}.jsonl"

    def run() -> None:
        while True:
            time.sleep(every)
            with path.open("a") as f:
                f.write(json.dumps(sample()) + "\n")

    threading.Thread(target=run, name="lockgate-bench-memprobe", daemon=True).start()


def read_series(out_dir: Path) -> list[dict[str, float]]:
    """The samples of all processes, summed per sample index (processes sample in step)."""
    per_pid: list[list[dict[str, float]]] = []
    for f in sorted(out_dir.glob("mem-*.jsonl")):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by the process being stopped
        if rows:
            per_pid.append(rows)
    if not per_pid:
        return []
    series: list[dict[str, float]] = []
    for i in range(min(len(rows) for rows in per_pid)):
        total: dict[str, float] = {}
        for rows in per_pid:
            for key, value in rows[i].items():
                total[key] = value if key == "t" else total.get(key, 0.0) + value
        series.append(total)
    return series


if __name__ == "__main__" and os.environ.get("LOCKGATE_SERVE_IN_PROCESS") is None:
    # lockgate serve starts its serving process with the malloc settings (read by the C
    # library at start): start this one again with them, before the probe, so it measures
    # the same allocator
    from lockgate.interpreter import apply_malloc_env

    os.environ["LOCKGATE_SERVE_IN_PROCESS"] = "1"
    apply_malloc_env(os.environ)
    os.execv(sys.executable, [sys.executable, *sys.argv])

if os.environ.get(_ENV_DIR):  # the CLI process and every spawned worker
    install(Path(os.environ[_ENV_DIR]), float(os.environ.get(_ENV_EVERY) or 10.0))

if __name__ == "__main__":
    from lockgate.cli import main

    # serve in this process, under the probe (lockgate serve would exec a clean interpreter)
    os.environ.setdefault("LOCKGATE_SERVE_IN_PROCESS", "1")

    sys.argv[0] = "lockgate"
    main()
