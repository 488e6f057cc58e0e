"""``lockgate cdc install``: check the capture against the table, then install it."""

from __future__ import annotations

from lockgate.cdc.database import CdcDatabase
from lockgate.cdc.model import CaptureSpec
from lockgate.cdc.sqltext import CdcSqlError, check_ident, check_table, parse_ops

__all__ = ["install_capture"]


async def install_capture(
    db: CdcDatabase,
    name: str,
    table: str,
    columns: list[str],
    *,
    key: list[str] | None = None,
    where: str | None = None,
    ops: str | list[str] | tuple[str, ...] | None = None,
) -> CaptureSpec:
    """Validate names against the table (one-line :class:`CdcSqlError`) and install.
    ``ops``: the captured operations (default insert and update)."""
    check_ident(name, "capture name")
    operations = parse_ops(ops)
    check_table(table)
    if not columns:
        raise CdcSqlError("--columns needs at least one column")
    present = await db.table_columns(table)
    if not present:
        raise CdcSqlError(f"table '{table}' does not exist")
    for c in [*columns, *(key or [])]:
        check_ident(c, "column")
        if c not in present:
            raise CdcSqlError(f"table '{table}' has no column '{c}' "
                              f"(columns: {', '.join(present)})")
    if not key:
        key = await db.primary_key(table)
        if not key:
            raise CdcSqlError(f"table '{table}' has no primary key: name the row key with --key")
    spec = CaptureSpec(name, table, tuple(dict.fromkeys(columns)), tuple(key), where or None,
                       ops=operations)
    await db.install(spec)
    installed = await db.capture(name)
    assert installed is not None
    return installed
