"""The user's database as a CDC source: one protocol, two engines (:func:`open_database`)."""

from __future__ import annotations

from typing import Protocol

from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.sqltext import CdcSqlError

__all__ = ["CdcDatabase", "open_database"]


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

    async def delete(self, change: Change) -> bool: ...

    async def complete(self, spec: CaptureSpec, change: Change, wb: WriteBack) -> bool: ...

    async def ensure_side_table(self, table: str) -> None: ...

    async def wait(self, spec: CaptureSpec, timeout: float) -> None: ...


def open_database(dsn: str, *, pool_size: int = 4) -> CdcDatabase:
    """``postgresql://...`` or ``mysql://...`` / ``mariadb://...`` (not yet opened)."""
    scheme = dsn.split(":", 1)[0].split("+")[0].lower()
    if scheme in ("postgresql", "postgres"):
        from lockgate.cdc.postgres import PostgresCdc

        return PostgresCdc(dsn, pool_size=pool_size)
    if scheme in ("mysql", "mariadb"):
        from lockgate.cdc.mariadb import MariaCdc

        return MariaCdc(dsn, pool_size=pool_size)
    raise CdcSqlError(f"unsupported database for CDC: '{scheme}' (postgresql:// or mysql://)")
