"""Async engine construction for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite connections get WAL, a busy timeout and foreign keys, and real
transactions: SQLAlchemy emits ``BEGIN`` itself (transactional DDL for
migrations), and ``BEGIN IMMEDIATE`` on engines made by :func:`writer_engine`,
so a write transaction takes the write lock up front and waits ``busy_timeout``
instead of failing halfway through on a lock upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from lockgate.store.urls import sqlite_path, to_async_url

__all__ = ["WRITE_OPTION", "create_engine", "writer_engine"]

WRITE_OPTION = "lockgate_write"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(
    url: str | URL, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs: Any
) -> AsyncEngine:
    """An AsyncEngine for a plain config URL (creates a SQLite file's directory)."""
    async_url = to_async_url(url)
    if async_url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        return create_async_engine(async_url, **kwargs)
    path = sqlite_path(async_url)
    if path is None:
        # In memory: one shared connection, or every checkout would see a new empty DB.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(async_url, **kwargs)
    _sqlite_events(engine, sqlite_busy_timeout_ms, wal=path is not None)
    return engine


def writer_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) whose transactions start with ``BEGIN IMMEDIATE`` on SQLite."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_events(engine: AsyncEngine, busy_timeout_ms: int, *, wal: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
