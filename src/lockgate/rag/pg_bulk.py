"""PostgreSQL bulk writes of one ingest batch: ids from the sequences, rows by ``COPY``.

The portable writes (:func:`lockgate.rag.documents.insert_many`,
:func:`lockgate.rag.chunks.insert_many`) insert with ``executemany`` and read the new
ids back with ``IN`` lookups: a few round trips and a statement per row on the
server. On PostgreSQL the batch instead takes its ids from the tables' sequences in
one query per table and writes the documents, their ACL rows and their chunks with
asyncpg's binary ``COPY`` inside the caller's transaction (the postings follow the
same way in :mod:`lockgate.rag.lexical`). Same rows, same transaction, same result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.rag.access import acl_hash
from lockgate.rag.types import Chunk, SourceDocument

__all__ = ["copy_chunks", "copy_documents", "copy_rows"]


async def _next_ids(conn: AsyncConnection, table: str, n: int) -> list[int]:
    """``n`` fresh ids of ``table``'s serial ``id`` column, ascending."""
    rows = await conn.execute(
        text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
        {"t": table, "n": n},
    )
    return sorted(int(r[0]) for r in rows)


async def copy_rows(conn: AsyncConnection, table: str, columns: Sequence[str],
                    records: Sequence[tuple[Any, ...]]) -> None:
    """``COPY`` (binary) ``records`` into ``table`` on the connection's transaction."""
    if not records:
        return
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        table, records=records, columns=list(columns))


async def copy_documents(
    conn: AsyncConnection,
    cid: int,
    docs: Sequence[tuple[SourceDocument, str, int]],
    now: float,
) -> dict[str, int]:
    """(document, content hash, chunk count) rows and their ACL rows; doc_id -> pk."""
    if not docs:
        return {}
    ids = await _next_ids(conn, "rag_documents", len(docs))
    await copy_rows(
        conn, "rag_documents",
        ["id", "collection_id", "doc_id", "title", "source", "content_hash", "attrs_hash",
         "metadata", "indexed_at", "source_mtime", "n_chunks"],
        [
            (pk, cid, doc.doc_id, doc.title, doc.source, chash,
             acl_hash(doc.principals, doc.metadata, doc.title),
             orjson.dumps(doc.metadata).decode(), now,
             None if doc.source_mtime is None else float(doc.source_mtime), n_chunks)
            for pk, (doc, chash, n_chunks) in zip(ids, docs, strict=True)
        ],
    )
    await copy_rows(
        conn, "rag_doc_principals", ["doc_pk", "principal"],
        [(pk, p) for pk, (doc, _, _) in zip(ids, docs, strict=True)
         for p in sorted(set(doc.principals))],
    )
    return {doc.doc_id: pk for pk, (doc, _, _) in zip(ids, docs, strict=True)}


async def copy_chunks(
    conn: AsyncConnection,
    cid: int,
    docs: Sequence[tuple[int, Sequence[Chunk], Sequence[Counter[str]], Sequence[bytes | None]]],
) -> list[list[int]]:
    """The chunks of several documents (doc pk, chunks, terms, vectors); each document's
    chunk pks in the order of its chunks."""
    total = sum(len(chunks) for _, chunks, _, _ in docs)
    if not total:
        return [[] for _ in docs]
    ids = iter(await _next_ids(conn, "rag_chunks", total))
    out: list[list[int]] = []
    records: list[tuple[Any, ...]] = []
    for doc_pk, chunks, terms, vectors in docs:
        pks: list[int] = []
        for ch, tc, vec in zip(chunks, terms, vectors, strict=True):
            pk = next(ids)
            pks.append(pk)
            records.append((pk, doc_pk, cid, ch.chunk_id, ch.ord, ch.heading, ch.text,
                            ch.char_start, ch.char_end, sum(tc.values()), vec))
        out.append(pks)
    await copy_rows(
        conn, "rag_chunks",
        ["id", "doc_pk", "collection_id", "chunk_id", "ord", "heading", "text", "char_start",
         "char_end", "n_terms", "embedding"],
        records,
    )
    return out
