"""Agent run leases (a run whose gateway died is taken over by another) and tool sources and
grants defined over the admin API (lockgate.agents).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("agent_runs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(), nullable=True))
        batch.add_column(sa.Column("lease_until", _Seconds, nullable=True))
    op.create_index("ix_agent_runs_state_lease", "agent_runs", ["state", "lease_until"])
    op.create_table(
        "agent_tool_sources",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("updated_at", _Seconds, nullable=False),
        sa.Column("updated_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_agent_tool_sources"),
    )
    op.create_table(
        "agent_grants",
        sa.Column("part", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("tools", sa.Text(), nullable=False),
        sa.Column("updated_at", _Seconds, nullable=False),
        sa.Column("updated_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("part", "subject", name="pk_agent_grants"),
    )


def downgrade() -> None:
    op.drop_table("agent_grants")
    op.drop_table("agent_tool_sources")
    op.drop_index("ix_agent_runs_state_lease", table_name="agent_runs")
    with op.batch_alter_table("agent_runs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
