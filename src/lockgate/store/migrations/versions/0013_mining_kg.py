"""Process mining logs (mining_logs, mining_events) and the RAG knowledge graph
(kg_entities, kg_mentions, kg_relations).

The definitions are those of this revision, frozen (independent of later changes to
tables.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REF = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mining_logs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("n_events", sa.BigInteger(), nullable=False),
        sa.Column("n_cases", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mining_logs"),
        sa.UniqueConstraint("name", name="uq_mining_logs_name"),
    )
    op.create_table(
        "mining_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("log_id", _REF, nullable=False),
        sa.Column("case_id", sa.Text(), nullable=False),
        sa.Column("activity", sa.Text(), nullable=False),
        sa.Column("ts", _REAL, nullable=False),
        sa.Column("start_ts", _REAL, nullable=True),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mining_events"),
        sa.ForeignKeyConstraint(["log_id"], ["mining_logs.id"], ondelete="CASCADE",
                                name="fk_mining_events_log_id_mining_logs"),
    )
    op.create_index("ix_mining_events_log_case", "mining_events",
                    ["log_id", "case_id", "ts", "id"])
    op.create_table(
        "kg_entities",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("collection_id", _REF, nullable=False),
        sa.Column("norm", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kg_entities"),
        sa.ForeignKeyConstraint(["collection_id"], ["rag_collections.id"], ondelete="CASCADE",
                                name="fk_kg_entities_collection_id_rag_collections"),
        sa.UniqueConstraint("collection_id", "norm", name="uq_kg_entities_collection_id_norm"),
    )
    op.create_table(
        "kg_mentions",
        sa.Column("entity_id", _REF, nullable=False),
        sa.Column("chunk_pk", _REF, nullable=False),
        sa.Column("doc_pk", _REF, nullable=False),
        sa.Column("collection_id", _REF, nullable=False),
        sa.PrimaryKeyConstraint("entity_id", "chunk_pk", name="pk_kg_mentions"),
        sa.ForeignKeyConstraint(["entity_id"], ["kg_entities.id"], ondelete="CASCADE",
                                name="fk_kg_mentions_entity_id_kg_entities"),
        sa.ForeignKeyConstraint(["chunk_pk"], ["rag_chunks.id"], ondelete="CASCADE",
                                name="fk_kg_mentions_chunk_pk_rag_chunks"),
        sa.ForeignKeyConstraint(["doc_pk"], ["rag_documents.id"], ondelete="CASCADE",
                                name="fk_kg_mentions_doc_pk_rag_documents"),
    )
    op.create_index("ix_kg_mentions_chunk_pk", "kg_mentions", ["chunk_pk"])
    op.create_index("ix_kg_mentions_doc_pk", "kg_mentions", ["doc_pk"])
    op.create_table(
        "kg_relations",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("collection_id", _REF, nullable=False),
        sa.Column("subject_id", _REF, nullable=False),
        sa.Column("predicate", sa.String(80), nullable=False),
        sa.Column("object_id", _REF, nullable=False),
        sa.Column("subject_name", sa.Text(), nullable=False),
        sa.Column("object_name", sa.Text(), nullable=False),
        sa.Column("chunk_pk", _REF, nullable=False),
        sa.Column("doc_pk", _REF, nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kg_relations"),
        sa.ForeignKeyConstraint(["subject_id"], ["kg_entities.id"], ondelete="CASCADE",
                                name="fk_kg_relations_subject_id_kg_entities"),
        sa.ForeignKeyConstraint(["object_id"], ["kg_entities.id"], ondelete="CASCADE",
                                name="fk_kg_relations_object_id_kg_entities"),
        sa.ForeignKeyConstraint(["chunk_pk"], ["rag_chunks.id"], ondelete="CASCADE",
                                name="fk_kg_relations_chunk_pk_rag_chunks"),
        sa.ForeignKeyConstraint(["doc_pk"], ["rag_documents.id"], ondelete="CASCADE",
                                name="fk_kg_relations_doc_pk_rag_documents"),
    )
    op.create_index("ix_kg_relations_subject", "kg_relations", ["subject_id"])
    op.create_index("ix_kg_relations_object", "kg_relations", ["object_id"])
    op.create_index("ix_kg_relations_chunk_pk", "kg_relations", ["chunk_pk"])
    op.create_index("ix_kg_relations_doc_pk", "kg_relations", ["doc_pk"])


def downgrade() -> None:
    op.drop_table("kg_relations")
    op.drop_table("kg_mentions")
    op.drop_table("kg_entities")
    op.drop_index("ix_mining_events_log_case", table_name="mining_events")
    op.drop_table("mining_events")
    op.drop_table("mining_logs")
