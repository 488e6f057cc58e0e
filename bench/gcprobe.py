"""Run the lockgate CLI with a garbage-collector probe (``overhead.py --gc-probe``).

Every process that imports this module (the CLI process and, because uvicorn's
worker processes are started with multiprocessing *spawn* and re-import the main
module, every worker) counts its collections per generation and the time they
took, and rewrites ``$LOCKGATE_BENCH_GC_DIR/gc-<pid>.json`` at most once a
second and at exit. :func:`read_totals` sums those files, so the bench can
report how much wall time full collections took during a measured run.

Usage (what the bench does): ``python bench/gcprobe.py serve --config ...``.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["install", "read_totals"]

_ENV = "LOCKGATE_BENCH_GC_DIR"


def install(out_dir: Path) -> None:
    """Count collections in this process; write totals to ``out_dir/gc-<pid>.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gc-{os.getpid()}.json"
    totals = {g: [0, 0, 0.0] for g in range(3)}  # count, collected, seconds
    started: dict[int, float] = {}
    last_write = [0.0]

    def write() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(g): v for g, v in totals.items()}))
        tmp.replace(path)

    def callback(phase: str, info: dict[str, Any]) -> None:
        gen = int(info["generation"])
        now = time.perf_counter()
        if phase == "start":
            started[gen] = now
            return
        t = totals[gen]
        t[0] += 1
        t[1] += int(info.get("collected", 0))
        t[2] += now - started.pop(gen, now)
        if now - last_write[0] >= 1.0:
            last_write[0] = now
            write()

    gc.callbacks.append(callback)
    atexit.register(write)


def read_totals(out_dir: Path, pids: list[int] | None = None) -> dict[int, tuple[int, float]]:
    """Per generation: (collections, seconds), summed over the files (of ``pids`` if given)."""
    sums = {g: [0, 0.0] for g in range(3)}
    for f in out_dir.glob("gc-*.json"):
        if pids is not None and int(f.stem.split("-", 1)[1]) not in pids:
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for g in range(3):
            count, _collected, secs = data.get(str(g), [0, 0, 0.0])
            sums[g][0] += int(count)
            sums[g][1] += float(secs)
    return {g: (int(v[0]), float(v[1])) for g, v in sums.items()}


if os.environ.get(_ENV):  # the CLI process and every spawned worker
    install(Path(os.environ[_ENV]))

if __name__ == "__main__":
    from lockgate.cli import main

    # serve in this process, under the probe (lockgate serve would exec a clean interpreter)
    os.environ.setdefault("LOCKGATE_SERVE_IN_PROCESS", "1")

    sys.argv[0] = "lockgate"
    main()
