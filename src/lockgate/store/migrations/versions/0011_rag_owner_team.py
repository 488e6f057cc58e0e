"""RAG at scale: ``rag_collections.owner_team``; self-contained PostgreSQL postings.

* ``rag_collections.owner_team``: a team key may ingest into a collection its team owns
  (created by that team's key) with ACLs naming only its own team; NULL = the operator's
  collection (master key only).
* PostgreSQL only: ``rag_postings`` gains ``doc_pk`` and ``n_terms`` (copied from the
  chunk rows) and an index ``(collection_id, term) INCLUDE (chunk_pk, tf, doc_pk,
  n_terms)``, so BM25 is scored from the index alone (an index-only scan per query
  term) without joining every posting to its chunk and document (lockgate.rag.lexical).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rag_collections") as batch:
        batch.add_column(sa.Column("owner_team", sa.Text(), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.add_column("rag_postings", sa.Column("doc_pk", sa.BigInteger(), nullable=True))
    op.add_column("rag_postings", sa.Column("n_terms", sa.Integer(), nullable=True))
    op.execute("UPDATE rag_postings p SET doc_pk = c.doc_pk, n_terms = c.n_terms"
               " FROM rag_chunks c WHERE c.id = p.chunk_pk")
    op.alter_column("rag_postings", "doc_pk", nullable=False)
    op.alter_column("rag_postings", "n_terms", nullable=False)
    op.create_index("ix_rag_postings_scan", "rag_postings", ["collection_id", "term"],
                    postgresql_include=["chunk_pk", "tf", "doc_pk", "n_terms"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_rag_postings_scan", table_name="rag_postings")
        op.drop_column("rag_postings", "n_terms")
        op.drop_column("rag_postings", "doc_pk")
    with op.batch_alter_table("rag_collections") as batch:
        batch.drop_column("owner_team")
