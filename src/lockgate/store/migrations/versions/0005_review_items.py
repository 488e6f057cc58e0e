"""Review queue: review_items (lockgate.review).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("source_ref", sa.String(), nullable=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("created_at", _S, nullable=False),
        sa.Column("updated_at", _S, nullable=False),
        sa.Column("team", sa.String(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("team_id", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("deployment", sa.String(), nullable=True),
        sa.Column("confidence", _S, nullable=True),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=True),
        sa.Column("sla_due_at", _S, nullable=False),
        sa.Column("sla_breached", sa.Boolean(), nullable=False),
        sa.Column("escalate_to", sa.String(), nullable=True),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claim_until", _S, nullable=True),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(), nullable=True),
        sa.Column("decided_at", _S, nullable=True),
        sa.Column("resumed_at", _S, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
    )
    op.create_index("ix_review_items_request_id", "review_items", ["request_id"])
    op.create_index(
        "ix_review_items_state_team_created", "review_items",
        ["state", "team", "created_at", "id"],
    )
    op.create_index("ix_review_items_state_sla", "review_items", ["state", "sla_due_at"])
    op.create_index("ix_review_items_state_created", "review_items", ["state", "created_at", "id"])
    op.create_index("ix_review_items_task_decided", "review_items", ["task", "decided_at"])
    op.create_index("ix_review_items_source_ref", "review_items", ["source_ref"])


def downgrade() -> None:
    op.drop_table("review_items")
