"""SQLite job queue: the embedded, zero-setup default.

One file (WAL mode) that several worker processes on the same machine can
share. Every write runs under ``BEGIN IMMEDIATE`` so two processes never claim
the same job; within a process one connection is shared behind an asyncio lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from lockgate.jobs.queue import QueueOptions, split_url_options
from lockgate.jobs.sql_queue import Row, SqlQueue, SqlTx

__all__ = ["SqliteQueue", "sqlite_path"]

DDL = [
    """CREATE TABLE IF NOT EXISTS {t} (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  task TEXT NOT NULL,
  input TEXT NOT NULL,
  idempotency_key TEXT UNIQUE,
  partition_key TEXT,
  priority INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  run_after REAL NOT NULL,
  lease_owner TEXT,
  lease_until REAL,
  result TEXT,
  last_error TEXT,
  errors TEXT NOT NULL DEFAULT '[]',
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  finished_at REAL,
  expires_at REAL,
  webhook_url TEXT,
  webhook_status TEXT,
  meta TEXT NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX IF NOT EXISTS {t}_ready ON {t} (state, priority DESC, seq)",
    "CREATE INDEX IF NOT EXISTS {t}_part ON {t} (partition_key, seq)"
    " WHERE partition_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS {t}_expiry ON {t} (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS {t}_outbox (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  event TEXT NOT NULL,
  url TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at REAL NOT NULL,
  last_error TEXT,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS {t}_outbox_due ON {t}_outbox (state, next_at)",
]


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path.db`` / ``sqlite:////abs/path.db`` / ``sqlite+aiosqlite:///...``."""
    rest = url.split("?", 1)[0].split(":", 1)[1]
    if not rest.startswith("///"):
        raise ValueError(f"SQLite queue URL must look like sqlite:///path.db, got {url!r}")
    return rest[3:] or ":memory:"


class _Tx(SqlTx):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.conn.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return list(rows)  # type: ignore[arg-type]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.conn.execute(sql, args) as cur:
            return int(cur.rowcount)


class SqliteQueue(SqlQueue):
    def __init__(self, url: str, options: QueueOptions) -> None:
        super().__init__(url, options)
        _, params = split_url_options(url)
        self.table = params.get("table", "lockgate_jobs")
        self.path = sqlite_path(url)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=30.0)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=30000")
        self._conn = conn
        async with self._tx() as tx:
            for stmt in DDL:
                await tx.execute(self._q(stmt))

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def drop(self) -> None:
        async with self._tx() as tx:
            await tx.execute(self._q("DROP TABLE IF EXISTS {t}"))
            await tx.execute(self._q("DROP TABLE IF EXISTS {t}_outbox"))

    @asynccontextmanager
    async def _tx(self, *, write: bool = True, atomic: bool = True) -> AsyncIterator[SqlTx]:
        if self._conn is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        conn = self._conn
        async with self._lock:
            if not atomic:
                yield _Tx(conn)
                return
            await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _Tx(conn)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
