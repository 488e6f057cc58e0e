"""Database URL handling: plain config URLs -> SQLAlchemy async-driver URLs.

Accepted (what users write in ``lockgate.yaml`` / ``LOCKGATE_DATABASE_URL``)::

    sqlite:///relative/path.db   sqlite:////abs/path.db   sqlite://  (in memory)
    postgresql://user@host/db    postgres://...           postgresql+asyncpg://...
    postgresql+psycopg://...     (driver replaced by asyncpg)

libpq's ``sslmode=...`` query parameter is renamed to asyncpg's ``ssl=...``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lockgate.store.errors import UnsupportedDatabase

__all__ = ["is_sqlite", "safe_url", "sqlite_path", "to_async_url"]

_PG_SCHEMES = {"postgres", "postgresql"}


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    try:
        return make_url(url)
    except ArgumentError:
        raise UnsupportedDatabase(
            "database_url is not a valid URL; use sqlite:///path.db or postgresql://user@host/db"
        ) from None


def to_async_url(url: str | URL) -> URL:
    """Translate a plain URL to the async driver (aiosqlite / asyncpg)."""
    parsed = _parse(url)
    backend, _, _driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in _PG_SCHEMES:
        parsed = parsed.set(drivername="postgresql+asyncpg")
        query = dict(parsed.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
            parsed = parsed.set(query=query)
        return parsed
    raise UnsupportedDatabase(
        f"unsupported database URL scheme '{parsed.drivername}'; "
        "use sqlite:///path.db or postgresql://user@host/db"
    )


def is_sqlite(url: str | URL) -> bool:
    return _parse(url).drivername.partition("+")[0] == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL; None for in-memory or non-SQLite URLs."""
    parsed = _parse(url)
    if not is_sqlite(parsed):
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for logs and error messages."""
    return _parse(url).render_as_string(hide_password=True)
