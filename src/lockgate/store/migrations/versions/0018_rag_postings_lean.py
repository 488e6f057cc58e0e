"""PostgreSQL ``rag_postings``: one covering index and no foreign key (faster ingest).

Before: the primary key ``(collection_id, term, chunk_pk)``, a second index
``ix_rag_postings_scan (collection_id, term) INCLUDE (chunk_pk, tf, doc_pk, n_terms)``
and a foreign key to ``rag_chunks`` checked by a trigger for every posting row
(~80 per chunk). After: the primary key itself covers the BM25 scan
(``(collection_id, term, chunk_pk) INCLUDE (tf, doc_pk, n_terms)``), the second
index and the foreign key are gone. lockgate.rag deletes a document's postings
before its chunks and a collection's postings when it drops the collection, so the
cascade had nothing left to do. Measured with the COPY writes of the same change:
ingest through ``RagService`` uses 3.9x less PostgreSQL CPU per chunk
(bench/rag_pg_ingest.py, bench/RESULTS.md).

Revision ID: 0018
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DELETE FROM rag_postings p WHERE NOT EXISTS"
               " (SELECT 1 FROM rag_chunks c WHERE c.id = p.chunk_pk)")
    op.drop_constraint("rag_postings_chunk_pk_fkey", "rag_postings", type_="foreignkey")
    op.drop_index("ix_rag_postings_scan", table_name="rag_postings")
    op.execute("ALTER TABLE rag_postings DROP CONSTRAINT rag_postings_pkey,"
               " ADD CONSTRAINT rag_postings_pkey PRIMARY KEY (collection_id, term, chunk_pk)"
               " INCLUDE (tf, doc_pk, n_terms)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE rag_postings DROP CONSTRAINT rag_postings_pkey,"
               " ADD CONSTRAINT rag_postings_pkey PRIMARY KEY (collection_id, term, chunk_pk)")
    op.create_index("ix_rag_postings_scan", "rag_postings", ["collection_id", "term"],
                    postgresql_include=["chunk_pk", "tf", "doc_pk", "n_terms"])
    op.create_foreign_key("rag_postings_chunk_pk_fkey", "rag_postings", "rag_chunks",
                          ["chunk_pk"], ["id"], ondelete="CASCADE")
