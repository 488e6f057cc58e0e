"""Schema migrations: Alembic, run programmatically, exactly once under a lock.

``await run_migrations(url)`` brings the database to the newest revision
shipped in ``lockgate/store/migrations/versions`` and returns True if this call
applied anything (False when the schema was already current). Several gateway
processes may call it at the same moment:

- PostgreSQL: the upgrade runs on a connection holding
  ``pg_advisory_lock(MIGRATION_LOCK_KEY)`` (per database); the others wait,
  then find the schema current and do nothing. DDL is transactional.
- SQLite: an exclusive ``fcntl.flock`` on ``<db file>.migrate.lock`` next to
  the database file serialises processes; the DDL runs in one transaction.
- Within one process an ``asyncio.Lock`` (per event loop) also serialises
  upgrades, because Alembic's ``context`` is global state; it is all an
  in-memory SQLite database needs.

No ``alembic.ini`` is read; the script location is the package directory.

Alembic (with Mako and Pygments, ~10 MB resident) is imported only when the schema is not
current: :func:`_heads_on_disk` reads the revision ids from the version files and
:func:`_current_heads` reads ``alembic_version``, so a gateway starting on a migrated
database never loads it (issue 12, RSS per worker).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.store.engine import create_engine
from lockgate.store.errors import StoreError
from lockgate.store.urls import sqlite_path

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "current_revision",
    "head_revision",
    "migrate_engine",
    "run_migrations",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x6C6F636B67617465  # b"lockgate" as a signed 64-bit int
LOCK_WAIT_SECONDS = 300.0
_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    """One lock per event loop: Alembic keeps global state, so one upgrade at a time here."""
    loop = asyncio.get_running_loop()
    lock = _loop_locks.get(loop)
    if lock is None:
        lock = _loop_locks[loop] = asyncio.Lock()
    return lock


_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)


@functools.cache
def _heads_on_disk() -> frozenset[str] | None:
    """The head revisions of the packaged version files, read without Alembic (None when a
    file does not declare its revisions plainly: then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        found = {m.group(1): m.group(2) for m in _REVISION.finditer(path.read_text())}
        try:
            rev = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found.get("down_revision", "None"))
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(rev, str):
            return None
        revisions.add(rev)
        downs = down if isinstance(down, tuple | list) else (down,)
        parents.update(d for d in downs if isinstance(d, str))
    return frozenset(revisions - parents) or None


def _current_heads(connection: Connection) -> set[str]:
    """``alembic_version`` as Alembic reads it (empty when the table is missing)."""
    if not inspect(connection).has_table("alembic_version"):
        return set()
    return {str(r[0]) for r in connection.execute(text("SELECT version_num FROM alembic_version"))}


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged scripts; no ini file involved."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _known(script: ScriptDirectory, revision: str) -> bool:
    from alembic.script.revision import ResolutionError
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except (ResolutionError, CommandError):
        return False


def _upgrade(connection: Connection) -> bool:
    on_disk = _heads_on_disk()
    if on_disk is not None and _current_heads(connection) == on_disk:
        return False  # current: no Alembic import
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())
    current = set(MigrationContext.configure(connection).get_current_heads())
    if current == heads:
        return False
    unknown = [rev for rev in current if not _known(script, rev)]
    if unknown:
        raise StoreError(
            f"the database schema is at revision {', '.join(sorted(unknown))}, newer than this "
            f"lockgate knows (head {', '.join(sorted(heads))}); upgrade lockgate"
        )
    log.info("migrating database schema from %s to %s", sorted(current) or "empty", sorted(heads))
    command.upgrade(alembic_config(connection), "heads")
    return True


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """Exclusive flock on ``path``, polled so a waiting task stays cancellable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() > deadline:
                raise StoreError(f"timed out waiting for the migration lock {path}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)  # closing releases the lock


async def _upgrade_on(conn: AsyncConnection) -> bool:
    try:
        changed = await conn.run_sync(_upgrade)
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return changed


async def migrate_engine(engine: AsyncEngine) -> bool:
    """Upgrade the database behind ``engine`` to head, under the right lock."""
    async with _process_lock():
        return await _migrate_locked(engine)


async def _migrate_locked(engine: AsyncEngine) -> bool:
    backend = engine.dialect.name
    if backend == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            await conn.commit()
            try:
                return await _upgrade_on(conn)
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                await conn.commit()
    if backend == "sqlite":
        path = sqlite_path(engine.url)
        if path is None:  # in memory: one process, already under the process lock
            async with engine.connect() as conn:
                return await _upgrade_on(conn)
        async with _file_lock(Path(f"{path}.migrate.lock")), engine.connect() as conn:
            return await _upgrade_on(conn)
    raise StoreError(f"no migration support for database backend '{backend}'")


async def run_migrations(url: str) -> bool:
    """Upgrade the database at ``url`` to head; True if this call applied revisions."""
    engine = create_engine(url)
    try:
        return await migrate_engine(engine)
    finally:
        await engine.dispose()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
