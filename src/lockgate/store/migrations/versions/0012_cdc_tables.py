"""Change-data-capture bookkeeping (cdc_applied, cdc_dead).

The outbox and triggers live in the user's database (``lockgate cdc install``); lockgate's
own store keeps which changes were applied (dedup by change id) and the dead-letter list.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cdc_applied",
        sa.Column("capture", sa.String(64), nullable=False),
        sa.Column("change_id", sa.String(160), nullable=False),
        sa.Column("applied_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("capture", "change_id", name="pk_cdc_applied"),
    )
    op.create_index("ix_cdc_applied_applied_at", "cdc_applied", ["applied_at"])
    op.create_table(
        "cdc_dead",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("capture", sa.String(64), nullable=False),
        sa.Column("change_id", sa.String(160), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cdc_dead"),
        sa.UniqueConstraint("change_id", name="uq_cdc_dead_change_id"),
    )
    op.create_index("ix_cdc_dead_capture", "cdc_dead", ["capture"])


def downgrade() -> None:
    op.drop_index("ix_cdc_dead_capture", table_name="cdc_dead")
    op.drop_table("cdc_dead")
    op.drop_index("ix_cdc_applied_applied_at", table_name="cdc_applied")
    op.drop_table("cdc_applied")
