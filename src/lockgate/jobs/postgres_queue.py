"""PostgreSQL job queue: many workers on many machines share one table.

Claims select with ``FOR UPDATE OF j SKIP LOCKED`` so concurrent workers never
block on or double-claim a row; per-partition order comes from the "head of
partition" condition shared with SQLite (see :mod:`lockgate.jobs.sql_queue`).
URL: ``postgresql://user@host:5432/db?schema=name&table=name``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from lockgate.jobs.queue import QueueOptions, split_url_options
from lockgate.jobs.sql_queue import Row, SqlQueue, SqlTx

__all__ = ["PostgresQueue"]

DDL = [
    """CREATE TABLE IF NOT EXISTS {t} (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  task TEXT NOT NULL,
  input TEXT NOT NULL,
  idempotency_key TEXT UNIQUE,
  partition_key TEXT,
  priority INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  run_after DOUBLE PRECISION NOT NULL,
  lease_owner TEXT,
  lease_until DOUBLE PRECISION,
  result TEXT,
  last_error TEXT,
  errors TEXT NOT NULL DEFAULT '[]',
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  finished_at DOUBLE PRECISION,
  expires_at DOUBLE PRECISION,
  webhook_url TEXT,
  webhook_status TEXT,
  meta TEXT NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX IF NOT EXISTS {t}_ready ON {t} (state, priority DESC, seq)"
    " WHERE state IN ('queued', 'running')",
    "CREATE INDEX IF NOT EXISTS {t}_part ON {t} (partition_key, seq)"
    " WHERE partition_key IS NOT NULL AND state IN ('queued', 'running')",
    "CREATE INDEX IF NOT EXISTS {t}_expiry ON {t} (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS {t}_outbox (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  event TEXT NOT NULL,
  url TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at DOUBLE PRECISION NOT NULL,
  last_error TEXT,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS {t}_outbox_due ON {t}_outbox (state, next_at)",
]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _numbered(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2, ...`` (our queries hold no literal '?')."""
    count = 0

    def repl(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", repl, sql)


class _Tx(SqlTx):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self.conn.fetch(_numbered(sql), *args))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.conn.execute(_numbered(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


class PostgresQueue(SqlQueue):
    skip_locked = "FOR UPDATE OF j SKIP LOCKED"

    def __init__(self, url: str, options: QueueOptions) -> None:
        super().__init__(url, options)
        base, params = split_url_options(url)
        self.dsn = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", base)
        self.schema = params.get("schema")
        self.table = params.get("table", "lockgate_jobs")
        for name in (self.schema, self.table):
            if name is not None and not _IDENT.match(name):
                raise ValueError(f"invalid PostgreSQL identifier in queue URL: {name!r}")
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        settings = {"search_path": self.schema} if self.schema else {}
        if self.schema:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            finally:
                await conn.close()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=10, server_settings=settings
        )
        async with self._tx() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext('lockgate_jobs_ddl'))")
            for stmt in DDL:
                await tx.execute(self._q(stmt))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def drop(self) -> None:
        async with self._tx() as tx:
            if self.schema and self.schema != "public":
                await tx.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            else:
                await tx.execute(self._q("DROP TABLE IF EXISTS {t}"))
                await tx.execute(self._q("DROP TABLE IF EXISTS {t}_outbox"))

    @asynccontextmanager
    async def _tx(self, *, write: bool = True, atomic: bool = True) -> AsyncIterator[SqlTx]:
        if self._pool is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        async with self._pool.acquire() as conn:
            if not atomic:
                yield _Tx(conn)
                return
            async with conn.transaction():
                yield _Tx(conn)
