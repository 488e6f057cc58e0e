"""RagStore: the RAG feature's storage on the project's AsyncEngine, SQLite or PostgreSQL.

The tables are the store's (``lockgate.store.tables``, created and upgraded by the
Alembic revisions that :meth:`lockgate.store.Store.open` runs): RagStore assumes a
migrated database. A caller holding a bare engine uses :meth:`RagStore.migrated`.

* ``rag_collections``    name, embedding model, refusal threshold, ``version``
  (bumped in every write transaction; the in-memory dense index reloads on change);
* ``rag_documents``      one row per document: external id, title, content hash,
  ACL hash, metadata (JSON text), ``indexed_at``;
* ``rag_doc_principals`` (principal, doc) pairs: the ACL. Every retriever joins it
  in SQL before the top-k is taken (:mod:`lockgate.rag.access`);
* ``rag_chunks``         chunk text, heading path, character span, number of index
  terms, and the embedding as a little-endian float32 blob.

The lexical index is :mod:`lockgate.rag.lexical` (FTS5 on SQLite, postings on
PostgreSQL, one BM25 formula: :mod:`lockgate.rag.bm25`). pgvector is not in this
machine's Debian release, so dense vectors live in a blob column on both engines
and are searched by :mod:`lockgate.rag.dense`.

This class owns the connections and transactions; the SQL is in the modules
``catalog`` (collections), ``documents`` (documents and ACL rows), ``chunks``
and ``lexical``. Which backend is used follows the engine's URL alone
(``database_url`` in the config): configuration, not code.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.rag import catalog, chunks, documents, pg_bulk
from lockgate.rag.access import Filters, readable_where
from lockgate.rag.catalog import CollectionInfo
from lockgate.rag.documents import DocumentRow
from lockgate.rag.lexical import LexicalIndex
from lockgate.rag.pg_term_stats import TermDelta
from lockgate.rag.types import Chunk, Hit, SourceDocument
from lockgate.store.engine import writer_engine
from lockgate.store.migrate import migrate_engine

__all__ = ["RagStore"]


class RagStore:
    """All SQL of the RAG feature. One instance per engine; safe to share between tasks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"RAG storage supports sqlite and postgresql, not {self.dialect}")
        self.lexical = LexicalIndex(sqlite=self.is_sqlite)

    @classmethod
    async def migrated(cls, engine: AsyncEngine) -> RagStore:
        """A RagStore on an engine that did not come from ``Store.open``: migrate it first."""
        await migrate_engine(engine)
        return cls(engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _writer(self) -> AsyncEngine:
        return writer_engine(self.engine) if self.is_sqlite else self.engine

    # ------------------------------------------------------------ collections

    async def get_collection(self, name: str) -> CollectionInfo | None:
        async with self.engine.connect() as conn:
            return await catalog.get(conn, name)

    async def create_collection(self, name: str, embed_model: str | None, *,
                                owner_team: str | None = None) -> CollectionInfo:
        """The collection (created when absent; ``owner_team`` only applies to a new one)."""
        async with self._writer().begin() as conn:
            if await catalog.collection_id(conn, name) is None:
                cid = await catalog.insert(conn, name, embed_model, time.time(), owner_team)
                await self.lexical.create(conn, cid)
        info = await self.get_collection(name)
        assert info is not None
        return info

    async def list_collections(self) -> list[CollectionInfo]:
        async with self.engine.connect() as conn:
            return await catalog.list_all(conn)

    async def set_collection(
        self,
        cid: int,
        *,
        threshold: float | None = None,
        threshold_kind: str | None = None,
        clear_threshold: bool = False,
        embed_model: str | None = None,
        dim: int | None = None,
    ) -> None:
        if threshold is None and not clear_threshold and embed_model is None and dim is None:
            return
        async with self._writer().begin() as conn:
            await catalog.update(
                conn, cid, threshold=threshold, threshold_kind=threshold_kind,
                clear_threshold=clear_threshold, embed_model=embed_model, dim=dim,
            )

    async def version(self, cid: int) -> int:
        async with self.engine.connect() as conn:
            return await catalog.version(conn, cid)

    async def drop_collection(self, cid: int) -> None:
        async with self._writer().begin() as conn:
            if not self.is_sqlite:  # wait for the writers in flight; later ones find it gone
                await documents.lock_collection(conn, cid)
            unused = TermDelta()  # lexical.drop deletes the statistics
            for part in documents.batches(await documents.all_pks(conn, cid)):
                await self._delete_documents(conn, cid, part, unused)
            await self.lexical.drop(conn, cid)
            await catalog.delete(conn, cid)

    # ------------------------------------------------------------ documents

    async def documents(self, cid: int) -> dict[str, DocumentRow]:
        async with self.engine.connect() as conn:
            return await documents.rows(conn, cid)

    async def chunk_embeddings(self, doc_pk: int) -> dict[str, bytes]:
        """chunk_id -> embedding blob of a stored document (to reuse unchanged chunks' vectors)."""
        async with self.engine.connect() as conn:
            return await chunks.embeddings_of_document(conn, doc_pk)

    async def replace_document(
        self,
        cid: int,
        doc: SourceDocument,
        content_hash: str,
        chunk_list: Sequence[Chunk],
        terms: Sequence[Counter[str]],
        vectors: Sequence[bytes | None],
    ) -> int:
        """Insert or atomically replace a document with its chunks, ACL and index terms."""
        return (await self.replace_documents(
            cid, [(doc, content_hash, chunk_list, terms, vectors)]))[0]

    async def replace_documents(
        self,
        cid: int,
        items: Sequence[tuple[SourceDocument, str, Sequence[Chunk], Sequence[Counter[str]],
                              Sequence[bytes | None]]],
    ) -> list[int]:
        """:meth:`replace_document` for many documents in one transaction (one commit and
        one version bump per batch: ingest's write cost is per batch, not per document)."""
        now = time.time()
        out: list[int] = []
        if not items:
            return out
        if len({doc.doc_id for doc, *_ in items}) != len(items):
            raise ValueError("replace_documents: a document id appears twice in one batch")
        async with self._writer().begin() as conn:
            if not self.is_sqlite:
                await documents.lock_ids(conn, cid, [doc.doc_id for doc, *_ in items])
            await catalog.require(conn, cid)
            delta = TermDelta()
            old = await documents.pk_map(conn, cid, [doc.doc_id for doc, *_ in items])
            for part in documents.batches(list(old.values())):
                await self._delete_documents(conn, cid, part, delta)
            # PostgreSQL: ids from the sequences and rows by COPY (lockgate.rag.pg_bulk)
            docs_in = pg_bulk.copy_documents if not self.is_sqlite else documents.insert_many
            chunks_in = pg_bulk.copy_chunks if not self.is_sqlite else chunks.insert_many
            pks = await docs_in(
                conn, cid, [(doc, chash, len(cl)) for doc, chash, cl, _, _ in items], now)
            out = [pks[doc.doc_id] for doc, *_ in items]
            chunk_pks = await chunks_in(
                conn, cid, [(pk, cl, terms, vecs)
                            for pk, (_, _, cl, terms, vecs) in zip(out, items, strict=True)])
            entries = [(cpk, dpk, tc) for dpk, pks_of_doc, (_, _, _, terms, _) in
                       zip(out, chunk_pks, items, strict=True)
                       for cpk, tc in zip(pks_of_doc, terms, strict=True)]
            await self.lexical.add(conn, cid, entries, delta)
            await catalog.bump(conn, cid, time.time())
            await self.lexical.write_term_stats(conn, cid, delta)
        return out

    async def update_attributes(self, cid: int, doc: SourceDocument) -> None:
        """Same content, new ACL / title / metadata: swap them in one transaction."""
        async with self._writer().begin() as conn:
            if not self.is_sqlite:
                await documents.lock_ids(conn, cid, [doc.doc_id])
            await catalog.require(conn, cid)
            pk = await documents.pk_of(conn, cid, doc.doc_id)
            if pk is None:
                return
            await documents.set_principals(conn, pk, doc.principals, replace=True)
            await documents.update_attributes(conn, pk, doc, time.time())
            await catalog.bump(conn, cid, time.time())

    async def touch(self, cid: int, doc_ids: Sequence[str]) -> None:
        """Record that unchanged documents were checked now (freshness)."""
        if not doc_ids:
            return
        async with self._writer().begin() as conn:
            await documents.touch(conn, cid, doc_ids, time.time())

    async def delete_documents(self, cid: int, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        async with self._writer().begin() as conn:
            if not self.is_sqlite:
                await documents.lock_ids(conn, cid, doc_ids)
            await catalog.require(conn, cid)
            pks = await documents.pks_of(conn, cid, doc_ids)
            delta = TermDelta()
            for part in documents.batches(pks):
                await self._delete_documents(conn, cid, part, delta)
            if pks:
                await catalog.bump(conn, cid, time.time())
                await self.lexical.write_term_stats(conn, cid, delta)
        return len(pks)

    async def rebuild_term_stats(self, cid: int) -> int | None:
        """PostgreSQL: the collection's BM25 term statistics counted again, bounds exact
        (:meth:`LexicalIndex.rebuild_term_stats`); a new version, so every instance reads
        them. None on SQLite."""
        if self.is_sqlite:
            return None
        async with self._writer().begin() as conn:
            await catalog.bump(conn, cid, time.time())
            return await self.lexical.rebuild_term_stats(conn, cid)

    async def _delete_documents(self, conn: AsyncConnection, cid: int, pks: list[int],
                                delta: TermDelta) -> None:
        """Index entries, chunks, ACL rows, then the documents themselves (the index's term
        statistics change by ``delta``, written after the version bump)."""
        await self.lexical.remove_documents(conn, cid, pks, delta)
        await chunks.delete_for_documents(conn, pks)
        await documents.delete(conn, pks)

    # ------------------------------------------------------------ retrieval

    async def lexical_search(
        self,
        cid: int,
        terms: Sequence[str],
        *,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
        k: int,
        version: int,
    ) -> list[tuple[int, float]]:
        """Top-k (chunk pk, BM25 score, higher is better) among chunks the caller may read."""
        if not terms:
            return []
        params: dict[str, Any] = {}
        where, binds = readable_where(
            self.is_sqlite, principals, filters, exclude_doc_ids, params
        )
        async with self.engine.connect() as conn:
            return await self.lexical.search(
                conn, cid, terms, where=where, binds=binds, params=params, k=k, version=version
            )

    async def bm25_ceiling(self, cid: int, terms: Sequence[str], version: int) -> float:
        """The query's maximum possible BM25 score in this collection (for confidence)."""
        async with self.engine.connect() as conn:
            return await self.lexical.max_score(conn, cid, terms, version)

    async def chunk_rows(self, cid: int) -> list[tuple[int, int]]:
        """(chunk pk, doc pk) of every chunk with an embedding, in pk order."""
        async with self.engine.connect() as conn:
            return await chunks.embedded(conn, cid)

    async def chunk_rows_after(self, cid: int, after: int) -> list[tuple[int, int]]:
        """(chunk pk, doc pk) of embedded chunks with a pk above ``after``, in pk order."""
        async with self.engine.connect() as conn:
            return await chunks.embedded_after(conn, cid, after)

    async def embedded_count(self, cid: int) -> int:
        async with self.engine.connect() as conn:
            return await chunks.embedded_count(conn, cid)

    async def principal_doc_pks(self, cid: int, principal: str) -> list[int]:
        """Documents whose ACL names ``principal`` (the dense index's per-principal bitmaps)."""
        async with self.engine.connect() as conn:
            return await documents.principal_pks(conn, cid, principal)

    async def embeddings_for(self, pks: Sequence[int]) -> dict[int, bytes]:
        async with self.engine.connect() as conn:
            return await chunks.embeddings(conn, pks)

    async def allowed_doc_pks(
        self,
        cid: int,
        *,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
    ) -> list[int]:
        """Documents of the collection the caller may read (the dense index's mask)."""
        params: dict[str, Any] = {}
        where, binds = readable_where(
            self.is_sqlite, principals, filters, exclude_doc_ids, params
        )
        async with self.engine.connect() as conn:
            return await documents.readable_pks(conn, cid, where=where, binds=binds, params=params)

    async def fetch_hits(
        self,
        cid: int,
        chunk_pks: Sequence[int],
        *,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None = None,
    ) -> dict[int, Hit]:
        """The chunks among ``chunk_pks`` that still exist and that the caller may read now."""
        if not chunk_pks:
            return {}
        params: dict[str, Any] = {}
        where, binds = readable_where(
            self.is_sqlite, principals, filters, exclude_doc_ids, params
        )
        async with self.engine.connect() as conn:
            return await chunks.hits(conn, cid, chunk_pks, where=where, binds=binds, params=params)

    # ------------------------------------------------------------ status

    async def status(self, cid: int) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            n_docs, oldest, newest = await documents.freshness(conn, cid)
            n_chunks, n_embedded = await chunks.counts(conn, cid)
        return {
            "documents": n_docs,
            "chunks": n_chunks,
            "embedded_chunks": n_embedded,
            "oldest_indexed_at": oldest,
            "newest_indexed_at": newest,
            "max_staleness_seconds": (
                None if oldest is None else round(time.time() - float(oldest), 3)
            ),
        }
