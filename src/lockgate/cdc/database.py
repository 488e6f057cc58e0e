"""The user's database as a CDC source: one protocol, two engines (:func:`open_database`)."""

from __future__ import annotations

from typing import Protocol

from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.sqltext import CdcSqlError

__all__ = ["CdcDatabase", "open_capture", "open_database"]


class CdcDatabase(Protocol):
    kind: str

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def table_columns(self, table: str) -> list[str]: ...

    async def primary_key(self, table: str) -> list[str]: ...

    async def table_exists(self, table: str) -> bool: ...

    async def install(self, spec: CaptureSpec) -> None: ...

    async def uninstall(self, name: str | None) -> list[str]: ...

    async def capture(self, name: str) -> CaptureSpec | None: ...

    async def captures(self) -> list[CaptureSpec]: ...

    async def claim(self, spec: CaptureSpec, n: int, lease: float) -> list[Change]: ...

    async def depth(self, spec: CaptureSpec) -> int: ...

    async def retry_later(self, change: Change, delay: float, error: str) -> None: ...

    async def extend(self, change: Change, lease: float) -> None:
        """Keep the claim on ``change`` for ``lease`` more seconds (the task is still running)."""
        ...

    async def delete(self, change: Change) -> bool: ...

    async def complete(self, spec: CaptureSpec, change: Change, wb: WriteBack) -> bool: ...

    async def ensure_side_table(self, table: str) -> None: ...

    async def wait(self, spec: CaptureSpec, timeout: float) -> None: ...


def open_database(dsn: str, *, pool_size: int = 4, source: str = "trigger") -> CdcDatabase:
    """``postgresql://...`` or ``mysql://...`` / ``mariadb://...`` (not yet opened);
    ``source="wal2json"``: PostgreSQL logical decoding instead of triggers."""
    scheme = dsn.split(":", 1)[0].split("+")[0].lower()
    if source not in ("trigger", "wal2json"):
        raise CdcSqlError(f"unknown CDC source '{source}' (trigger or wal2json)")
    if source == "wal2json" and scheme not in ("postgresql", "postgres"):
        raise CdcSqlError("--source wal2json needs PostgreSQL")
    if scheme in ("postgresql", "postgres"):
        if source == "wal2json":
            from lockgate.cdc.wal2json import Wal2JsonCdc

            return Wal2JsonCdc(dsn, pool_size=pool_size)
        from lockgate.cdc.postgres import PostgresCdc

        return PostgresCdc(dsn, pool_size=pool_size)
    if scheme in ("mysql", "mariadb"):
        from lockgate.cdc.mariadb import MariaCdc

        return MariaCdc(dsn, pool_size=pool_size)
    raise CdcSqlError(f"unsupported database for CDC: '{scheme}' (postgresql:// or mysql://)")


async def open_capture(dsn: str, name: str, *, pool_size: int = 4
                       ) -> tuple[CdcDatabase, CaptureSpec]:
    """The opened database object that consumes capture ``name`` (trigger or wal2json)."""
    db = open_database(dsn, pool_size=pool_size)
    await db.open()
    try:
        spec = await db.capture(name)
    except BaseException:
        await db.aclose()
        raise
    if spec is None:
        await db.aclose()
        raise CdcSqlError(f"no capture '{name}' is installed (lockgate cdc install)")
    if spec.source != "trigger":
        await db.aclose()
        db = open_database(dsn, pool_size=pool_size, source=spec.source)
        await db.open()
    return db, spec
