"""RAG storage on the project's SQLAlchemy AsyncEngine: SQLite (embedded) or PostgreSQL (scale-out).

Tables (created by :meth:`RagStore.ensure_schema`, idempotent, under a lock):

* ``rag_collections``   name, embedding model, refusal threshold, ``version``
  (bumped in every write transaction; the in-memory dense index reloads on change);
* ``rag_documents``     one row per document: external id, title, content hash,
  ACL hash, metadata (JSON text), ``indexed_at``;
* ``rag_doc_principals`` (principal, doc) pairs: the ACL. Every retriever joins it
  in SQL before the top-k is taken;
* ``rag_chunks``        chunk text, heading path, character span, number of index
  terms, and the embedding as a little-endian float32 blob.

Lexical index: on SQLite one FTS5 table per collection (``rag_fts_<id>``) holding
the analysed terms (:mod:`lockgate.rag.analysis`), scored with FTS5's ``bm25()``
(k1=1.2, b=0.75). On PostgreSQL a postings table ``rag_postings`` (collection,
term, chunk, tf) scored with the same BM25 formula in SQL, so both backends rank
alike. (pgvector is not in this machine's Debian release, so dense vectors live
in a blob column on both engines and are searched by :mod:`lockgate.rag.dense`.)

Which backend is used follows the engine's URL alone (``database_url`` in the
config): configuration, not code.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.rag.types import Chunk, Hit, SourceDocument

__all__ = [
    "CollectionInfo",
    "DocumentRow",
    "Filters",
    "RagStore",
    "acl_hash",
]

Filters = dict[str, Any]
"""Caller filters on document metadata: ``{"key": value | [values]}``, plus ``doc_id``.

ANDed with the ACL, never instead of it. Values compare as text."""

K1 = 1.2
B = 0.75
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def acl_hash(principals: Sequence[str], metadata: dict[str, Any], title: str) -> str:
    blob = orjson.dumps([sorted(set(principals)), metadata, title], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:32]


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


@dataclass(frozen=True, slots=True)
class DocumentRow:
    pk: int
    doc_id: str
    content_hash: str
    attrs_hash: str
    indexed_at: float


_SQLITE_DDL = [
    """CREATE TABLE IF NOT EXISTS rag_collections (
        id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, embed_model TEXT,
        dim INTEGER, threshold REAL, threshold_kind TEXT, version INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rag_documents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES rag_collections(id) ON DELETE CASCADE,
        doc_id TEXT NOT NULL, title TEXT NOT NULL, source TEXT NOT NULL,
        content_hash TEXT NOT NULL, attrs_hash TEXT NOT NULL, metadata TEXT NOT NULL,
        indexed_at REAL NOT NULL, source_mtime REAL, n_chunks INTEGER NOT NULL,
        UNIQUE (collection_id, doc_id))""",
    """CREATE TABLE IF NOT EXISTS rag_doc_principals (
        doc_pk INTEGER NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE,
        principal TEXT NOT NULL, PRIMARY KEY (principal, doc_pk))""",
    "CREATE INDEX IF NOT EXISTS ix_rag_doc_principals_doc ON rag_doc_principals (doc_pk)",
    """CREATE TABLE IF NOT EXISTS rag_chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_pk INTEGER NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE,
        collection_id INTEGER NOT NULL, chunk_id TEXT NOT NULL, ord INTEGER NOT NULL,
        heading TEXT NOT NULL, text TEXT NOT NULL, char_start INTEGER NOT NULL,
        char_end INTEGER NOT NULL, n_terms INTEGER NOT NULL, embedding BLOB)""",
    "CREATE INDEX IF NOT EXISTS ix_rag_chunks_doc ON rag_chunks (doc_pk)",
    "CREATE INDEX IF NOT EXISTS ix_rag_chunks_coll ON rag_chunks (collection_id, id)",
]

_PG_DDL = [
    """CREATE TABLE IF NOT EXISTS rag_collections (
        id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, embed_model TEXT,
        dim INTEGER, threshold DOUBLE PRECISION, threshold_kind TEXT,
        version BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rag_documents (
        id BIGSERIAL PRIMARY KEY,
        collection_id BIGINT NOT NULL REFERENCES rag_collections(id) ON DELETE CASCADE,
        doc_id TEXT NOT NULL, title TEXT NOT NULL, source TEXT NOT NULL,
        content_hash TEXT NOT NULL, attrs_hash TEXT NOT NULL, metadata TEXT NOT NULL,
        indexed_at DOUBLE PRECISION NOT NULL, source_mtime DOUBLE PRECISION,
        n_chunks INTEGER NOT NULL, UNIQUE (collection_id, doc_id))""",
    """CREATE TABLE IF NOT EXISTS rag_doc_principals (
        doc_pk BIGINT NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE,
        principal TEXT NOT NULL, PRIMARY KEY (principal, doc_pk))""",
    "CREATE INDEX IF NOT EXISTS ix_rag_doc_principals_doc ON rag_doc_principals (doc_pk)",
    """CREATE TABLE IF NOT EXISTS rag_chunks (
        id BIGSERIAL PRIMARY KEY,
        doc_pk BIGINT NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE,
        collection_id BIGINT NOT NULL, chunk_id TEXT NOT NULL, ord INTEGER NOT NULL,
        heading TEXT NOT NULL, text TEXT NOT NULL, char_start INTEGER NOT NULL,
        char_end INTEGER NOT NULL, n_terms INTEGER NOT NULL, embedding BYTEA)""",
    "CREATE INDEX IF NOT EXISTS ix_rag_chunks_doc ON rag_chunks (doc_pk)",
    "CREATE INDEX IF NOT EXISTS ix_rag_chunks_coll ON rag_chunks (collection_id, id)",
    """CREATE TABLE IF NOT EXISTS rag_postings (
        collection_id BIGINT NOT NULL, term TEXT NOT NULL,
        chunk_pk BIGINT NOT NULL REFERENCES rag_chunks(id) ON DELETE CASCADE,
        tf INTEGER NOT NULL, PRIMARY KEY (collection_id, term, chunk_pk))""",
    "CREATE INDEX IF NOT EXISTS ix_rag_postings_chunk ON rag_postings (chunk_pk)",
]


def _batches(items: Sequence[Any], size: int = 500) -> list[list[Any]]:
    """Split IN-lists so no statement exceeds the driver's bound-parameter limit."""
    seq = list(items)
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def _fts_table(cid: int) -> str:
    return f"rag_fts_{int(cid)}"


def _fts_quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class RagStore:
    """All SQL of the RAG feature. One instance per engine; safe to share between tasks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"RAG storage supports sqlite and postgresql, not {self.dialect}")
        self._schema_ready = False
        self._stats_cache: dict[int, tuple[int, int, float]] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _writer(self) -> AsyncEngine:
        if self.is_sqlite:
            from lockgate.store.engine import writer_engine

            return writer_engine(self.engine)
        return self.engine

    # ------------------------------------------------------------ schema

    async def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._writer().begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(74201004)"))
            for stmt in _SQLITE_DDL if self.is_sqlite else _PG_DDL:
                await conn.execute(text(stmt))
            await self._add_missing_columns(conn)
        self._schema_ready = True

    async def _add_missing_columns(self, conn: AsyncConnection) -> None:
        """Columns added after the first release of these tables."""
        if not self.is_sqlite:
            await conn.execute(text(
                "ALTER TABLE rag_collections ADD COLUMN IF NOT EXISTS threshold_kind TEXT"
            ))
            return
        cols = {r[1] for r in (await conn.execute(text("PRAGMA table_info(rag_collections)")))}
        if "threshold_kind" not in cols:
            await conn.execute(text("ALTER TABLE rag_collections ADD COLUMN threshold_kind TEXT"))

    # ------------------------------------------------------------ collections

    async def get_collection(self, name: str) -> CollectionInfo | None:
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT id, name, embed_model, dim, threshold, version, created_at,"
                        " threshold_kind"
                        " FROM rag_collections WHERE name = :n"
                    ),
                    {"n": name},
                )
            ).first()
        if row is None:
            return None
        return CollectionInfo(
            int(row[0]), row[1], row[2], row[3], row[4], int(row[5]), float(row[6]), row[7]
        )

    async def create_collection(self, name: str, embed_model: str | None) -> CollectionInfo:
        await self.ensure_schema()
        now = time.time()
        async with self._writer().begin() as conn:
            existing = (
                await conn.execute(
                    text("SELECT id FROM rag_collections WHERE name = :n"), {"n": name}
                )
            ).first()
            if existing is None:
                await conn.execute(
                    text(
                        "INSERT INTO rag_collections (name, embed_model, version, created_at,"
                        " updated_at) VALUES (:n, :m, 0, :t, :t)"
                    ),
                    {"n": name, "m": embed_model, "t": now},
                )
                cid = (
                    await conn.execute(
                        text("SELECT id FROM rag_collections WHERE name = :n"), {"n": name}
                    )
                ).scalar_one()
                if self.is_sqlite:
                    await conn.execute(
                        text(
                            f"CREATE VIRTUAL TABLE IF NOT EXISTS {_fts_table(cid)}"
                            " USING fts5(terms, tokenize='unicode61 remove_diacritics 0')"
                        )
                    )
        info = await self.get_collection(name)
        assert info is not None
        return info

    async def list_collections(self) -> list[CollectionInfo]:
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            sql = text("SELECT name FROM rag_collections ORDER BY name")
            rows = (await conn.execute(sql)).all()
        out = []
        for (name,) in rows:
            info = await self.get_collection(name)
            if info is not None:
                out.append(info)
        return out

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
        if not sets:
            return
        async with self._writer().begin() as conn:
            await conn.execute(
                text(f"UPDATE rag_collections SET {', '.join(sets)} WHERE id = :c"), params
            )

    async def version(self, cid: int) -> int:
        async with self.engine.connect() as conn:
            v = (
                await conn.execute(
                    text("SELECT version FROM rag_collections WHERE id = :c"), {"c": cid}
                )
            ).scalar()
        return int(v or 0)

    async def _bump(self, conn: AsyncConnection, cid: int) -> None:
        await conn.execute(
            text("UPDATE rag_collections SET version = version + 1, updated_at = :t WHERE id = :c"),
            {"t": time.time(), "c": cid},
        )

    # ------------------------------------------------------------ documents

    async def documents(self, cid: int) -> dict[str, DocumentRow]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, doc_id, content_hash, attrs_hash, indexed_at"
                        " FROM rag_documents WHERE collection_id = :c"
                    ),
                    {"c": cid},
                )
            ).all()
        return {r[1]: DocumentRow(int(r[0]), r[1], r[2], r[3], float(r[4])) for r in rows}

    async def chunk_embeddings(self, doc_pk: int) -> dict[str, bytes]:
        """chunk_id -> embedding blob of a stored document (to reuse unchanged chunks' vectors)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT chunk_id, embedding FROM rag_chunks WHERE doc_pk = :d"),
                    {"d": doc_pk},
                )
            ).all()
        return {r[0]: bytes(r[1]) for r in rows if r[1] is not None}

    async def replace_document(
        self,
        cid: int,
        doc: SourceDocument,
        content_hash: str,
        chunks: Sequence[Chunk],
        terms: Sequence[Counter[str]],
        vectors: Sequence[bytes | None],
    ) -> int:
        """Insert or atomically replace a document with its chunks, ACL and index terms."""
        now = time.time()
        meta = orjson.dumps(doc.metadata).decode()
        attrs = acl_hash(doc.principals, doc.metadata, doc.title)
        async with self._writer().begin() as conn:
            old = (
                await conn.execute(
                    text("SELECT id FROM rag_documents WHERE collection_id = :c AND doc_id = :d"),
                    {"c": cid, "d": doc.doc_id},
                )
            ).first()
            if old is not None:
                await self._delete_doc_rows(conn, cid, [int(old[0])])
            await conn.execute(
                text(
                    "INSERT INTO rag_documents (collection_id, doc_id, title, source, content_hash,"
                    " attrs_hash, metadata, indexed_at, source_mtime, n_chunks) VALUES"
                    " (:c, :d, :title, :src, :h, :a, :m, :t, :mt, :n)"
                ),
                {
                    "c": cid, "d": doc.doc_id, "title": doc.title, "src": doc.source,
                    "h": content_hash, "a": attrs, "m": meta, "t": now,
                    "mt": doc.source_mtime, "n": len(chunks),
                },
            )
            pk = int(
                (
                    await conn.execute(
                        text(
                            "SELECT id FROM rag_documents WHERE collection_id = :c AND doc_id = :d"
                        ),
                        {"c": cid, "d": doc.doc_id},
                    )
                ).scalar_one()
            )
            await self._insert_principals(conn, pk, doc.principals)
            if chunks:
                await self._insert_chunks(conn, cid, pk, chunks, terms, vectors)
            await self._bump(conn, cid)
        return pk

    async def _insert_principals(
        self, conn: AsyncConnection, pk: int, principals: Sequence[str]
    ) -> None:
        await conn.execute(
            text("INSERT INTO rag_doc_principals (doc_pk, principal) VALUES (:d, :p)"),
            [{"d": pk, "p": p} for p in sorted(set(principals))],
        )

    async def _insert_chunks(
        self,
        conn: AsyncConnection,
        cid: int,
        pk: int,
        chunks: Sequence[Chunk],
        terms: Sequence[Counter[str]],
        vectors: Sequence[bytes | None],
    ) -> None:
        rows = [
            {
                "d": pk, "c": cid, "cid": ch.chunk_id, "o": ch.ord, "h": ch.heading,
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
            await conn.execute(
                text("SELECT id, ord FROM rag_chunks WHERE doc_pk = :d"), {"d": pk}
            )
        ).all()
        by_ord = {int(o): int(i) for i, o in ids}
        if self.is_sqlite:
            await conn.execute(
                text(f"INSERT INTO {_fts_table(cid)} (rowid, terms) VALUES (:r, :t)"),
                [
                    {"r": by_ord[ch.ord], "t": " ".join(tc.elements())}
                    for ch, tc in zip(chunks, terms, strict=True)
                ],
            )
        else:
            postings = [
                {"c": cid, "t": term, "p": by_ord[ch.ord], "f": tf}
                for ch, tc in zip(chunks, terms, strict=True)
                for term, tf in tc.items()
            ]
            if postings:
                await conn.execute(
                    text(
                        "INSERT INTO rag_postings (collection_id, term, chunk_pk, tf)"
                        " VALUES (:c, :t, :p, :f)"
                    ),
                    postings,
                )

    async def _delete_doc_rows(self, conn: AsyncConnection, cid: int, pks: list[int]) -> None:
        if not pks:
            return
        params = {"pks": pks}
        if self.is_sqlite:
            await conn.execute(
                text(
                    f"DELETE FROM {_fts_table(cid)} WHERE rowid IN"
                    " (SELECT id FROM rag_chunks WHERE doc_pk IN :pks)"
                ).bindparams(bindparam("pks", expanding=True)),
                params,
            )
        else:
            await conn.execute(
                text(
                    "DELETE FROM rag_postings WHERE collection_id = :c AND chunk_pk IN"
                    " (SELECT id FROM rag_chunks WHERE doc_pk IN :pks)"
                ).bindparams(bindparam("pks", expanding=True)),
                {**params, "c": cid},
            )
        for table, col in (
            ("rag_chunks", "doc_pk"),
            ("rag_doc_principals", "doc_pk"),
            ("rag_documents", "id"),
        ):
            await conn.execute(
                text(f"DELETE FROM {table} WHERE {col} IN :pks").bindparams(
                    bindparam("pks", expanding=True)
                ),
                params,
            )

    async def update_attributes(self, cid: int, doc: SourceDocument) -> None:
        """Same content, new ACL / title / metadata: swap them in one transaction."""
        attrs = acl_hash(doc.principals, doc.metadata, doc.title)
        async with self._writer().begin() as conn:
            pk = (
                await conn.execute(
                    text("SELECT id FROM rag_documents WHERE collection_id = :c AND doc_id = :d"),
                    {"c": cid, "d": doc.doc_id},
                )
            ).scalar()
            if pk is None:
                return
            await conn.execute(
                text("DELETE FROM rag_doc_principals WHERE doc_pk = :d"), {"d": pk}
            )
            await self._insert_principals(conn, int(pk), doc.principals)
            await conn.execute(
                text(
                    "UPDATE rag_documents SET title = :title, metadata = :m, attrs_hash = :a,"
                    " indexed_at = :t, source = :s, source_mtime = :mt WHERE id = :d"
                ),
                {
                    "title": doc.title, "m": orjson.dumps(doc.metadata).decode(), "a": attrs,
                    "t": time.time(), "s": doc.source, "mt": doc.source_mtime, "d": pk,
                },
            )
            await self._bump(conn, cid)

    async def touch(self, cid: int, doc_ids: Sequence[str]) -> None:
        """Record that unchanged documents were checked now (freshness)."""
        if not doc_ids:
            return
        now = time.time()
        async with self._writer().begin() as conn:
            for part in _batches(doc_ids):
                await conn.execute(
                    text(
                        "UPDATE rag_documents SET indexed_at = :t"
                        " WHERE collection_id = :c AND doc_id IN :ids"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"t": now, "c": cid, "ids": part},
                )

    async def delete_documents(self, cid: int, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        async with self._writer().begin() as conn:
            pks: list[int] = []
            for part in _batches(doc_ids):
                rows = await conn.execute(
                    text(
                        "SELECT id FROM rag_documents WHERE collection_id = :c AND doc_id IN :ids"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"c": cid, "ids": part},
                )
                pks.extend(int(r[0]) for r in rows)
            for part_pks in _batches(pks):
                await self._delete_doc_rows(conn, cid, part_pks)
            if pks:
                await self._bump(conn, cid)
        return len(pks)

    async def drop_collection(self, cid: int) -> None:
        async with self._writer().begin() as conn:
            pks = [
                int(r[0])
                for r in (
                    await conn.execute(
                        text("SELECT id FROM rag_documents WHERE collection_id = :c"), {"c": cid}
                    )
                ).all()
            ]
            for part_pks in _batches(pks):
                await self._delete_doc_rows(conn, cid, part_pks)
            if self.is_sqlite:
                await conn.execute(text(f"DROP TABLE IF EXISTS {_fts_table(cid)}"))
            await conn.execute(text("DELETE FROM rag_collections WHERE id = :c"), {"c": cid})

    # ------------------------------------------------------------ ACL + filters (SQL)

    def _where(
        self,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
        params: dict[str, Any],
    ) -> tuple[str, list[Any]]:
        """WHERE fragments over ``d`` (rag_documents); ``principals=None`` means all access."""
        clauses: list[str] = []
        binds: list[Any] = []
        if principals is not None:
            params["acl"] = sorted(set(principals))
            clauses.append(
                "EXISTS (SELECT 1 FROM rag_doc_principals ap"
                " WHERE ap.doc_pk = d.id AND ap.principal IN :acl)"
            )
            binds.append(bindparam("acl", expanding=True))
        for i, (key, value) in enumerate(sorted((filters or {}).items())):
            values = value if isinstance(value, list | tuple | set) else [value]
            name = f"f{i}"
            params[name] = [str(v) for v in values] or ["\x00"]
            binds.append(bindparam(name, expanding=True))
            if key == "doc_id":
                clauses.append(f"d.doc_id IN :{name}")
                continue
            if not _KEY.match(key):
                raise ValueError(f"bad filter key {key!r}")
            if self.is_sqlite:
                expr = f"CAST(json_extract(d.metadata, '$.\"{key}\"') AS TEXT)"
            else:
                expr = f"(CAST(d.metadata AS jsonb) ->> '{key}')"
            clauses.append(f"{expr} IN :{name}")
        if exclude_doc_ids:
            params["excl"] = list(exclude_doc_ids)
            clauses.append("d.doc_id NOT IN :excl")
            binds.append(bindparam("excl", expanding=True))
        return (" AND ".join(clauses) or "1=1"), binds

    # ------------------------------------------------------------ lexical

    async def lexical_stats(self, cid: int, version: int) -> tuple[int, float]:
        """(chunk count, average index terms per chunk), cached per collection version."""
        cached = self._stats_cache.get(cid)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT COUNT(*), COALESCE(AVG(n_terms), 0) FROM rag_chunks"
                        " WHERE collection_id = :c"
                    ),
                    {"c": cid},
                )
            ).one()
        n, avg = int(row[0]), float(row[1] or 0.0)
        self._stats_cache[cid] = (version, n, avg)
        return n, avg

    async def document_frequencies(self, cid: int, terms: Sequence[str]) -> dict[str, int]:
        uniq = sorted(set(terms))
        if not uniq:
            return {}
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                out: dict[str, int] = {}
                for t in uniq:
                    n = (
                        await conn.execute(
                            text(f"SELECT COUNT(*) FROM {_fts_table(cid)} WHERE terms MATCH :q"),
                            {"q": _fts_quote(t)},
                        )
                    ).scalar()
                    out[t] = int(n or 0)
                return out
            rows = (
                await conn.execute(
                    text(
                        "SELECT term, COUNT(*) FROM rag_postings WHERE collection_id = :c"
                        " AND term IN :ts GROUP BY term"
                    ).bindparams(bindparam("ts", expanding=True)),
                    {"c": cid, "ts": uniq},
                )
            ).all()
        found = {r[0]: int(r[1]) for r in rows}
        return {t: found.get(t, 0) for t in uniq}

    @staticmethod
    def idf(n_docs: int, df: int) -> float:
        """FTS5's BM25 idf: log((N - n + 0.5) / (n + 0.5)), floored at 1e-6."""
        v = math.log((n_docs - df + 0.5) / (df + 0.5)) if n_docs > 0 else 0.0
        return max(v, 1e-6)

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
        params: dict[str, Any] = {"c": cid, "k": k}
        where, binds = self._where(principals, filters, exclude_doc_ids, params)
        if self.is_sqlite:
            fts = _fts_table(cid)
            params["q"] = " OR ".join(_fts_quote(t) for t in terms)
            sql = (
                f"SELECT f.rowid, bm25({fts}) AS s FROM {fts} f"
                " JOIN rag_chunks c ON c.id = f.rowid JOIN rag_documents d ON d.id = c.doc_pk"
                f" WHERE {fts} MATCH :q AND {where} ORDER BY s LIMIT :k"
            )
            async with self.engine.connect() as conn:
                rows = (await conn.execute(text(sql).bindparams(*binds), params)).all()
            return [(int(r[0]), -float(r[1])) for r in rows]
        n, avgdl = await self.lexical_stats(cid, version)
        dfs = await self.document_frequencies(cid, terms)
        qtf = Counter(terms)
        params["ts"] = sorted(qtf)
        params["ws"] = [self.idf(n, dfs.get(t, 0)) * qtf[t] for t in sorted(qtf)]
        params["avgdl"] = max(avgdl, 1e-9)
        params["k1"] = K1
        params["b"] = B
        sql = (
            "WITH q AS (SELECT * FROM unnest(CAST(:ts AS text[]), CAST(:ws AS float8[]))"
            " AS q(term, w))"
            " SELECT p.chunk_pk, SUM(q.w * p.tf * (:k1 + 1) /"
            " (p.tf + :k1 * (1 - :b + :b * c.n_terms / :avgdl))) AS s"
            " FROM rag_postings p JOIN q ON q.term = p.term"
            " JOIN rag_chunks c ON c.id = p.chunk_pk JOIN rag_documents d ON d.id = c.doc_pk"
            f" WHERE p.collection_id = :c AND {where}"
            " GROUP BY p.chunk_pk ORDER BY s DESC, p.chunk_pk LIMIT :k"
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql).bindparams(*binds), params)).all()
        return [(int(r[0]), float(r[1])) for r in rows]

    # ------------------------------------------------------------ dense support

    async def chunk_rows(self, cid: int) -> list[tuple[int, int]]:
        """(chunk pk, doc pk) of every chunk with an embedding, in pk order."""
        async with self.engine.connect() as conn:
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

    async def embeddings_for(self, pks: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(pks), 5000):
                part = list(pks[start : start + 5000])
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

    async def allowed_doc_pks(
        self,
        cid: int,
        *,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
    ) -> list[int]:
        params: dict[str, Any] = {"c": cid}
        where, binds = self._where(principals, filters, exclude_doc_ids, params)
        sql = f"SELECT d.id FROM rag_documents d WHERE d.collection_id = :c AND {where}"
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql).bindparams(*binds), params)).all()
        return [int(r[0]) for r in rows]

    # ------------------------------------------------------------ record of truth

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
        params: dict[str, Any] = {"c": cid, "pks": list(chunk_pks)}
        where, binds = self._where(principals, filters, exclude_doc_ids, params)
        sql = (
            "SELECT c.id, c.chunk_id, d.doc_id, d.title, c.text, c.heading, c.char_start,"
            " c.char_end, d.metadata FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_pk"
            f" WHERE c.collection_id = :c AND c.id IN :pks AND {where}"
        )
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(sql).bindparams(bindparam("pks", expanding=True), *binds), params
                )
            ).all()
        return {
            int(r[0]): Hit(
                chunk_pk=int(r[0]), chunk_id=r[1], doc_id=r[2], title=r[3], text=r[4],
                heading=r[5], char_start=int(r[6]), char_end=int(r[7]),
                metadata=orjson.loads(r[8]) if r[8] else {},
            )
            for r in rows
        }

    # ------------------------------------------------------------ status

    async def status(self, cid: int) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            d = (
                await conn.execute(
                    text(
                        "SELECT COUNT(*), MIN(indexed_at), MAX(indexed_at) FROM rag_documents"
                        " WHERE collection_id = :c"
                    ),
                    {"c": cid},
                )
            ).one()
            c = (
                await conn.execute(
                    text(
                        "SELECT COUNT(*), COUNT(embedding) FROM rag_chunks"
                        " WHERE collection_id = :c"
                    ),
                    {"c": cid},
                )
            ).one()
        now = time.time()
        return {
            "documents": int(d[0]),
            "chunks": int(c[0]),
            "embedded_chunks": int(c[1]),
            "oldest_indexed_at": d[1],
            "newest_indexed_at": d[2],
            "max_staleness_seconds": None if d[1] is None else round(now - float(d[1]), 3),
        }
