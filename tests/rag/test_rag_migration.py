"""Revision 0003 adopts RAG tables made by the DDL lockgate.rag ran itself before Alembic.

The old CREATE statements are frozen below, as the code issued them, in their
first release (no ``rag_collections.threshold_kind``) and their last (with it).
Each test builds such a database (with the store's tables at 0002, or never
migrated at all, as a bare engine left it), writes rows the way the old code
did (FTS5 rows on SQLite, postings on PostgreSQL), migrates, and checks that
every row survived, that the schema now equals the store's metadata, and that
ingest and queries work on the adopted tables.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.rag.access import acl_hash
from lockgate.rag.analysis import term_counts
from lockgate.rag.chunking import chunk_document
from lockgate.rag.dense import to_blob
from lockgate.rag.ingest import content_hash
from lockgate.rag.repository import RagStore
from lockgate.rag.service import RagService, RagSettings
from lockgate.rag.types import Caller, SourceDocument
from lockgate.store.engine import create_engine
from lockgate.store.migrate import alembic_config, current_revision, head_revision, migrate_engine
from lockgate.store.tables import metadata, schema_filter
from tests.rag.rag_support import OPERATOR, FakePipeline, fake_vector

# ---------------------------------------------------------------- frozen old DDL

_SQLITE_COLLECTIONS_FIRST = """CREATE TABLE IF NOT EXISTS rag_collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, embed_model TEXT,
    dim INTEGER, threshold REAL, version INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL)"""

_SQLITE_COLLECTIONS_LAST = """CREATE TABLE IF NOT EXISTS rag_collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, embed_model TEXT,
    dim INTEGER, threshold REAL, threshold_kind TEXT, version INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL)"""

_SQLITE_REST = [
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

_PG_COLLECTIONS_FIRST = """CREATE TABLE IF NOT EXISTS rag_collections (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, embed_model TEXT,
    dim INTEGER, threshold DOUBLE PRECISION,
    version BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"""

_PG_COLLECTIONS_LAST = """CREATE TABLE IF NOT EXISTS rag_collections (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, embed_model TEXT,
    dim INTEGER, threshold DOUBLE PRECISION, threshold_kind TEXT,
    version BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"""

_PG_REST = [
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


def old_ddl(dialect: str, shape: str) -> list[str]:
    if dialect == "sqlite":
        first = _SQLITE_COLLECTIONS_FIRST if shape == "first" else _SQLITE_COLLECTIONS_LAST
        return [first, *_SQLITE_REST]
    first = _PG_COLLECTIONS_FIRST if shape == "first" else _PG_COLLECTIONS_LAST
    return [first, *_PG_REST]


RAG_TABLES = ["rag_collections", "rag_documents", "rag_doc_principals", "rag_chunks"]
ORDER = {
    "rag_collections": "id",
    "rag_documents": "id",
    "rag_doc_principals": "doc_pk, principal",
    "rag_chunks": "id",
    "rag_postings": "chunk_pk, term",
}

OLD_DOCS = [
    SourceDocument(
        doc_id="zebra", title="Savanna", text="# Grazing\n\nZebras graze on the savanna grass.",
        metadata={"team": "wild"},
    ),
    SourceDocument(
        doc_id="okapi", title="Budget", text="The okapi budget is confidential.",
        principals=("user:bob",),
    ),
    SourceDocument(
        doc_id="heron", title="Wetlands",
        text="# Birds\n\nHerons wade in the marsh.\n\n# Fish\n\nPike hide among the reeds.",
        principals=("group:birders", "user:carol"), source="/docs/heron.md", source_mtime=12.5,
    ),
]


# ---------------------------------------------------------------- the old writes


async def _write_old_rows(conn: AsyncConnection, dialect: str, shape: str) -> int:
    """One collection with OLD_DOCS, written as the pre-Alembic RagStore wrote them."""
    now = time.time() - 3600
    cols = "name, embed_model, dim, threshold, version, created_at, updated_at"
    vals = ":n, 'embed', 64, 0.2, 3, :t, :t"
    if shape == "last":
        cols += ", threshold_kind"
        vals += ", 'cosine'"
    await conn.execute(
        sa.text(f"INSERT INTO rag_collections ({cols}) VALUES ({vals})"),
        {"n": "handbook", "t": now},
    )
    cid = int(
        (await conn.execute(sa.text("SELECT id FROM rag_collections WHERE name = 'handbook'")))
        .scalar_one()
    )
    if dialect == "sqlite":
        await conn.execute(
            sa.text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS rag_fts_{cid}"
                " USING fts5(terms, tokenize='unicode61 remove_diacritics 0')"
            )
        )
    for doc in OLD_DOCS:
        chunks = chunk_document(doc.doc_id, doc.text)
        await conn.execute(
            sa.text(
                "INSERT INTO rag_documents (collection_id, doc_id, title, source, content_hash,"
                " attrs_hash, metadata, indexed_at, source_mtime, n_chunks) VALUES"
                " (:c, :d, :title, :src, :h, :a, :m, :t, :mt, :n)"
            ),
            {
                "c": cid, "d": doc.doc_id, "title": doc.title, "src": doc.source,
                "h": content_hash(doc), "a": acl_hash(doc.principals, doc.metadata, doc.title),
                "m": orjson.dumps(doc.metadata).decode(), "t": now, "mt": doc.source_mtime,
                "n": len(chunks),
            },
        )
        pk = int(
            (
                await conn.execute(
                    sa.text("SELECT id FROM rag_documents WHERE doc_id = :d"), {"d": doc.doc_id}
                )
            ).scalar_one()
        )
        await conn.execute(
            sa.text("INSERT INTO rag_doc_principals (doc_pk, principal) VALUES (:d, :p)"),
            [{"d": pk, "p": p} for p in sorted(set(doc.principals))],
        )
        for ch in chunks:
            lex = " ".join(p for p in (doc.title, ch.heading, ch.text) if p)
            tc = term_counts(lex)
            emb = "\n".join(p for p in (doc.title, ch.heading, ch.text) if p)
            await conn.execute(
                sa.text(
                    "INSERT INTO rag_chunks (doc_pk, collection_id, chunk_id, ord, heading, text,"
                    " char_start, char_end, n_terms, embedding)"
                    " VALUES (:d, :c, :cid, :o, :h, :t, :s, :e, :n, :v)"
                ),
                {
                    "d": pk, "c": cid, "cid": ch.chunk_id, "o": ch.ord, "h": ch.heading,
                    "t": ch.text, "s": ch.char_start, "e": ch.char_end,
                    "n": sum(tc.values()), "v": to_blob(fake_vector(emb)),
                },
            )
            chunk_pk = int(
                (
                    await conn.execute(
                        sa.text("SELECT id FROM rag_chunks WHERE doc_pk = :d AND ord = :o"),
                        {"d": pk, "o": ch.ord},
                    )
                ).scalar_one()
            )
            if dialect == "sqlite":
                await conn.execute(
                    sa.text(f"INSERT INTO rag_fts_{cid} (rowid, terms) VALUES (:r, :t)"),
                    {"r": chunk_pk, "t": " ".join(tc.elements())},
                )
            else:
                await conn.execute(
                    sa.text(
                        "INSERT INTO rag_postings (collection_id, term, chunk_pk, tf)"
                        " VALUES (:c, :t, :p, :f)"
                    ),
                    [{"c": cid, "t": t, "p": chunk_pk, "f": f} for t, f in tc.items()],
                )
    return cid


async def _snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    tables = [*RAG_TABLES, "rag_postings"] if engine.dialect.name == "postgresql" else RAG_TABLES
    out: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        for table in tables:
            rows = await conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {ORDER[table]}"))
            out[table] = [dict(r) for r in rows.mappings().all()]
    return out


def _rag_diff(sync_conn: sa.Connection) -> list[Any]:
    """Differences between the RAG tables and the store's metadata, as autogenerate sees them."""
    include = schema_filter(sync_conn.dialect.name)

    def rag_only(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
        return bool(table and table.startswith("rag_")) and include(
            obj, name, type_, reflected, other
        )

    ctx = MigrationContext.configure(
        sync_conn, opts={"compare_type": True, "include_object": rag_only}
    )
    return list(compare_metadata(ctx, metadata))


Shape = dict[str, dict[str, Any]]


def _shape(sync_conn: sa.Connection) -> Shape:
    """What the RAG tables are, name by name, leaving out only what no query can tell apart.

    Column order and constraint names are left out (a column added to an old table comes
    last; an adopted SQLite table keeps its unnamed constraints);
    a primary-key column counts as NOT NULL (SQLite's ``INTEGER PRIMARY KEY`` is the
    rowid, never NULL, though it reflects as nullable); ON DELETE comes from SQLite's
    PRAGMA (SQLAlchemy does not parse it from an inline ``REFERENCES``).
    """
    insp = sa.inspect(sync_conn)
    dialect = sync_conn.dialect
    out: Shape = {}
    for table in sorted(n for n in insp.get_table_names() if n in ORDER):
        pk = insp.get_pk_constraint(table)["constrained_columns"]
        if dialect.name == "sqlite":
            fks = sorted(
                ((r[3],), r[2], (r[4],), r[6].upper())
                for r in sync_conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})")
            )
        else:
            fks = sorted(
                (tuple(f["constrained_columns"]), f["referred_table"],
                 tuple(f["referred_columns"]), (f.get("options") or {}).get("ondelete"))
                for f in insp.get_foreign_keys(table)
            )
        out[table] = {
            "columns": sorted(
                (c["name"], c["type"].compile(dialect=dialect),
                 c["nullable"] and c["name"] not in pk,
                 None if c["name"] in pk else c["default"])
                for c in insp.get_columns(table)
            ),
            "pk": pk,
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(table)
                if not i.get("duplicates_constraint")
            ),
            "fks": fks,
        }
    return out


def _expected_shape(sync_conn: sa.Connection) -> Shape:
    """:func:`_shape` of the store's metadata (lockgate.store.tables) on this backend."""
    dialect = sync_conn.dialect
    include = schema_filter(dialect.name)
    out: Shape = {}
    for name in sorted(ORDER):
        table = metadata.tables[name]
        if not include(table, name, "table", False, None):
            continue
        pk = [c.name for c in table.primary_key.columns]
        out[name] = {
            "columns": sorted(
                (c.name, c.type.compile(dialect=dialect), c.nullable and c.name not in pk,
                 None if c.server_default is None else str(c.server_default.arg.text))  # type: ignore[attr-defined]
                for c in table.columns
            ),
            "pk": pk,
            "unique": sorted(
                tuple(c.name for c in u.columns)
                for u in table.constraints
                if isinstance(u, sa.UniqueConstraint)
            ),
            "indexes": sorted(
                (str(i.name), tuple(c.name for c in i.columns), bool(i.unique))
                for i in table.indexes
            ),
            "fks": sorted(
                (tuple(fk.column_keys), fk.referred_table.name,
                 tuple(e.column.name for e in fk.elements), fk.ondelete)
                for fk in table.foreign_key_constraints
            ),
        }
    return out


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("shape", "prior"),
    [("first", "store_0002"), ("last", "store_0002"), ("first", "unmigrated"),
     ("last", "unmigrated")],
)
async def test_upgrade_adopts_old_rag_tables(empty_db_url: str, shape: str, prior: str) -> None:
    engine = create_engine(empty_db_url)
    dialect = engine.dialect.name
    try:
        if prior == "store_0002":  # a gateway database, RAG tables made later on first use
            async with engine.connect() as conn:
                await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
                await conn.commit()
        async with engine.begin() as conn:
            for stmt in old_ddl(dialect, shape):
                await conn.execute(sa.text(stmt))
            cid = await _write_old_rows(conn, dialect, shape)
        before = await _snapshot(engine)
        assert len(before["rag_chunks"]) >= 4

        assert await migrate_engine(engine) is True
        assert await current_revision(engine) == head_revision()
        assert await migrate_engine(engine) is False

        after = await _snapshot(engine)
        for table, rows in before.items():
            kept = [{k: r[k] for k in rows[0]} for r in after[table]]
            assert kept == rows, table
        kinds = [r["threshold_kind"] for r in after["rag_collections"]]
        assert kinds == ([None] if shape == "first" else ["cosine"])
        async with engine.connect() as conn:
            assert await conn.run_sync(_shape) == await conn.run_sync(_expected_shape)
            if dialect == "postgresql":  # same constraint names too: nothing left to migrate
                assert await conn.run_sync(_rag_diff) == []
            if dialect == "sqlite":
                fts = await conn.execute(sa.text(f"SELECT COUNT(*) FROM rag_fts_{cid}"))
                assert fts.scalar_one() == len(before["rag_chunks"])

        await _rag_still_works(engine, shape)
    finally:
        await engine.dispose()


async def test_upgraded_and_fresh_schemas_are_alike(empty_db_url: str, tmp_path: Any) -> None:
    """Old DDL + 0003 and a fresh migration give the same tables, columns, keys and indexes."""
    old = create_engine(empty_db_url)
    dialect = old.dialect.name
    try:
        async with old.begin() as conn:
            for stmt in old_ddl(dialect, "first"):
                await conn.execute(sa.text(stmt))
        await migrate_engine(old)
        async with old.connect() as conn:
            upgraded = await conn.run_sync(_shape)
        if dialect == "sqlite":
            fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
        else:
            async with old.begin() as conn:  # the same database, emptied and migrated anew
                await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                await conn.execute(sa.text("CREATE SCHEMA public"))
            fresh_url = empty_db_url
    finally:
        await old.dispose()
    fresh = create_engine(fresh_url)
    try:
        await migrate_engine(fresh)
        async with fresh.connect() as conn:
            assert await conn.run_sync(_shape) == upgraded
            assert await conn.run_sync(_shape) == await conn.run_sync(_expected_shape)
            assert await conn.run_sync(_rag_diff) == []
    finally:
        await fresh.dispose()
    tables = ["rag_chunks", "rag_collections", "rag_doc_principals", "rag_documents"]
    assert sorted(upgraded) == sorted(tables + (["rag_postings"] if dialect != "sqlite" else []))
    assert "threshold_kind" in {c[0] for c in upgraded["rag_collections"]["columns"]}


async def _rag_still_works(engine: AsyncEngine, shape: str) -> None:
    pipe = FakePipeline()
    svc = RagService(RagStore(engine), pipe, RagSettings(embed_model="embed"))
    [coll] = await svc.collections()
    assert (coll.name, coll.embed_model, coll.dim, coll.threshold) == ("handbook", "embed", 64, 0.2)
    assert coll.threshold_kind == (None if shape == "first" else "cosine")
    anyone, bob = Caller(user_id="alice"), Caller(user_id="bob")
    for mode in ("bm25", "dense", "hybrid"):
        res = await svc.retrieve("handbook", "zebras savanna grass", anyone, mode=mode)  # type: ignore[arg-type]
        assert res.hits and res.hits[0].doc_id == "zebra", mode
        assert res.hits[0].metadata == {"team": "wild"}
        # the ACL rows came through: bob reads the okapi budget, alice does not
        res = await svc.retrieve("handbook", "okapi budget", bob, mode=mode)  # type: ignore[arg-type]
        assert [h.doc_id for h in res.hits][:1] == ["okapi"], mode
        res = await svc.retrieve("handbook", "okapi budget", anyone, mode=mode)  # type: ignore[arg-type]
        assert "okapi" not in {h.doc_id for h in res.hits}, mode
    birder = Caller(groups=("birders",))
    res = await svc.retrieve(
        "handbook", "pike reeds", birder, mode="bm25", filters={"doc_id": "heron"}
    )
    assert res.hits and res.hits[0].heading.endswith("Fish")

    # unchanged documents are recognised from their stored hashes; new and edited ones indexed
    edited = SourceDocument(doc_id="zebra", title="Savanna", text="Zebras drink at the river.",
                            metadata={"team": "wild"})
    new = SourceDocument(doc_id="lynx", title="Forest", text="The lynx hunts hares at dusk.")
    rep = await svc.ingest_documents("handbook", [OLD_DOCS[2], edited, new], principal=OPERATOR)
    assert (rep.unchanged, rep.updated, rep.added) == (1, 1, 1)
    for mode in ("bm25", "dense", "hybrid"):
        res = await svc.retrieve("handbook", "lynx hunts hares", anyone, mode=mode)  # type: ignore[arg-type]
        assert res.hits and res.hits[0].doc_id == "lynx", mode
        res = await svc.retrieve("handbook", "zebras drink river", anyone, mode=mode)  # type: ignore[arg-type]
        assert res.hits and res.hits[0].doc_id == "zebra" and "river" in res.hits[0].text, mode
    res = await svc.retrieve("handbook", "savanna grass", anyone, mode="bm25")
    assert all("grass" not in h.text for h in res.hits)  # the old chunk left the lexical index

    ans = await svc.answer("handbook", "Where do herons wade?", birder, principal=OPERATOR)
    assert ans.citations
    st = await svc.status("handbook")
    assert st["documents"] == 4
    assert st["chunks"] == st["embedded_chunks"]

    await svc.store.set_collection(coll.id, threshold=0.4, threshold_kind="bm25_norm")
    again = await svc.collection("handbook")
    assert (again.threshold, again.threshold_kind) == (0.4, "bm25_norm")
    await svc.drop("handbook")
    assert await svc.collections() == []
