"""Audit hash chain (usage_records.seq/chain_hash, audit_chain head) and shadow_results.

Existing usage rows are chained in ``id`` order, so an upgraded database
verifies from its first row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from lockgate.store.chain import GENESIS, link
from lockgate.store.records import USAGE_FIELDS
from lockgate.store.tables import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _legacy_usage() -> sa.TableClause:
    """usage_records as of this revision (independent of later changes to tables.py)."""
    types: dict[str, Any] = {
        "created_at": UTCDateTime(),
        "status": sa.Integer(),
        "prompt_tokens": sa.BigInteger(),
        "completion_tokens": sa.BigInteger(),
        "cost": sa.Double(),
        "latency_ms": sa.Double(),
        "overhead_ms": sa.Double(),
        "stream": sa.Boolean(),
        "cached": sa.Boolean(),
    }
    return sa.table(
        "usage_records",
        sa.column("id", sa.BigInteger()),
        sa.column("seq", sa.BigInteger()),
        sa.column("chain_hash", sa.String()),
        # the fields as of this revision ("detail" came in 0004; canonical() skips it unset)
        *(sa.column(name, types.get(name, sa.String())) for name in USAGE_FIELDS
          if name != "detail"),
    )


def _chain_existing_rows() -> tuple[int, str]:
    bind = op.get_bind()
    usage = _legacy_usage()
    seq, prev = 0, GENESIS
    last_id = None
    while True:
        stmt = sa.select(usage).order_by(usage.c.id).limit(2000)
        if last_id is not None:
            stmt = stmt.where(usage.c.id > last_id)
        rows = bind.execute(stmt).mappings().all()
        if not rows:
            return seq, prev
        updates = []
        for row in rows:
            seq += 1
            prev = link(prev, seq, row)
            updates.append({"b_id": row["id"], "b_seq": seq, "b_hash": prev})
            last_id = row["id"]
        bind.execute(
            usage.update()
            .where(usage.c.id == sa.bindparam("b_id"))
            .values(seq=sa.bindparam("b_seq"), chain_hash=sa.bindparam("b_hash")),
            updates,
        )


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_usage_records_seq", ["seq"])
    audit_chain = op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
    )
    seq, head = _chain_existing_rows()
    op.bulk_insert(audit_chain, [{"id": 1, "seq": seq, "head_hash": head}])
    op.create_table(
        "shadow_results",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("primary_deployment", sa.String(), nullable=True),
        sa.Column("candidate_deployment", sa.String(), nullable=False),
        sa.Column("primary_text", sa.Text(), nullable=True),
        sa.Column("candidate_text", sa.Text(), nullable=True),
        sa.Column("primary_latency_ms", sa.Double(), nullable=False),
        sa.Column("candidate_latency_ms", sa.Double(), nullable=False),
        sa.Column("primary_cost", sa.Double(), nullable=False),
        sa.Column("candidate_cost", sa.Double(), nullable=False),
        sa.Column("candidate_prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("candidate_completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("candidate_error", sa.String(), nullable=True),
        sa.Column("text_match", sa.Boolean(), nullable=True),
        sa.Column("json_match", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_shadow_results"),
    )
    op.create_index("ix_shadow_results_created_at", "shadow_results", ["created_at"])
    op.create_index("ix_shadow_results_model", "shadow_results", ["model"])


def downgrade() -> None:
    op.drop_table("shadow_results")
    op.drop_table("audit_chain")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_constraint("uq_usage_records_seq", type_="unique")
        batch.drop_column("chain_hash")
        batch.drop_column("seq")
