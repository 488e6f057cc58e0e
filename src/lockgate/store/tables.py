"""The store's tables (SQLAlchemy Core), portable between SQLite and PostgreSQL.

The Alembic revisions (``migrations/versions/0001_initial.py``, then
``0002_audit_chain_shadow.py`` for the audit hash chain and shadow results) create
exactly these; ``tests/store`` checks that the migrated schema and this metadata
do not drift apart. Timestamps are timezone-aware UTC in Python on both engines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "UTCDateTime",
    "api_keys",
    "audit_chain",
    "metadata",
    "shadow_results",
    "teams",
    "usage_records",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; SQLite (no time zones) stores naive UTC
    text, which still sorts and compares correctly. Naive inputs are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY, so the big id is INTEGER there.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), nullable=False, unique=True),
    sa.Column("business_unit", sa.String(), nullable=True),
    sa.Column("settings", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("team_id", sa.String(), sa.ForeignKey("teams.id"), nullable=False, index=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True, index=True),
    sa.Column("key_prefix", sa.String(), nullable=False),
    sa.Column("allowed_models", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
)

# One row per model call: every field of lockgate.pipeline.call.UsageRecord.
# No foreign keys on purpose: an audit row must never be refused because a key
# or team is gone (or is the master key).
usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("key_id", sa.String(), nullable=True, index=True),
    sa.Column("team_id", sa.String(), nullable=True, index=True),
    sa.Column("model", sa.String(), nullable=False),
    sa.Column("deployment", sa.String(), nullable=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("error_class", sa.String(), nullable=True),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cost", sa.Double(), nullable=False),
    sa.Column("latency_ms", sa.Double(), nullable=False),
    sa.Column("overhead_ms", sa.Double(), nullable=False),
    sa.Column("stream", sa.Boolean(), nullable=False),
    sa.Column("cached", sa.Boolean(), nullable=False),
    sa.Column("request_body", sa.Text(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    # tamper-evident hash chain (lockgate.store.chain); NULL only for rows written around it
    sa.Column("seq", sa.BigInteger(), nullable=True, unique=True),
    sa.Column("chain_hash", sa.String(64), nullable=True),
)

# The audit chain head: one row (id 1), locked by every batch that extends the chain.
audit_chain = sa.Table(
    "audit_chain",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
)

# Shadow traffic (lockgate.shadow): the primary and candidate answers side by side; written by
# the AuditWriter in the same transaction as the audit rows.
shadow_results = sa.Table(
    "shadow_results",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("request_id", sa.String(), nullable=False),
    sa.Column("model", sa.String(), nullable=False, index=True),
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
)
