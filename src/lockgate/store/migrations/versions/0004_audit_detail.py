"""usage_records.detail: guard findings of a call, or what an admin action changed (JSON).

The audit chain hashes ``detail`` only when it is set (:func:`lockgate.store.chain.canonical`),
so rows written before this revision keep their hashes and ``lockgate audit verify`` still
passes on an upgraded database.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("detail")
