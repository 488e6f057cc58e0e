"""The audit writer's ceiling: rows/s it commits into an already large table, SQLite vs
PostgreSQL, in one run.

    .venv/bin/python bench/audit_ceiling.py                       # 1,000,000 rows first
    .venv/bin/python bench/audit_ceiling.py --rows 2500000 --record

For each store (a fresh SQLite file; a fresh PostgreSQL database on 127.0.0.1:5432,
dropped afterwards): prefill ``usage_records`` with ``--rows`` valid chained rows (bulk,
through the sync driver), then queue ``--burst`` records in an :class:`AuditWriter` with the
default settings (batches of 500) and time how long it takes to commit them all: the rate
is the most the writer can absorb with the process doing nothing else. A gateway shares
its event loop (and, on SQLite, the GIL with the aiosqlite thread) with request handling,
so under load the real ceiling is lower (see docs/audit-retention.md for both numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.report import machine_info, record  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"

__all__ = ["main"]


def _log(msg: str) -> None:
    print(f"[audit-ceiling {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def _rows(n: int, start: float) -> tuple[list[tuple[object, ...]], int, str]:
    from lockgate.store.chain import GENESIS, link

    out: list[tuple[object, ...]] = []
    prev = GENESIS
    for i in range(1, n + 1):
        created = datetime.fromtimestamp(start + i * 0.001, UTC)
        row = {"request_id": f"req_prefill_{i}", "created_at": created, "key_id": "key_1",
               "team_id": "team_1", "model": "bench", "deployment": "bench/x", "kind": "chat",
               "source": "http", "status": 200, "error_class": None, "prompt_tokens": 12,
               "completion_tokens": 3, "cost": 0.000018, "latency_ms": 1.2,
               "overhead_ms": 0.3, "stream": False, "cached": False, "request_body": None,
               "response_body": None, "detail": None}
        prev = link(prev, i, row)
        out.append((*row.values(), i, prev))
    return out, n, prev


_COLS = ("request_id, created_at, key_id, team_id, model, deployment, kind, source, status, "
         "error_class, prompt_tokens, completion_tokens, cost, latency_ms, overhead_ms, stream, "
         "cached, request_body, response_body, detail, seq, chain_hash")


def _sqlite_time(value: object) -> str:
    assert isinstance(value, datetime)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # how SQLAlchemy stores it on SQLite


def prefill_sqlite(path: Path, n: int) -> None:
    rows, seq, head = _rows(n, time.time() - n * 0.001 - 3600)
    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            f"INSERT INTO usage_records ({_COLS}) VALUES ({', '.join('?' * 22)})",
            [(r[0], _sqlite_time(r[1]), *r[2:]) for r in rows])
        conn.execute("UPDATE audit_chain SET seq = ?, head_hash = ? WHERE id = 1", (seq, head))
        conn.commit()
    finally:
        conn.close()


def prefill_postgres(dsn: str, n: int) -> None:
    import psycopg

    rows, seq, head = _rows(n, time.time() - n * 0.001 - 3600)
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY usage_records ({_COLS}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        conn.execute("UPDATE audit_chain SET seq = %s, head_hash = %s WHERE id = 1", (seq, head))


async def measure(url: str, burst: int) -> tuple[float, int]:
    from lockgate.pipeline.call import UsageRecord
    from lockgate.store import AuditWriter, Store

    store = await Store.open(url)
    writer = AuditWriter(store, spill_dir=None, max_queue=max(100_000, burst + 1))
    try:
        now = time.time()
        records = [UsageRecord(f"req_burst_{uuid.uuid4().hex}", now, "key_1", "team_1", "bench",
                               "bench/x", "chat", "http", 200, None, 12, 3, 0.000018, 1.2, 0.3,
                               False) for _ in range(burst)]
        t0 = time.perf_counter()
        writer.start()
        for r in records:
            writer.submit(r)
        await writer.flush()
        elapsed = time.perf_counter() - t0
        return burst / elapsed, writer.batches
    finally:
        await writer.close()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/audit_ceiling.py")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the table first")
    p.add_argument("--burst", type=int, default=50_000, help="records queued at once")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)

    results: list[tuple[str, float, int, float]] = []
    work = Path(tempfile.mkdtemp(prefix="lockgate-audit-ceiling-"))
    db = "lg_ceiling_" + uuid.uuid4().hex[:10]
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        for name, url in (("sqlite", f"sqlite:///{work / 'ceiling.db'}"),
                          ("postgresql", f"postgresql://postgres@127.0.0.1:5432/{db}")):
            asyncio.run(_migrate(url))
            _log(f"{name}: prefilling {args.rows:,} rows")
            t0 = time.perf_counter()
            if name == "sqlite":
                prefill_sqlite(work / "ceiling.db", args.rows)
            else:
                prefill_postgres(f"host=127.0.0.1 port=5432 user=postgres dbname={db}",
                                 args.rows)
            prefill_s = time.perf_counter() - t0
            rate, batches = asyncio.run(measure(url, args.burst))
            _log(f"{name}: {rate:,.0f} rows/s ({batches} batches) after {prefill_s:.0f} s prefill")
            results.append((name, rate, batches, prefill_s))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    machine = machine_info(REPO, sys.executable)
    lines = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — audit writer ceiling "
        "(bench/audit_ceiling.py)",
        "",
        f"Command: `python bench/audit_ceiling.py {' '.join(sys.argv[1:])}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        f"A table already holding {args.rows:,} chained rows, then {args.burst:,} records "
        "queued at once in an AuditWriter (defaults: batches of 500, one transaction each, "
        "hash chain); rows/s until all are committed, the process doing nothing else.",
        "",
        "| store | rows/s committed | batches | prefill (s) |",
        "|---|---|---|---|",
        *(f"| {n} | {r:,.0f} | {b} | {s:.0f} |" for n, r, b, s in results),
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if args.record:
        record(args.results, section)
    return 0


async def _migrate(url: str) -> None:
    from lockgate.store import Store

    store = await Store.open(url)
    await store.close()


if __name__ == "__main__":
    sys.exit(main())
