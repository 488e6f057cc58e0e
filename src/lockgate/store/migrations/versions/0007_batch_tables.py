"""Batch API tables (batch_files, batch_file_chunks, batches, batch_results).

Files and batch records used to be JSON files under ``<home>/batches`` on one host; they now
live in the store so any gateway serves any file or batch and status changes take row locks.
Files already on disk are not imported.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_files",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("owner_key_id", sa.String(), nullable=True),
        sa.Column("owner_team_id", sa.String(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batch_files"),
    )
    op.create_index("ix_batch_files_created_at", "batch_files", ["created_at"])
    op.create_index("ix_batch_files_owner_key_id", "batch_files", ["owner_key_id"])
    op.create_table(
        "batch_file_chunks",
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "seq", name="pk_batch_file_chunks"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("owner_key_id", sa.String(), nullable=True),
        sa.Column("owner_team_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_created_at", "batches", ["created_at"])
    op.create_index("ix_batches_owner_key_id", "batches", ["owner_key_id"])
    op.create_table(
        "batch_results",
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("custom_id", sa.Text(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "custom_id", name="pk_batch_results"),
    )


def downgrade() -> None:
    op.drop_table("batch_results")
    op.drop_table("batches")
    op.drop_table("batch_file_chunks")
    op.drop_index("ix_batch_files_owner_key_id", table_name="batch_files")
    op.drop_index("ix_batch_files_created_at", table_name="batch_files")
    op.drop_table("batch_files")
