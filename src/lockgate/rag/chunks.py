"""Chunk rows (``rag_chunks``): writes, the embedding blobs, and hits read back for callers.

Functions on the caller's connection; :class:`lockgate.rag.repository.RagStore`
owns the transactions and keeps the lexical index (:mod:`lockgate.rag.lexical`)
in step with these rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from lockgate.rag.types import Chunk, Hit

__all__ = [
    "counts",
    "delete_for_documents",
    "embedded",
    "embedded_after",
    "embedded_count",
    "embeddings",
    "embeddings_of_document",
    "hits",
    "insert",
    "insert_many",
]

_EMBEDDINGS_PER_QUERY = 5000


async def insert(
    conn: AsyncConnection,
    cid: int,
    doc_pk: int,
    chunks: Sequence[Chunk],
    terms: Sequence[Counter[str]],
    vectors: Sequence[bytes | None],
) -> list[int]:
    """Insert a document's chunks; returns their pks, in the order of ``chunks``."""
    if not chunks:
        return []
    rows = [
        {
            "d": doc_pk, "c": cid, "cid": ch.chunk_id, "o": ch.ord, "h": ch.heading,
            "t": ch.text, "s": ch.char_start, "e": ch.char_end,
            "n": sum(tc.values()), "v": vec,
        }
        for ch, tc, vec in zip(chunks, terms, vectors, strict=True)
    ]
    await conn.execute(
        text(
            "INSERT INTO rag_chunks (doc_pk, collection_id, chunk_id, ord, heading, text,"
            " char_start, char_end, n_terms, embedding)"
            " VALUES (:d, :c, :cid, :o, :h, :t, :s, :e, :n, :v)"
        ),
        rows,
    )
    ids = (
        await conn.execute(text("SELECT id, ord FROM rag_chunks WHERE doc_pk = :d"), {"d": doc_pk})
    ).all()
    by_ord = {int(o): int(i) for i, o in ids}
    return [by_ord[ch.ord] for ch in chunks]


async def insert_many(
    conn: AsyncConnection,
    cid: int,
    docs: Sequence[tuple[int, Sequence[Chunk], Sequence[Counter[str]], Sequence[bytes | None]]],
) -> list[list[int]]:
    """Insert the chunks of several documents (doc pk, chunks, terms, vectors) in one
    statement; returns each document's chunk pks in the order of its chunks."""
    rows = [
        {
            "d": doc_pk, "c": cid, "cid": ch.chunk_id, "o": ch.ord, "h": ch.heading,
            "t": ch.text, "s": ch.char_start, "e": ch.char_end,
            "n": sum(tc.values()), "v": vec,
        }
        for doc_pk, chunks, terms, vectors in docs
        for ch, tc, vec in zip(chunks, terms, vectors, strict=True)
    ]
    if not rows:
        return [[] for _ in docs]
    await conn.execute(
        text(
            "INSERT INTO rag_chunks (doc_pk, collection_id, chunk_id, ord, heading, text,"
            " char_start, char_end, n_terms, embedding)"
            " VALUES (:d, :c, :cid, :o, :h, :t, :s, :e, :n, :v)"
        ),
        rows,
    )
    by_key: dict[tuple[int, int], int] = {}
    doc_pks = [d[0] for d in docs]
    for start in range(0, len(doc_pks), 500):
        result = await conn.execute(
            text("SELECT id, doc_pk, ord FROM rag_chunks WHERE doc_pk IN :ds").bindparams(
                bindparam("ds", expanding=True)),
            {"ds": doc_pks[start : start + 500]},
        )
        by_key.update(((int(r[1]), int(r[2])), int(r[0])) for r in result)
    return [[by_key[(doc_pk, ch.ord)] for ch in chunks] for doc_pk, chunks, _, _ in docs]


async def delete_for_documents(conn: AsyncConnection, doc_pks: list[int]) -> None:
    if doc_pks:
        await conn.execute(
            text("DELETE FROM rag_chunks WHERE doc_pk IN :pks").bindparams(
                bindparam("pks", expanding=True)
            ),
            {"pks": doc_pks},
        )


async def embeddings_of_document(conn: AsyncConnection, doc_pk: int) -> dict[str, bytes]:
    """chunk_id -> embedding blob of a stored document (to reuse unchanged chunks' vectors)."""
    rows = (
        await conn.execute(
            text("SELECT chunk_id, embedding FROM rag_chunks WHERE doc_pk = :d"), {"d": doc_pk}
        )
    ).all()
    return {r[0]: bytes(r[1]) for r in rows if r[1] is not None}


async def embedded(conn: AsyncConnection, cid: int) -> list[tuple[int, int]]:
    """(chunk pk, doc pk) of every chunk with an embedding, in pk order."""
    rows = (
        await conn.execute(
            text(
                "SELECT id, doc_pk FROM rag_chunks WHERE collection_id = :c"
                " AND embedding IS NOT NULL ORDER BY id"
            ),
            {"c": cid},
        )
    ).all()
    return [(int(a), int(b)) for a, b in rows]


async def embedded_after(conn: AsyncConnection, cid: int, after: int) -> list[tuple[int, int]]:
    """(chunk pk, doc pk) of the chunks with an embedding and a pk above ``after``, in pk order."""
    rows = (
        await conn.execute(
            text(
                "SELECT id, doc_pk FROM rag_chunks WHERE collection_id = :c AND id > :a"
                " AND embedding IS NOT NULL ORDER BY id"
            ),
            {"c": cid, "a": after},
        )
    ).all()
    return [(int(a), int(b)) for a, b in rows]


async def embedded_count(conn: AsyncConnection, cid: int) -> int:
    """How many chunks of the collection have an embedding."""
    n = (
        await conn.execute(
            text("SELECT COUNT(*) FROM rag_chunks WHERE collection_id = :c"
                 " AND embedding IS NOT NULL"),
            {"c": cid},
        )
    ).scalar()
    return int(n or 0)


async def embeddings(conn: AsyncConnection, pks: Sequence[int]) -> dict[int, bytes]:
    """chunk pk -> embedding blob, for those of ``pks`` that exist and have one."""
    out: dict[int, bytes] = {}
    for start in range(0, len(pks), _EMBEDDINGS_PER_QUERY):
        part = list(pks[start : start + _EMBEDDINGS_PER_QUERY])
        rows = (
            await conn.execute(
                text("SELECT id, embedding FROM rag_chunks WHERE id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": part},
            )
        ).all()
        out.update({int(r[0]): bytes(r[1]) for r in rows if r[1] is not None})
    return out


async def hits(
    conn: AsyncConnection,
    cid: int,
    chunk_pks: Sequence[int],
    *,
    where: str,
    binds: Sequence[BindParameter[Any]],
    params: dict[str, Any],
) -> dict[int, Hit]:
    """The chunks among ``chunk_pks`` whose document ``d`` satisfies ``where``.

    ``where``/``binds``/``params`` come from :func:`lockgate.rag.access.readable_where`.
    """
    if not chunk_pks:
        return {}
    params = {**params, "c": cid, "pks": list(chunk_pks)}
    sql = (
        "SELECT c.id, c.chunk_id, d.doc_id, d.title, c.text, c.heading, c.char_start,"
        " c.char_end, d.metadata FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_pk"
        f" WHERE c.collection_id = :c AND c.id IN :pks AND {where}"
    )
    rows = (
        await conn.execute(text(sql).bindparams(bindparam("pks", expanding=True), *binds), params)
    ).all()
    return {
        int(r[0]): Hit(
            chunk_pk=int(r[0]), chunk_id=r[1], doc_id=r[2], title=r[3], text=r[4],
            heading=r[5], char_start=int(r[6]), char_end=int(r[7]),
            metadata=orjson.loads(r[8]) if r[8] else {},
        )
        for r in rows
    }


async def counts(conn: AsyncConnection, cid: int) -> tuple[int, int]:
    """(chunks, chunks with an embedding) of the collection."""
    row = (
        await conn.execute(
            text("SELECT COUNT(*), COUNT(embedding) FROM rag_chunks WHERE collection_id = :c"),
            {"c": cid},
        )
    ).one()
    return int(row[0]), int(row[1])
