"""Alerts (one row per open incident), feedback on calls, and monitor leases.

``alerts.open_key`` is unique and NULL once an incident is resolved, so N processes
raising the same open incident insert one row. The definitions are those of this
revision, frozen (independent of later changes to tables.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("open_key", sa.String(), nullable=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("raised_count", sa.Integer(), nullable=False),
        sa.Column("raised_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("acked_at", _TS, nullable=True),
        sa.Column("acked_by", sa.String(), nullable=True),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("delivery", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("open_key", name="uq_alerts_open_key"),
    )
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_table(
        "feedback",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("feedback_id", sa.String(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("review_id", sa.String(), nullable=True),
        sa.Column("job_id", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("team_id", sa.String(), nullable=True),
        sa.Column("given_by", sa.String(), nullable=True),
        sa.Column("thumbs", sa.String(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("corrected_output", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("refused", sa.Boolean(), nullable=True),
        sa.Column("task", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("deployment", sa.String(), nullable=True),
        sa.Column("prompt_version", sa.String(), nullable=True),
        sa.Column("contract_version", sa.String(), nullable=True),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("feedback_id", name="uq_feedback_feedback_id"),
    )
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_index("ix_feedback_review_id", "feedback", ["review_id"])
    op.create_index("ix_feedback_job_id", "feedback", ["job_id"])
    op.create_index("ix_feedback_quality", "feedback", ["task", "model", "deployment"])
    op.create_table(
        "monitor_leases",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_monitor_leases"),
    )


def downgrade() -> None:
    op.drop_table("monitor_leases")
    op.drop_table("feedback")
    op.drop_table("alerts")
