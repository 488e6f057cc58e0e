"""Soak: lockgate under sustained load for ``--minutes``, RSS and the audit backlog sampled.

    .venv/bin/python bench/soak.py --minutes 3                  # PostgreSQL (a fresh database)
    .venv/bin/python bench/soak.py --minutes 30 --record        # the issue's 30-minute run
    .venv/bin/python bench/soak.py --minutes 3 --store sqlite   # the embedded default

One lockgate worker (``lockgate serve``, audit on) in front of the stand-in upstream
(bench/upstream.py), held by wrk at ``--concurrency`` connections for the whole time. Every
``--interval`` seconds: the RSS of the gateway's processes and, from its ``/metrics``,
``lockgate_audit_pending``, ``lockgate_audit_backlog_seconds`` and the audit writer's
``written``/``spilled`` counters. At the end the writer is given 60 s to drain and the rows in
``usage_records`` are counted against the requests wrk completed (every request audited).

With ``--store postgres`` (default) a fresh database ``lg_soak_<random>`` is created on
127.0.0.1:5432 and dropped afterwards. The RSS verdict is the one of bench/overhead.py's soak
(least-squares slope after warm-up within 10% of the mean per 10 minutes); the audit verdict
says whether the backlog stayed bounded (no spill, backlog under 5 s at the end).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.loadgen import parse_wrk_output, write_wrk_script, wrk_command  # noqa: E402
from bench.procs import ProcessGroup, cpu_seconds, rss_bytes  # noqa: E402
from bench.report import SoakResult, _soak_lines, machine_info, record  # noqa: E402
from bench.targets import (  # noqa: E402
    BENCH_BODY,
    CHAT_PATH,
    lockgate_command,
    start_lockgate,
    start_upstream,
)

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

__all__ = ["AuditSample", "main", "scrape_audit"]


@dataclass
class AuditSample:
    t: float
    rss_mb: float
    pending: float
    backlog_s: float
    written: float
    spilled: float


@dataclass
class SoakRun:
    samples: list[AuditSample] = field(default_factory=list)
    rows: int | None = None
    drained_s: float | None = None


def _log(msg: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def scrape_audit(base: str) -> dict[str, float]:
    """The audit gauges from ``/metrics`` (missing ones are 0)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {"pending": 0.0, "backlog_s": 0.0, "written": 0.0, "spilled": 0.0}
    for line in text.splitlines():
        if line.startswith("lockgate_audit_pending "):
            out["pending"] = float(line.split()[-1])
        elif line.startswith("lockgate_audit_backlog_seconds "):
            out["backlog_s"] = float(line.split()[-1])
        elif line.startswith('lockgate_audit{stat="written"}'):
            out["written"] = float(line.split()[-1])
        elif line.startswith('lockgate_audit{stat="spilled"}'):
            out["spilled"] = float(line.split()[-1])
    return out


def _count_rows(url: str) -> int:
    import asyncio

    import sqlalchemy as sa

    from lockgate.store import Store

    async def go() -> int:
        store = await Store.open(url)
        try:
            async with store.engine.connect() as conn:
                count = sa.text("SELECT count(*) FROM usage_records WHERE kind = 'chat' "
                                "AND request_id NOT LIKE 'req_prefill_%'")
                return int((await conn.execute(count)).scalar_one())
        finally:
            await store.close()

    return asyncio.run(go())


def _prefill(store: str, db_url: str, db_name: str | None, workdir: Path, rows: int) -> None:
    import asyncio

    from bench.audit_ceiling import _migrate, prefill_postgres, prefill_sqlite

    asyncio.run(_migrate(db_url))
    _log(f"prefilling {rows:,} audit rows")
    if store == "sqlite":
        prefill_sqlite(workdir / "soak.db", rows)
    else:
        prefill_postgres(f"host=127.0.0.1 port=5432 user=postgres dbname={db_name}", rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--lockgate-bin", type=Path, default=Path(sys.executable).parent / "lockgate")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    p.add_argument("--record", action="store_true", help="append the section to RESULTS.md")
    p.add_argument("--prefill", type=int, default=0, metavar="ROWS",
                   help="chained rows already in usage_records before the load (e.g. 2500000)")
    args = p.parse_args(argv)
    seconds = args.minutes * 60.0
    workdir = Path(tempfile.mkdtemp(prefix="lockgate-soak-"))
    db_name = None
    if args.store == "postgres":
        import psycopg

        db_name = "lg_soak_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{db_name}"')
        db_url = f"postgresql://postgres@127.0.0.1:5432/{db_name}"
    else:
        db_url = f"sqlite:///{workdir / 'soak.db'}"
    if args.prefill > 0:
        _prefill(args.store, db_url, db_name, workdir, args.prefill)
    run = SoakRun()
    wrk_out = ""
    cpu_ms = None
    started_at = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    try:
        with ProcessGroup() as group:
            upstream = start_upstream(group, workdir, "bench")
            target = start_lockgate(group, workdir, upstream.url, 1,
                                    lockgate_command(args.lockgate_bin),
                                    {"LOCKGATE_DATABASE_URL": db_url}, tag="-soak")
            assert target.server is not None
            base = target.url.removesuffix(CHAT_PATH)
            script = write_wrk_script(workdir / "soak.lua", BENCH_BODY, target.headers)
            _log(f"{args.store}: {seconds:.0f} s at c={args.concurrency}")
            cpu0 = cpu_seconds(target.server.pids())
            wrk = subprocess.Popen(wrk_command(target.url, script, args.concurrency, seconds, 1),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            t0 = time.monotonic()
            next_at = t0
            while wrk.poll() is None:
                if time.monotonic() >= next_at:
                    a = scrape_audit(base)
                    s = AuditSample(time.monotonic() - t0, rss_bytes(target.server.pids()) / 2**20,
                                    a["pending"], a["backlog_s"], a["written"], a["spilled"])
                    run.samples.append(s)
                    if len(run.samples) % max(1, int(60 / args.interval)) == 0:
                        _log(f"t={s.t:5.0f}s rss {s.rss_mb:.1f} MB pending {s.pending:.0f} "
                             f"backlog {s.backlog_s:.2f} s written {s.written:.0f}")
                    next_at += args.interval
                time.sleep(min(0.5, max(0.0, next_at - time.monotonic())))
            wrk_out = wrk.stdout.read() if wrk.stdout else ""
            cpu_ms_total = (cpu_seconds(target.server.pids()) - cpu0) * 1000.0
            t_end = time.monotonic()
            while time.monotonic() - t_end < 60 and scrape_audit(base)["pending"] > 0:
                time.sleep(0.2)
            run.drained_s = time.monotonic() - t_end
            group.stop(target.server)
        run.rows = _count_rows(db_url)
    finally:
        if db_name is not None:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    result = parse_wrk_output(wrk_out, args.concurrency)
    cpu_ms = cpu_ms_total / result.requests if result.requests else None
    soak = SoakResult("lockgate w=1", seconds, args.concurrency,
                      [(s.t, s.rss_mb) for s in run.samples],
                      warmup_s=min(120.0, seconds * 0.2), wrk=result, cpu_ms_per_req=cpu_ms)
    section = render(args, started_at, soak, run, result.requests)
    print(section)
    if args.record:
        record(args.results, section)
        _log(f"recorded in {args.results}")
    return 0


def render(args: argparse.Namespace, started_at: str, soak: SoakResult, run: SoakRun,
           requests: int) -> str:
    machine = machine_info(REPO, sys.executable)
    store = "PostgreSQL 127.0.0.1:5432 (fresh database)" if args.store == "postgres" \
        else "SQLite (fresh file)"
    pend = [s.pending for s in run.samples]
    back = [s.backlog_s for s in run.samples]
    spilled = max((s.spilled for s in run.samples), default=0.0)
    last = run.samples[-1] if run.samples else None
    bounded = spilled == 0 and (last is None or last.backlog_s < 5.0)
    lines = [
        f"## {started_at} — soak {args.minutes:g} min on {args.store} (bench/soak.py)",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, 'bench/soak.py', *sys.argv[1:]])}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        f"Store: {store}"
        + (f" prefilled with {args.prefill:,} chained audit rows" if args.prefill else "")
        + f"; lockgate w=1, audit on; wrk c={args.concurrency}; "
        f"samples every {args.interval:g} s.",
        "",
        *_soak_lines(soak),
        f"- audit backlog: pending max {max(pend, default=0):,.0f} / last "
        f"{pend[-1] if pend else 0:,.0f} records; oldest unwritten record max "
        f"{max(back, default=0):.2f} s / last {back[-1] if back else 0:.2f} s; spilled "
        f"{spilled:,.0f}; drained {run.drained_s or 0:.1f} s after the load stopped: "
        f"**{'BOUNDED' if bounded else 'FELL BEHIND'}**",
        f"- every request audited: {run.rows:,} chat rows in usage_records for {requests:,} "
        "requests wrk completed (wrk does not count the ones in flight when it stops): "
        f"**{'PASS' if run.rows is not None and run.rows >= requests else 'FAIL'}**",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
