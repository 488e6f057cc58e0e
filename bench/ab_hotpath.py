"""Same-run A/B of gateway source trees at one concurrency: requests/s and CPU per request.

    PYTHONPATH=src .venv/bin/python bench/ab_hotpath.py before=/path/to/old/src after=src \\
        [--rounds 5] [--seconds 6] [--concurrency 64]

One stand-in upstream (bench/upstream.py) and one ``lockgate serve --workers 1`` per source
tree (each with a fresh SQLite home, audit on), started side by side. Each round runs wrk
against every tree in turn, the order rotated each round so no tree always goes first; a
run's CPU is read from /proc over the whole session of the server after its audit backlog
was written (``lockgate_audit_pending`` back to 0), so it counts every request's audit row.
Prints each run and, per tree, the median requests/s and CPU ms per request with their
ranges. This is how the fifth pass of issue 12 compared its changes (bench/RESULTS.md);
``bench/overhead.py`` remains the recorded, full comparison (LiteLLM, levels, targets).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO))

from bench.loadgen import run_wrk, write_wrk_script  # noqa: E402
from bench.procs import ProcessGroup, cpu_seconds  # noqa: E402
from bench.targets import (  # noqa: E402
    Target,
    lockgate_command,
    start_lockgate,
    start_upstream,
    wait_audit_drained,
)

BODY = b'{"model": "bench", "messages": [{"role": "user", "content": "hello"}]}'


def _tree(arg: str) -> tuple[str, Path]:
    label, sep, src = arg.partition("=")
    path = Path(src).resolve()
    if not sep or not label or not (path / "lockgate").is_dir():
        raise argparse.ArgumentTypeError(f"expected LABEL=SRC_DIR (a dir holding lockgate/): {arg}")
    return label, path


def _measure(target: Target, script: Path, concurrency: int, seconds: float
             ) -> tuple[float, float]:
    """(requests/s, CPU ms per request including the audit rows written afterwards)."""
    assert target.server is not None
    before = cpu_seconds(target.server.pids())
    result = run_wrk(target.url, script, concurrency, seconds)
    wait_audit_drained(target)
    used = cpu_seconds(target.server.pids()) - before
    return result.rps, 1000.0 * used / max(result.requests, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trees", nargs="+", type=_tree, metavar="LABEL=SRC_DIR")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lockgate-ab-"))
    with ProcessGroup() as group:
        upstream = start_upstream(group, work)
        targets: list[tuple[str, Target, Path]] = []
        for label, src in args.trees:
            target = start_lockgate(group, work, upstream.url, 1,
                                    lockgate_command(Path("/nonexistent")), tag=f"-{label}",
                                    src=src, name=label)
            script = write_wrk_script(work / f"{label}.lua", BODY, target.headers)
            run_wrk(target.url, script, args.concurrency, 2.0)  # warm-up
            wait_audit_drained(target)
            targets.append((label, target, script))
        rps: dict[str, list[float]] = {label: [] for label, _, _ in targets}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in targets}
        for r in range(args.rounds):
            shift = r % len(targets)
            for label, target, script in targets[shift:] + targets[:shift]:
                got_rps, got_cpu = _measure(target, script, args.concurrency, args.seconds)
                rps[label].append(got_rps)
                cpu[label].append(got_cpu)
                print(f"[{time.strftime('%H:%M:%S')}] round {r + 1} {label:>12}: "
                      f"{got_rps:7,.0f} requests/s  {got_cpu:.3f} ms CPU/request", flush=True)
        print(f"\nc={args.concurrency}, {args.rounds} rounds of {args.seconds:g} s, "
              "lockgate serve --workers 1, SQLite, audit on")
        for label, _, _ in targets:
            r_, c_ = rps[label], cpu[label]
            print(f"{label:>12}: median {statistics.median(r_):7,.0f} requests/s "
                  f"({min(r_):,.0f}-{max(r_):,.0f}), {statistics.median(c_):.3f} ms CPU/request "
                  f"({min(c_):.3f}-{max(c_):.3f})")


if __name__ == "__main__":
    main()
