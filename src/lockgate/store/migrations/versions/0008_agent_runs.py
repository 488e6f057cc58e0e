"""Agent runs, their steps, pinned MCP tool definitions and agents defined over the
admin API (lockgate.agents).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("root_id", sa.String(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("created_at", _Seconds, nullable=False),
        sa.Column("updated_at", _Seconds, nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("team_id", sa.String(), nullable=True),
        sa.Column("principal", sa.Text(), nullable=True),
        sa.Column("acting_for", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("messages", sa.Text(), nullable=True),
        sa.Column("pending", sa.Text(), nullable=True),
        sa.Column("review_id", sa.String(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("cost", _Seconds, nullable=False),
        sa.Column("active_s", _Seconds, nullable=False),
        sa.Column("delegations", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_runs"),
    )
    op.create_index("ix_agent_runs_agent_created", "agent_runs", ["agent", "created_at"])
    op.create_index("ix_agent_runs_root_id", "agent_runs", ["root_id"])
    op.create_index("ix_agent_runs_review_id", "agent_runs", ["review_id"])
    op.create_table(
        "agent_steps",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", _Seconds, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("duration_ms", _Seconds, nullable=False),
        sa.Column("cost", _Seconds, nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_agent_steps"),
    )
    op.create_table(
        "agent_tool_pins",
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.Column("pinned_at", _Seconds, nullable=False),
        sa.PrimaryKeyConstraint("source", "tool", name="pk_agent_tool_pins"),
    )
    op.create_table(
        "agent_defs",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("updated_at", _Seconds, nullable=False),
        sa.Column("updated_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_agent_defs"),
    )


def downgrade() -> None:
    op.drop_table("agent_defs")
    op.drop_table("agent_tool_pins")
    op.drop_table("agent_steps")
    op.drop_index("ix_agent_runs_review_id", table_name="agent_runs")
    op.drop_index("ix_agent_runs_root_id", table_name="agent_runs")
    op.drop_index("ix_agent_runs_agent_created", table_name="agent_runs")
    op.drop_table("agent_runs")
