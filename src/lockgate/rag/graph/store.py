"""The knowledge graph's tables (kg_entities, kg_mentions, kg_relations), written at ingest and
read through the same ACL as passages.

Every read joins ``rag_documents d`` on the row's ``doc_pk`` and applies
:func:`~lockgate.rag.access.readable_where` (the caller's principals, metadata filters and
excluded documents) in SQL, so an entity is only linked when the caller may read a passage
that mentions it, and a relation is only returned when the caller may read the passage it
was extracted from. A fact shows the names as its own passage writes them (an entity's
stored name comes from whichever passage introduced it first, possibly one the caller may
not read). Rows of a replaced or deleted document go with it (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.rag.access import Filters, readable_where
from lockgate.rag.graph.extract import Extraction, normalize
from lockgate.store.engine import writer_engine
from lockgate.store.tables import kg_entities, kg_mentions, kg_relations

__all__ = ["FactRow", "GraphStore", "LinkedEntity"]


@dataclass(frozen=True, slots=True)
class LinkedEntity:
    id: int
    name: str
    norm: str
    mentions: int
    """Passages of the collection that mention the entity (its document frequency)."""


@dataclass(frozen=True, slots=True)
class FactRow:
    id: int
    subject_id: int
    subject: str
    predicate: str
    object_id: int
    object: str
    chunk_pk: int
    chunk_id: str
    doc_id: str
    evidence: str


class GraphStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def _insert(self, table: sa.Table) -> Any:
        return (sqlite.insert(table) if self._sqlite else postgresql.insert(table))

    async def write_document(self, cid: int, doc_pk: int,
                             extracted: Sequence[tuple[int, Extraction]]) -> tuple[int, int]:
        """Store the extractions of a document's chunks ((chunk_pk, extraction) pairs);
        returns (mentions, relations) written."""
        names: dict[str, tuple[str, str]] = {}
        for _, ex in extracted:
            for e in ex.entities:
                key = normalize(e.name)
                if key:
                    names.setdefault(key, (e.name, e.type))
            for r in ex.relations:
                for n in (r.subject, r.object):
                    key = normalize(n)
                    if key:
                        names.setdefault(key, (n, "entity"))
        if not names:
            return 0, 0
        async with writer_engine(self.engine).begin() as conn:
            ids = await self._entity_ids(conn, cid, names)
            mentions = {(ids[normalize(e.name)], chunk_pk) for chunk_pk, ex in extracted
                        for e in ex.entities if normalize(e.name) in ids}
            rels = []
            for chunk_pk, ex in extracted:
                for r in ex.relations:
                    s, o = normalize(r.subject), normalize(r.object)
                    if s in ids and o in ids:
                        rels.append({"collection_id": cid, "subject_id": ids[s],
                                     "predicate": r.predicate[:80], "object_id": ids[o],
                                     "subject_name": r.subject[:200],
                                     "object_name": r.object[:200],
                                     "chunk_pk": chunk_pk, "doc_pk": doc_pk,
                                     "evidence": r.evidence[:1000]})
                        mentions.add((ids[s], chunk_pk))
                        mentions.add((ids[o], chunk_pk))
            if mentions:
                await conn.execute(
                    self._insert(kg_mentions).on_conflict_do_nothing(),
                    [{"entity_id": e, "chunk_pk": c, "doc_pk": doc_pk, "collection_id": cid}
                     for e, c in sorted(mentions)])
            if rels:
                await conn.execute(sa.insert(kg_relations), rels)
        return len(mentions), len(rels)

    async def _entity_ids(self, conn: AsyncConnection, cid: int,
                          names: dict[str, tuple[str, str]]) -> dict[str, int]:
        keys = sorted(names)
        await conn.execute(
            self._insert(kg_entities).on_conflict_do_nothing(),
            [{"collection_id": cid, "norm": k, "name": names[k][0][:200],
              "type": names[k][1][:40]} for k in keys])
        out: dict[str, int] = {}
        for i in range(0, len(keys), 500):
            rows = await conn.execute(
                sa.select(kg_entities.c.norm, kg_entities.c.id).where(
                    kg_entities.c.collection_id == cid, kg_entities.c.norm.in_(keys[i:i + 500])))
            out.update({r.norm: int(r.id) for r in rows})
        return out

    async def documents(self, cid: int) -> list[tuple[int, str]]:
        """(doc_pk, title) of every document of the collection."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.text(
                "SELECT id, title FROM rag_documents WHERE collection_id = :c ORDER BY id"),
                {"c": cid})
            return [(int(r.id), str(r.title)) for r in rows]

    async def chunk_texts(self, doc_pk: int) -> list[tuple[int, str]]:
        """(chunk_pk, text) of a document's chunks, in order."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.text(
                "SELECT id, text FROM rag_chunks WHERE doc_pk = :d ORDER BY ord"), {"d": doc_pk})
            return [(int(r.id), str(r.text)) for r in rows]

    async def clear_document(self, doc_pk: int) -> None:
        async with writer_engine(self.engine).begin() as conn:
            await conn.execute(sa.delete(kg_relations).where(kg_relations.c.doc_pk == doc_pk))
            await conn.execute(sa.delete(kg_mentions).where(kg_mentions.c.doc_pk == doc_pk))

    async def chunk_pks(self, doc_pk: int) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.text(
                "SELECT chunk_id, id FROM rag_chunks WHERE doc_pk = :d"), {"d": doc_pk})
            return {r.chunk_id: int(r.id) for r in rows}

    async def link(self, cid: int, candidates: Sequence[str], *,
                   principals: Sequence[str] | None, filters: Filters | None,
                   exclude_doc_ids: Sequence[str] | None) -> list[LinkedEntity]:
        """Entities named by ``candidates`` (normalised keys) that the caller may see, with
        the number of passages that mention them (over the whole collection: a measure of
        how common the name is, not of what the caller may read)."""
        if not candidates:
            return []
        params: dict[str, Any] = {"cid": cid, "cands": sorted(set(candidates))}
        where, binds = readable_where(self._sqlite, principals, filters, exclude_doc_ids,
                                      params)
        sql = ("SELECT e.id, e.name, e.norm, (SELECT COUNT(*) FROM kg_mentions m2"
               " WHERE m2.entity_id = e.id) AS df"
               " FROM kg_entities e WHERE e.collection_id = :cid"
               " AND e.norm IN :cands AND EXISTS (SELECT 1 FROM kg_mentions m"
               " JOIN rag_documents d ON d.id = m.doc_pk"
               f" WHERE m.entity_id = e.id AND {where})")
        stmt = sa.text(sql).bindparams(bindparam("cands", expanding=True), *binds)
        async with self.engine.connect() as conn:
            return [LinkedEntity(int(r.id), str(r.name), str(r.norm), int(r.df or 0))
                    for r in await conn.execute(stmt, params)]

    async def facts(self, cid: int, entity_ids: Sequence[int], *,
                    principals: Sequence[str] | None, filters: Filters | None,
                    exclude_doc_ids: Sequence[str] | None, limit: int) -> list[FactRow]:
        """Relations touching ``entity_ids`` whose source passage the caller may read."""
        if not entity_ids:
            return []
        params: dict[str, Any] = {"cid": cid, "ids": sorted(set(entity_ids)), "lim": limit}
        where, binds = readable_where(self._sqlite, principals, filters, exclude_doc_ids,
                                      params)
        sql = ("SELECT r.id, r.subject_id, r.subject_name AS subject, r.predicate,"
               " r.object_id, r.object_name AS object, r.chunk_pk, c.chunk_id, d.doc_id,"
               " r.evidence FROM kg_relations r"
               " JOIN rag_documents d ON d.id = r.doc_pk"
               " JOIN rag_chunks c ON c.id = r.chunk_pk"
               " WHERE r.collection_id = :cid AND (r.subject_id IN :ids OR r.object_id IN :ids)"
               f" AND {where} ORDER BY r.id LIMIT :lim")
        stmt = sa.text(sql).bindparams(bindparam("ids", expanding=True), *binds)
        async with self.engine.connect() as conn:
            return [FactRow(int(r.id), int(r.subject_id), r.subject, r.predicate,
                            int(r.object_id), r.object, int(r.chunk_pk), r.chunk_id, r.doc_id,
                            r.evidence) for r in await conn.execute(stmt, params)]

    async def stats(self, cid: int) -> dict[str, int]:
        async with self.engine.connect() as conn:
            out = {}
            for name, table in (("entities", kg_entities), ("relations", kg_relations),
                                ("mentions", kg_mentions)):
                out[name] = int((await conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(
                        table.c.collection_id == cid))).scalar_one())
            return out
