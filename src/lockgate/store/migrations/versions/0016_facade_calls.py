"""Facade call log (facade_calls): one row per batch of the calls a facade answered.

The definitions are those of this revision, frozen (independent of later changes to
tables.py).

Revision ID: 0016
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_REAL: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "facade_calls",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("facade", sa.String(), nullable=False),
        sa.Column("upstream", sa.String(), nullable=False),
        sa.Column("first_at", _REAL, nullable=False),
        sa.Column("last_at", _REAL, nullable=False),
        sa.Column("n_calls", sa.Integer(), nullable=False),
        sa.Column("calls", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_facade_calls"),
    )
    op.create_index("ix_facade_calls_last_at", "facade_calls", ["last_at"])


def downgrade() -> None:
    op.drop_index("ix_facade_calls_last_at", table_name="facade_calls")
    op.drop_table("facade_calls")
