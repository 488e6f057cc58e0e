"""RAG collections owned by a team: ``rag_collections.owner_team``.

A team key may ingest into a collection its team owns (created by that team's key) with
ACLs naming only its own team; NULL = the operator's collection (master key only).

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rag_collections") as batch:
        batch.add_column(sa.Column("owner_team", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rag_collections") as batch:
        batch.drop_column("owner_team")
