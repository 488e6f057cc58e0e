"""Collection rows (``rag_collections``): lookup, creation, settings, the write version.

Functions on the caller's connection; :class:`lockgate.rag.repository.RagStore`
owns the transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "CollectionInfo",
    "UnknownCollection",
    "bump",
    "collection_id",
    "delete",
    "get",
    "insert",
    "list_all",
    "require",
    "update",
    "version",
]

_COLUMNS = (
    "id, name, embed_model, dim, threshold, version, created_at, threshold_kind, owner_team"
)


class UnknownCollection(LookupError):
    """No collection by that name (or it was dropped while a write to it ran)."""


GONE = "RAG collection dropped while this write ran"


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    id: int
    name: str
    embed_model: str | None
    dim: int | None
    threshold: float | None
    version: int
    created_at: float
    threshold_kind: str | None = None
    """The confidence kind (cosine, bm25_norm) the threshold was calibrated on."""
    owner_team: str | None = None
    """The team whose keys may ingest here; None = the operator's (master key only)."""


def _info(row: Sequence[Any]) -> CollectionInfo:
    return CollectionInfo(
        int(row[0]), row[1], row[2], row[3], row[4], int(row[5]), float(row[6]), row[7],
        row[8],
    )


async def get(conn: AsyncConnection, name: str) -> CollectionInfo | None:
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM rag_collections WHERE name = :n"), {"n": name}
        )
    ).first()
    return None if row is None else _info(row)


async def list_all(conn: AsyncConnection) -> list[CollectionInfo]:
    rows = (await conn.execute(text(f"SELECT {_COLUMNS} FROM rag_collections ORDER BY name")))
    return [_info(r) for r in rows.all()]


async def collection_id(conn: AsyncConnection, name: str) -> int | None:
    cid = (
        await conn.execute(text("SELECT id FROM rag_collections WHERE name = :n"), {"n": name})
    ).scalar()
    return None if cid is None else int(cid)


async def insert(conn: AsyncConnection, name: str, embed_model: str | None, now: float,
                 owner_team: str | None = None) -> int:
    await conn.execute(
        text(
            "INSERT INTO rag_collections (name, embed_model, version, created_at,"
            " updated_at, owner_team) VALUES (:n, :m, 0, :t, :t, :o)"
        ),
        {"n": name, "m": embed_model, "t": now, "o": owner_team},
    )
    cid = await collection_id(conn, name)
    assert cid is not None
    return cid


async def update(
    conn: AsyncConnection,
    cid: int,
    *,
    threshold: float | None = None,
    threshold_kind: str | None = None,
    clear_threshold: bool = False,
    embed_model: str | None = None,
    dim: int | None = None,
) -> None:
    sets: list[str] = []
    params: dict[str, Any] = {"c": cid}
    if threshold is not None or clear_threshold:
        sets.append("threshold = :th, threshold_kind = :tk")
        params["th"] = threshold
        params["tk"] = threshold_kind
    if embed_model is not None:
        sets.append("embed_model = :m")
        params["m"] = embed_model
    if dim is not None:
        sets.append("dim = :d")
        params["d"] = dim
    if sets:
        await conn.execute(
            text(f"UPDATE rag_collections SET {', '.join(sets)} WHERE id = :c"), params
        )


async def version(conn: AsyncConnection, cid: int) -> int:
    v = (
        await conn.execute(text("SELECT version FROM rag_collections WHERE id = :c"), {"c": cid})
    ).scalar()
    return int(v or 0)


async def bump(conn: AsyncConnection, cid: int, now: float) -> None:
    """Every write transaction bumps the version (the dense index reloads on change);
    :class:`UnknownCollection` if the collection is gone (the write rolls back)."""
    result = await conn.execute(
        text("UPDATE rag_collections SET version = version + 1, updated_at = :t WHERE id = :c"),
        {"t": now, "c": cid},
    )
    if result.rowcount == 0:
        raise UnknownCollection(GONE)


async def require(conn: AsyncConnection, cid: int) -> None:
    """:class:`UnknownCollection` unless the collection exists (a writer checks it once it
    holds its locks: a drop that committed meanwhile is then visible)."""
    found = (await conn.execute(text("SELECT 1 FROM rag_collections WHERE id = :c"),
                                {"c": cid})).first()
    if found is None:
        raise UnknownCollection(GONE)


async def delete(conn: AsyncConnection, cid: int) -> None:
    await conn.execute(text("DELETE FROM rag_collections WHERE id = :c"), {"c": cid})
