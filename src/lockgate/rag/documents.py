"""Document rows (``rag_documents``) and their ACL rows (``rag_doc_principals``).

Functions on the caller's connection; :class:`lockgate.rag.repository.RagStore`
owns the transactions (and removes a document's chunks before :func:`delete`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from lockgate.rag.access import acl_hash
from lockgate.rag.types import SourceDocument

__all__ = [
    "DocumentRow",
    "all_pks",
    "batches",
    "delete",
    "freshness",
    "insert",
    "insert_many",
    "lock_collection",
    "lock_ids",
    "pk_map",
    "pk_of",
    "pks_of",
    "principal_pks",
    "readable_pks",
    "rows",
    "set_principals",
    "touch",
    "update_attributes",
]


@dataclass(frozen=True, slots=True)
class DocumentRow:
    pk: int
    doc_id: str
    content_hash: str
    attrs_hash: str
    indexed_at: float


def batches(items: Sequence[Any], size: int = 500) -> list[list[Any]]:
    """Split IN-lists so no statement exceeds the driver's bound-parameter limit."""
    seq = list(items)
    return [seq[i : i + size] for i in range(0, len(seq), size)]


async def rows(conn: AsyncConnection, cid: int) -> dict[str, DocumentRow]:
    """doc_id -> row, for every document of the collection."""
    result = await conn.execute(
        text(
            "SELECT id, doc_id, content_hash, attrs_hash, indexed_at"
            " FROM rag_documents WHERE collection_id = :c"
        ),
        {"c": cid},
    )
    return {r[1]: DocumentRow(int(r[0]), r[1], r[2], r[3], float(r[4])) for r in result.all()}


LOCK_IDS_MAX = 256
"""Above this many ids one writer takes its collection's lock exclusively instead of a
lock per id (advisory locks live in PostgreSQL's shared lock table, sized by
``max_locks_per_transaction``: a delete of 200,000 ids ran out of it)."""

_COLLECTION_LOCK = "hashtext('lockgate_rag_coll'), hashtext(CAST(CAST(:c AS bigint) AS text))"

_LOCK_SHARED_SQL = f"SELECT pg_advisory_xact_lock_shared({_COLLECTION_LOCK})"

_LOCK_IDS_SQL = (
    "SELECT pg_advisory_xact_lock(hashtext('lockgate_rag_doc'), h) FROM"
    " (SELECT DISTINCT hashtext(CAST(CAST(:c AS bigint) AS text) || '/' || d) AS h"
    " FROM unnest(CAST(:ids AS text[])) AS d ORDER BY h) AS k"
)

_LOCK_ALL_SQL = f"SELECT pg_advisory_xact_lock({_COLLECTION_LOCK})"


async def lock_collection(conn: AsyncConnection, cid: int) -> None:
    """PostgreSQL: the collection's lock, exclusively (what a writer of more than
    :data:`LOCK_IDS_MAX` ids and a drop hold): waits for every writer holding it shared."""
    await conn.execute(text(_LOCK_ALL_SQL), {"c": cid})


async def lock_ids(conn: AsyncConnection, cid: int, doc_ids: Sequence[str]) -> None:
    """PostgreSQL: hold these document ids until the transaction ends, so that two
    writers replacing or deleting the same document run one after the other: each reads
    the rows the other committed (READ COMMITTED) instead of both inserting a new row
    for the id (the second failed on the unique key). Other ids still write in parallel.

    Up to :data:`LOCK_IDS_MAX` ids: the collection's lock shared, then one lock per id,
    in one order (no deadlock); more: the collection's lock exclusively. SQLite's writer
    transactions are serial already."""
    ids = sorted(set(doc_ids))
    if not ids:
        return
    if len(ids) > LOCK_IDS_MAX:
        await lock_collection(conn, cid)
    else:
        await conn.execute(text(_LOCK_SHARED_SQL), {"c": cid})
        await conn.execute(text(_LOCK_IDS_SQL), {"c": cid, "ids": ids})


async def pk_of(conn: AsyncConnection, cid: int, doc_id: str) -> int | None:
    pk = (
        await conn.execute(
            text("SELECT id FROM rag_documents WHERE collection_id = :c AND doc_id = :d"),
            {"c": cid, "d": doc_id},
        )
    ).scalar()
    return None if pk is None else int(pk)


async def pks_of(conn: AsyncConnection, cid: int, doc_ids: Sequence[str]) -> list[int]:
    pks: list[int] = []
    for part in batches(doc_ids):
        result = await conn.execute(
            text(
                "SELECT id FROM rag_documents WHERE collection_id = :c AND doc_id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"c": cid, "ids": part},
        )
        pks.extend(int(r[0]) for r in result)
    return pks


async def pk_map(conn: AsyncConnection, cid: int, doc_ids: Sequence[str]) -> dict[str, int]:
    """doc_id -> pk for those of ``doc_ids`` stored in the collection."""
    out: dict[str, int] = {}
    if conn.dialect.name == "postgresql" and doc_ids:
        # one array parameter; a keyed probe per id whatever the table statistics say
        # (during a bulk ingest they are stale: `collection_id = :c AND doc_id IN (...)`
        # was planned as a scan of the whole collection, once per ingest batch)
        result = await conn.execute(
            text("SELECT u.doc_id, (SELECT d.id FROM rag_documents d WHERE"
                 " d.collection_id = :c AND d.doc_id = u.doc_id)"
                 " FROM unnest(CAST(:ids AS text[])) AS u(doc_id)"),
            {"c": cid, "ids": list(doc_ids)},
        )
        return {str(r[0]): int(r[1]) for r in result if r[1] is not None}
    for part in batches(doc_ids):
        result = await conn.execute(
            text(
                "SELECT doc_id, id FROM rag_documents WHERE collection_id = :c"
                " AND doc_id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"c": cid, "ids": part},
        )
        out.update((str(r[0]), int(r[1])) for r in result)
    return out


async def insert_many(
    conn: AsyncConnection,
    cid: int,
    docs: Sequence[tuple[SourceDocument, str, int]],
    now: float,
) -> dict[str, int]:
    """Insert (document, content hash, chunk count) rows and their ACLs; doc_id -> pk."""
    if not docs:
        return {}
    await conn.execute(
        text(
            "INSERT INTO rag_documents (collection_id, doc_id, title, source, content_hash,"
            " attrs_hash, metadata, indexed_at, source_mtime, n_chunks) VALUES"
            " (:c, :d, :title, :src, :h, :a, :m, :t, :mt, :n)"
        ),
        [
            {
                "c": cid, "d": doc.doc_id, "title": doc.title, "src": doc.source,
                "h": chash, "a": acl_hash(doc.principals, doc.metadata, doc.title),
                "m": orjson.dumps(doc.metadata).decode(), "t": now,
                "mt": doc.source_mtime, "n": n_chunks,
            }
            for doc, chash, n_chunks in docs
        ],
    )
    pks = await pk_map(conn, cid, [d.doc_id for d, _, _ in docs])
    await conn.execute(
        text("INSERT INTO rag_doc_principals (doc_pk, principal) VALUES (:d, :p)"),
        [{"d": pks[doc.doc_id], "p": p} for doc, _, _ in docs for p in sorted(set(doc.principals))],
    )
    return pks


async def all_pks(conn: AsyncConnection, cid: int) -> list[int]:
    result = await conn.execute(
        text("SELECT id FROM rag_documents WHERE collection_id = :c"), {"c": cid}
    )
    return [int(r[0]) for r in result.all()]


async def insert(
    conn: AsyncConnection,
    cid: int,
    doc: SourceDocument,
    content_hash: str,
    n_chunks: int,
    now: float,
) -> int:
    """Insert the document row (not its ACL or chunks); returns its pk."""
    await conn.execute(
        text(
            "INSERT INTO rag_documents (collection_id, doc_id, title, source, content_hash,"
            " attrs_hash, metadata, indexed_at, source_mtime, n_chunks) VALUES"
            " (:c, :d, :title, :src, :h, :a, :m, :t, :mt, :n)"
        ),
        {
            "c": cid, "d": doc.doc_id, "title": doc.title, "src": doc.source,
            "h": content_hash, "a": acl_hash(doc.principals, doc.metadata, doc.title),
            "m": orjson.dumps(doc.metadata).decode(), "t": now,
            "mt": doc.source_mtime, "n": n_chunks,
        },
    )
    pk = await pk_of(conn, cid, doc.doc_id)
    assert pk is not None
    return pk


async def set_principals(
    conn: AsyncConnection, pk: int, principals: Sequence[str], *, replace: bool = False
) -> None:
    """Write the document's ACL (``replace``: drop its current one first)."""
    if replace:
        await conn.execute(text("DELETE FROM rag_doc_principals WHERE doc_pk = :d"), {"d": pk})
    await conn.execute(
        text("INSERT INTO rag_doc_principals (doc_pk, principal) VALUES (:d, :p)"),
        [{"d": pk, "p": p} for p in sorted(set(principals))],
    )


async def update_attributes(
    conn: AsyncConnection, pk: int, doc: SourceDocument, now: float
) -> None:
    """Same content, new title / metadata / source (the ACL: :func:`set_principals`)."""
    await conn.execute(
        text(
            "UPDATE rag_documents SET title = :title, metadata = :m, attrs_hash = :a,"
            " indexed_at = :t, source = :s, source_mtime = :mt WHERE id = :d"
        ),
        {
            "title": doc.title, "m": orjson.dumps(doc.metadata).decode(),
            "a": acl_hash(doc.principals, doc.metadata, doc.title),
            "t": now, "s": doc.source, "mt": doc.source_mtime, "d": pk,
        },
    )


async def touch(conn: AsyncConnection, cid: int, doc_ids: Sequence[str], now: float) -> None:
    """Record that unchanged documents were checked ``now`` (freshness)."""
    for part in batches(doc_ids):
        await conn.execute(
            text(
                "UPDATE rag_documents SET indexed_at = :t"
                " WHERE collection_id = :c AND doc_id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"t": now, "c": cid, "ids": part},
        )


async def delete(conn: AsyncConnection, pks: list[int]) -> None:
    """Delete documents and their ACL rows (their chunks go first: :mod:`lockgate.rag.chunks`)."""
    if not pks:
        return
    for table, col in (("rag_doc_principals", "doc_pk"), ("rag_documents", "id")):
        await conn.execute(
            text(f"DELETE FROM {table} WHERE {col} IN :pks").bindparams(
                bindparam("pks", expanding=True)
            ),
            {"pks": pks},
        )


async def readable_pks(
    conn: AsyncConnection,
    cid: int,
    *,
    where: str,
    binds: Sequence[BindParameter[Any]],
    params: dict[str, Any],
) -> list[int]:
    """Documents ``d`` of the collection satisfying ``where`` (:func:`access.readable_where`)."""
    sql = f"SELECT d.id FROM rag_documents d WHERE d.collection_id = :c AND {where}"
    result = await conn.execute(text(sql).bindparams(*binds), {**params, "c": cid})
    return [int(r[0]) for r in result.all()]


async def principal_pks(conn: AsyncConnection, cid: int, principal: str) -> list[int]:
    """Documents of the collection whose ACL names ``principal`` (keyed lookup)."""
    result = await conn.execute(
        text(
            "SELECT ap.doc_pk FROM rag_doc_principals ap JOIN rag_documents d"
            " ON d.id = ap.doc_pk WHERE ap.principal = :p AND d.collection_id = :c"
        ),
        {"p": principal, "c": cid},
    )
    return [int(r[0]) for r in result.all()]


async def freshness(conn: AsyncConnection, cid: int) -> tuple[int, float | None, float | None]:
    """(documents, oldest indexed_at, newest indexed_at) of the collection."""
    row = (
        await conn.execute(
            text(
                "SELECT COUNT(*), MIN(indexed_at), MAX(indexed_at) FROM rag_documents"
                " WHERE collection_id = :c"
            ),
            {"c": cid},
        )
    ).one()
    return int(row[0]), row[1], row[2]
