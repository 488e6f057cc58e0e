"""Review webhooks' outbox: review_webhooks (lockgate.review.webhook_outbox).

``review.*`` webhooks were sent by the process that made the change, in a background task:
a process killed (or restarted) before the receiver answered lost them. Each one is now a
row written in the same transaction as the change it reports, delivered by any instance
under a lease, retried with backoff, and kept as ``dead`` when it cannot be delivered.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_webhooks",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("created_at", _S, nullable=False),
        sa.Column("due_at", _S, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_until", _S, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_review_webhooks_state_due", "review_webhooks", ["state", "due_at"])
    op.create_index("ix_review_webhooks_item", "review_webhooks", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_review_webhooks_item", table_name="review_webhooks")
    op.drop_index("ix_review_webhooks_state_due", table_name="review_webhooks")
    op.drop_table("review_webhooks")
