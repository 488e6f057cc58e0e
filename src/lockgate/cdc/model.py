"""CDC data: what a capture watches (:class:`CaptureSpec`), one captured change
(:class:`Change`) and what a consumer writes back (:class:`WriteBack`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CaptureSpec", "Change", "WriteBack"]


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    name: str
    table: str
    """``table`` or ``schema.table`` (validated identifiers)."""
    columns: tuple[str, ...]
    """Watched columns: an UPDATE that changes none of them is not captured; their values
    (and the key's) are the change's ``data``."""
    key: tuple[str, ...]
    """The row's key columns (default: the table's primary key)."""
    where: str | None = None
    """SQL condition on the new row (column names as written in the table)."""
    epoch: str = ""
    """When it was installed (part of every change id: a reinstall never reuses ids)."""
    source: str = "trigger"
    """``trigger`` (outbox) or ``wal2json`` (logical decoding, PostgreSQL)."""
    ops: tuple[str, ...] = ("INSERT", "UPDATE")
    """The captured operations (``INSERT``, ``UPDATE``, ``DELETE``); a DELETE carries the
    deleted row's key and watched columns (its old values)."""


@dataclass(slots=True)
class Change:
    capture: str
    outbox_id: int
    row_key: str
    """The key values as a JSON array (text): changes of one row share it."""
    op: str
    """``INSERT``, ``UPDATE`` or ``DELETE``."""
    key: dict[str, Any]
    data: dict[str, Any]
    """The watched columns (and the key): new values, or the old ones for a DELETE."""
    attempts: int
    """Deliveries so far, this one included."""
    epoch: str = ""

    @property
    def change_id(self) -> str:
        return f"{self.capture}:{self.epoch}:{self.outbox_id}"


@dataclass(frozen=True, slots=True)
class WriteBack:
    """``column``: ``UPDATE <table> SET <column> = value WHERE <key>``; ``side``: one row in
    ``side_table`` (change id, capture, row key, op, result); ``forget``: delete the side
    table's rows of the change's row (a deleted row's results); ``none``: nothing to write
    (a deleted row's column went with the row) -- the change is still consumed atomically."""

    kind: Literal["column", "side", "forget", "none"]
    target: str
    """The column name or the side table."""
    value: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
