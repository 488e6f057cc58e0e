"""RAG tables (rag_collections, rag_documents, rag_doc_principals, rag_chunks, rag_postings).

Until this revision lockgate.rag created its tables itself (``CREATE TABLE IF NOT
EXISTS`` on first use, then added ``rag_collections.threshold_kind`` by hand to
tables made before that column existed). So a database reaching this revision
may already hold them, with rows. The upgrade therefore inspects first: a missing
table is created; an existing one is kept, rows and all, and only what it lacks
(late-added columns, indexes) is added. The definitions below are those of this
revision, frozen: they equal what the old DDL produced on each backend.

rag_postings (BM25 postings) exists on PostgreSQL only; on SQLite the lexical
index is one FTS5 table per collection, made at run time by lockgate.rag.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # BIGSERIAL / INTEGER AUTOINCREMENT
_REF = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
_FTS_TABLE = re.compile(r"^rag_fts_\d+$")


class _Spec:
    """One table as of this revision: columns and constraints, its indexes, table options."""

    def __init__(
        self,
        name: str,
        items: list[sa.Column[Any] | sa.Constraint],
        indexes: dict[str, list[str]],
        *,
        only_on: str | None = None,
        **table_kw: Any,
    ) -> None:
        self.name = name
        self.items = items
        self.indexes = indexes
        self.only_on = only_on
        self.table_kw = table_kw

    @property
    def columns(self) -> list[sa.Column[Any]]:
        return [i for i in self.items if isinstance(i, sa.Column)]


def _specs() -> list[_Spec]:
    """Fresh schema objects (an object can belong to one table only), parents first."""
    return [
        _Spec(
            "rag_collections",
            [
                sa.Column("id", _ID, autoincrement=True, nullable=False),
                sa.Column("name", sa.Text(), nullable=False),
                sa.Column("embed_model", sa.Text(), nullable=True),
                sa.Column("dim", sa.Integer(), nullable=True),
                sa.Column("threshold", _REAL, nullable=True),
                sa.Column("threshold_kind", sa.Text(), nullable=True),  # added late by hand
                sa.Column("version", _REF, nullable=False, server_default=sa.text("0")),
                sa.Column("created_at", _REAL, nullable=False),
                sa.Column("updated_at", _REAL, nullable=False),
                sa.PrimaryKeyConstraint("id", name="rag_collections_pkey"),
                sa.UniqueConstraint("name", name="rag_collections_name_key"),
            ],
            {},
            sqlite_autoincrement=True,
        ),
        _Spec(
            "rag_documents",
            [
                sa.Column("id", _ID, autoincrement=True, nullable=False),
                sa.Column("collection_id", _REF, nullable=False),
                sa.Column("doc_id", sa.Text(), nullable=False),
                sa.Column("title", sa.Text(), nullable=False),
                sa.Column("source", sa.Text(), nullable=False),
                sa.Column("content_hash", sa.Text(), nullable=False),
                sa.Column("attrs_hash", sa.Text(), nullable=False),
                sa.Column("metadata", sa.Text(), nullable=False),
                sa.Column("indexed_at", _REAL, nullable=False),
                sa.Column("source_mtime", _REAL, nullable=True),
                sa.Column("n_chunks", sa.Integer(), nullable=False),
                sa.PrimaryKeyConstraint("id", name="rag_documents_pkey"),
                sa.ForeignKeyConstraint(
                    ["collection_id"], ["rag_collections.id"], ondelete="CASCADE",
                    name="rag_documents_collection_id_fkey",
                ),
                sa.UniqueConstraint(
                    "collection_id", "doc_id", name="rag_documents_collection_id_doc_id_key"
                ),
            ],
            {},
            sqlite_autoincrement=True,
        ),
        _Spec(
            "rag_doc_principals",
            [
                sa.Column("doc_pk", _REF, nullable=False),
                sa.Column("principal", sa.Text(), nullable=False),
                sa.PrimaryKeyConstraint("principal", "doc_pk", name="rag_doc_principals_pkey"),
                sa.ForeignKeyConstraint(
                    ["doc_pk"], ["rag_documents.id"], ondelete="CASCADE",
                    name="rag_doc_principals_doc_pk_fkey",
                ),
            ],
            {"ix_rag_doc_principals_doc": ["doc_pk"]},
        ),
        _Spec(
            "rag_chunks",
            [
                sa.Column("id", _ID, autoincrement=True, nullable=False),
                sa.Column("doc_pk", _REF, nullable=False),
                sa.Column("collection_id", _REF, nullable=False),
                sa.Column("chunk_id", sa.Text(), nullable=False),
                sa.Column("ord", sa.Integer(), nullable=False),
                sa.Column("heading", sa.Text(), nullable=False),
                sa.Column("text", sa.Text(), nullable=False),
                sa.Column("char_start", sa.Integer(), nullable=False),
                sa.Column("char_end", sa.Integer(), nullable=False),
                sa.Column("n_terms", sa.Integer(), nullable=False),
                sa.Column("embedding", sa.LargeBinary(), nullable=True),
                sa.PrimaryKeyConstraint("id", name="rag_chunks_pkey"),
                sa.ForeignKeyConstraint(
                    ["doc_pk"], ["rag_documents.id"], ondelete="CASCADE",
                    name="rag_chunks_doc_pk_fkey",
                ),
            ],
            {"ix_rag_chunks_doc": ["doc_pk"], "ix_rag_chunks_coll": ["collection_id", "id"]},
            sqlite_autoincrement=True,
        ),
        _Spec(
            "rag_postings",
            [
                sa.Column("collection_id", _REF, nullable=False),
                sa.Column("term", sa.Text(), nullable=False),
                sa.Column("chunk_pk", _REF, nullable=False),
                sa.Column("tf", sa.Integer(), nullable=False),
                sa.PrimaryKeyConstraint(
                    "collection_id", "term", "chunk_pk", name="rag_postings_pkey"
                ),
                sa.ForeignKeyConstraint(
                    ["chunk_pk"], ["rag_chunks.id"], ondelete="CASCADE",
                    name="rag_postings_chunk_pk_fkey",
                ),
            ],
            {"ix_rag_postings_chunk": ["chunk_pk"]},
            only_on="postgresql",
        ),
    ]


def _complete(inspector: sa.Inspector, spec: _Spec) -> None:
    """Add to an existing table what this revision's shape has and the table lacks."""
    have = {c["name"] for c in inspector.get_columns(spec.name)}
    for col in spec.columns:
        if col.name in have:
            continue
        if not col.nullable and col.server_default is None:
            raise RuntimeError(
                f"cannot add NOT NULL column {spec.name}.{col.name} to a table with rows"
            )
        op.add_column(spec.name, col)
    indexes = {ix["name"] for ix in inspector.get_indexes(spec.name)}
    for name, cols in spec.indexes.items():
        if name not in indexes:
            op.create_index(name, spec.name, cols)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for spec in _specs():
        if spec.only_on is not None and spec.only_on != bind.dialect.name:
            continue
        if spec.name in existing:
            _complete(inspector, spec)
            continue
        op.create_table(spec.name, *spec.items, **spec.table_kw)
        for name, cols in spec.indexes.items():
            op.create_index(name, spec.name, cols)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in sa.inspect(bind).get_table_names():
            if _FTS_TABLE.match(name):
                op.drop_table(name)  # an FTS5 table; its shadow tables go with it
    for spec in reversed(_specs()):
        if spec.only_on is None or spec.only_on == bind.dialect.name:
            op.drop_table(spec.name)
