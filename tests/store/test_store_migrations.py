"""Migrations: applied once under a lock, from tasks and processes; schema matches tables.py."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import lockgate
from lockgate.store import (
    DatabaseUnavailable,
    Store,
    StoreError,
    UnsupportedDatabase,
    head_revision,
    run_migrations,
    to_async_url,
)
from lockgate.store.engine import create_engine
from lockgate.store.migrate import MIGRATIONS_DIR, current_revision
from lockgate.store.tables import metadata, schema_filter

# Each child process says "ready", waits for a line on stdin, then migrates: the
# test releases them all at once so the upgrades really overlap.
CHILD = """
import asyncio, sys
from lockgate.store import run_migrations
print("ready", flush=True)
sys.stdin.readline()
print(asyncio.run(run_migrations(sys.argv[1])), flush=True)
"""


def _diff(sync_conn: sa.Connection) -> list[Any]:
    """What autogenerate would change: the env's options (tables of another backend left out)."""
    ctx = MigrationContext.configure(
        sync_conn,
        opts={"compare_type": True, "include_object": schema_filter(sync_conn.dialect.name)},
    )
    return list(compare_metadata(ctx, metadata))


async def test_migration_creates_the_schema_of_tables_py(fresh_url: str) -> None:
    assert await run_migrations(fresh_url) is True
    assert await run_migrations(fresh_url) is False
    engine = create_engine(fresh_url)
    try:
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert {"teams", "api_keys", "usage_records", "alembic_version"} <= names
        assert {"rag_collections", "rag_documents", "rag_doc_principals", "rag_chunks"} <= names
        assert ("rag_postings" in names) == (engine.dialect.name == "postgresql")
    finally:
        await engine.dispose()


async def test_concurrent_migrations_from_tasks_upgrade_once(fresh_url: str) -> None:
    results = await asyncio.gather(*(run_migrations(fresh_url) for _ in range(6)))
    assert sorted(results) == [False] * 5 + [True]


async def test_concurrent_migrations_from_processes_upgrade_once(fresh_url: str) -> None:
    src = str(Path(lockgate.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            fresh_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
    outs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    results = sorted(out.decode().strip().splitlines()[-1] for out, _ in outs)
    assert results == ["False", "False", "True"]
    engine = create_engine(fresh_url)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_store_open_migrates_and_can_skip_migrations(fresh_url: str) -> None:
    unmigrated = await Store.open(fresh_url, migrate=False)
    try:
        assert await current_revision(unmigrated.engine) is None
    finally:
        await unmigrated.close()
    store = await Store.open(fresh_url)
    try:
        assert await current_revision(store.engine) == head_revision()
        assert await store.list_teams() == []
    finally:
        await store.close()


async def test_database_newer_than_code_is_a_clear_error(fresh_url: str) -> None:
    await run_migrations(fresh_url)
    engine = create_engine(fresh_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    with pytest.raises(StoreError, match="newer than this lockgate"):
        await Store.open(fresh_url)


async def test_unreachable_database_is_one_line_error() -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        await Store.open("postgresql://postgres:secret@127.0.0.1:1/nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert "secret" not in message
    assert info.value.http_status == 503


def test_url_translation() -> None:
    def s(url: str) -> str:
        return to_async_url(url).render_as_string(hide_password=False)

    assert s("sqlite:///.lockgate/lockgate.db") == "sqlite+aiosqlite:///.lockgate/lockgate.db"
    assert s("sqlite:////abs/x.db") == "sqlite+aiosqlite:////abs/x.db"
    assert s("sqlite://") == "sqlite+aiosqlite://"
    assert s("postgresql://u:p@h:5433/db") == "postgresql+asyncpg://u:p@h:5433/db"
    assert s("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert s("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert s("postgresql+psycopg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert s("postgresql://u@h/db?sslmode=require") == "postgresql+asyncpg://u@h/db?ssl=require"
    with pytest.raises(UnsupportedDatabase, match="mysql"):
        to_async_url("mysql://u@h/db")
    with pytest.raises(UnsupportedDatabase):
        to_async_url("not a url")


def test_migration_files_are_where_package_data_expects_them() -> None:
    # pyproject: store/migrations/*.ini, *.mako, versions/*.py (+ the .py modules as packages)
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "__init__.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "__init__.py").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
