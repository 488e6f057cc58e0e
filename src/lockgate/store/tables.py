"""The store's tables (SQLAlchemy Core), portable between SQLite and PostgreSQL.

The Alembic revisions (``migrations/versions/0001_initial.py``, then
``0002_audit_chain_shadow.py`` for the audit hash chain and shadow results, then
``0003_rag_tables.py`` for the RAG feature's tables, ``0005_feedback_alerts.py`` for
alerts, feedback and monitor leases) create exactly these;
``0003_rag_tables.py`` for the RAG feature's tables, ``0006_batch_tables.py`` for the
Batch API's files and batches) create exactly these;
``tests/store`` checks that the migrated schema and this metadata do not drift
apart (through :func:`schema_filter`). Timestamps are timezone-aware UTC in
Python on both engines.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "RAG_FTS_PREFIX",
    "UTCDateTime",
    "alerts",
    "api_keys",
    "audit_chain",
    "batch_file_chunks",
    "batch_files",
    "batch_results",
    "batches",
    "feedback",
    "metadata",
    "monitor_leases",
    "rag_chunks",
    "rag_collections",
    "rag_doc_principals",
    "rag_documents",
    "rag_postings",
    "review_items",
    "schema_filter",
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
    # JSON: guard findings of a call, or what an admin action changed (kind 'admin')
    sa.Column("detail", sa.Text(), nullable=True),
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


# ---------------------------------------------------------------- RAG (lockgate.rag)
# Same columns, types and index names as the DDL lockgate.rag issued itself before
# these tables came under Alembic (0003 adopts databases made by that DDL as they
# are). The constraint names are PostgreSQL's defaults for that DDL, so a fresh
# database and an adopted one are alike. Times are epoch seconds (float), as the
# RAG code has always written them.
#
# Not in this metadata: SQLite's lexical index, one FTS5 virtual table per
# collection (``rag_fts_<collection id>`` plus FTS5's own shadow tables), which
# lockgate.rag creates and drops with the collection. rag_postings (the lexical
# index on PostgreSQL) exists on PostgreSQL only.

RAG_FTS_PREFIX = "rag_fts_"
JOB_QUEUE_PREFIX = "lockgate_jobs"
"""Tables of :mod:`lockgate.jobs` queues (created by the queue, outside Alembic)."""
# DOUBLE PRECISION on PostgreSQL, REAL on SQLite; ids and references BIGINT / INTEGER
_Real: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
_RefId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ONLY_ON = "lockgate_only_on"

rag_collections = sa.Table(
    "rag_collections",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("embed_model", sa.Text(), nullable=True),
    sa.Column("dim", sa.Integer(), nullable=True),
    sa.Column("threshold", _Real, nullable=True),
    sa.Column("threshold_kind", sa.Text(), nullable=True),
    # bumped by every write transaction; the in-memory dense index reloads on change
    sa.Column("version", _RefId, nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", _Real, nullable=False),
    sa.Column("updated_at", _Real, nullable=False),
    # the team whose keys may ingest here (0011); NULL = the operator's (master key only)
    sa.Column("owner_team", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("id", name="rag_collections_pkey"),
    sa.UniqueConstraint("name", name="rag_collections_name_key"),
    sqlite_autoincrement=True,
)

rag_documents = sa.Table(
    "rag_documents",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("collection_id", _RefId, nullable=False),
    sa.Column("doc_id", sa.Text(), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("content_hash", sa.Text(), nullable=False),
    sa.Column("attrs_hash", sa.Text(), nullable=False),
    sa.Column("metadata", sa.Text(), nullable=False),  # JSON text
    sa.Column("indexed_at", _Real, nullable=False),
    sa.Column("source_mtime", _Real, nullable=True),
    sa.Column("n_chunks", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("id", name="rag_documents_pkey"),
    sa.ForeignKeyConstraint(
        ["collection_id"], ["rag_collections.id"], ondelete="CASCADE",
        name="rag_documents_collection_id_fkey",
    ),
    sa.UniqueConstraint("collection_id", "doc_id", name="rag_documents_collection_id_doc_id_key"),
    sqlite_autoincrement=True,
)

# The ACL: (principal, document) pairs, joined in SQL by every retriever before its top-k.
rag_doc_principals = sa.Table(
    "rag_doc_principals",
    metadata,
    sa.Column("doc_pk", _RefId, nullable=False),
    sa.Column("principal", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("principal", "doc_pk", name="rag_doc_principals_pkey"),
    sa.ForeignKeyConstraint(
        ["doc_pk"], ["rag_documents.id"], ondelete="CASCADE",
        name="rag_doc_principals_doc_pk_fkey",
    ),
    sa.Index("ix_rag_doc_principals_doc", "doc_pk"),
)

rag_chunks = sa.Table(
    "rag_chunks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("doc_pk", _RefId, nullable=False),
    sa.Column("collection_id", _RefId, nullable=False),
    sa.Column("chunk_id", sa.Text(), nullable=False),
    sa.Column("ord", sa.Integer(), nullable=False),
    sa.Column("heading", sa.Text(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("char_start", sa.Integer(), nullable=False),
    sa.Column("char_end", sa.Integer(), nullable=False),
    sa.Column("n_terms", sa.Integer(), nullable=False),
    # unit vector, little-endian float32 (lockgate.rag.dense); NULL without an embeddings model
    sa.Column("embedding", sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint("id", name="rag_chunks_pkey"),
    sa.ForeignKeyConstraint(
        ["doc_pk"], ["rag_documents.id"], ondelete="CASCADE", name="rag_chunks_doc_pk_fkey"
    ),
    sa.Index("ix_rag_chunks_doc", "doc_pk"),
    sa.Index("ix_rag_chunks_coll", "collection_id", "id"),
    sqlite_autoincrement=True,
)

# PostgreSQL's lexical index: BM25 postings (SQLite uses FTS5 instead).
rag_postings = sa.Table(
    "rag_postings",
    metadata,
    sa.Column("collection_id", _RefId, nullable=False),
    sa.Column("term", sa.Text(), nullable=False),
    sa.Column("chunk_pk", _RefId, nullable=False),
    sa.Column("tf", sa.Integer(), nullable=False),
    # copied from the chunk (0011): BM25 is scored from ix_rag_postings_scan alone
    sa.Column("doc_pk", _RefId, nullable=False),
    sa.Column("n_terms", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("collection_id", "term", "chunk_pk", name="rag_postings_pkey"),
    sa.ForeignKeyConstraint(
        ["chunk_pk"], ["rag_chunks.id"], ondelete="CASCADE", name="rag_postings_chunk_pk_fkey"
    ),
    sa.Index("ix_rag_postings_chunk", "chunk_pk"),
    sa.Index("ix_rag_postings_scan", "collection_id", "term",
             postgresql_include=["chunk_pk", "tf", "doc_pk", "n_terms"]),
    info={_ONLY_ON: ("postgresql",)},
)


# Review queue (lockgate.review): one row per call a person must decide (or that a policy
# auto-approved). Times are unix seconds (Double) so SLA and claim checks are plain comparisons
# on both backends; JSON documents are Text (orjson).
_Seconds: sa.types.TypeEngine[float] = sa.Double().with_variant(sa.REAL(), "sqlite")
review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("task", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("source_ref", sa.String(), nullable=True),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("created_at", _Seconds, nullable=False),
    sa.Column("updated_at", _Seconds, nullable=False),
    sa.Column("team", sa.String(), nullable=True),
    sa.Column("request_id", sa.String(), nullable=True, index=True),
    sa.Column("key_id", sa.String(), nullable=True),
    sa.Column("team_id", sa.String(), nullable=True),
    sa.Column("model", sa.String(), nullable=True),
    sa.Column("deployment", sa.String(), nullable=True),
    sa.Column("confidence", _Seconds, nullable=True),
    sa.Column("input", sa.Text(), nullable=True),
    sa.Column("output", sa.Text(), nullable=True),
    sa.Column("details", sa.Text(), nullable=True),
    sa.Column("fingerprint", sa.Text(), nullable=True),
    sa.Column("sla_due_at", _Seconds, nullable=False),
    sa.Column("sla_breached", sa.Boolean(), nullable=False),
    sa.Column("escalate_to", sa.String(), nullable=True),
    sa.Column("escalations", sa.Integer(), nullable=False),
    sa.Column("claimed_by", sa.String(), nullable=True),
    sa.Column("claim_until", _Seconds, nullable=True),
    sa.Column("decision", sa.Text(), nullable=True),
    sa.Column("decided_by", sa.String(), nullable=True),
    sa.Column("decided_at", _Seconds, nullable=True),
    sa.Column("resumed_at", _Seconds, nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Index("ix_review_items_state_team_created", "state", "team", "created_at", "id"),
    sa.Index("ix_review_items_state_sla", "state", "sla_due_at"),
    sa.Index("ix_review_items_state_created", "state", "created_at", "id"),
    sa.Index("ix_review_items_task_decided", "task", "decided_at"),
    sa.Index("ix_review_items_source_ref", "source_ref"),
)

# ------------------------------------------------- alerts, feedback (lockgate.alerts, .feedback)
# Alembic revision 0005. ``alerts.open_key`` is ``<kind>|<subject>`` while the incident is
# open or acknowledged and NULL once resolved: its UNIQUE constraint is what makes N
# processes raising the same incident produce one row (NULLs never collide).

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    sa.Column("open_key", sa.String(), nullable=True, unique=True),
    sa.Column("state", sa.String(), nullable=False, index=True),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.Column("raised_count", sa.Integer(), nullable=False),
    sa.Column("raised_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("acked_at", UTCDateTime(), nullable=True),
    sa.Column("acked_by", sa.String(), nullable=True),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("delivery", sa.String(), nullable=True),
)

# One row per piece of feedback on a call (API thumbs/score/comment/correction/outcome,
# or a reviewer's decision). task/model/deployment/versions are copied from the call's
# audit row (and the caller) so quality reports need no join.
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("feedback_id", sa.String(), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("request_id", sa.String(), nullable=True, index=True),
    sa.Column("review_id", sa.String(), nullable=True, index=True),
    sa.Column("job_id", sa.String(), nullable=True, index=True),
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
    sa.Index("ix_feedback_quality", "task", "model", "deployment"),
)

# Leases of singleton background loops (the drift monitor): one holder at a time across
# processes, and the holder's progress (row-id cursors) so a successor resumes there.
monitor_leases = sa.Table(
    "monitor_leases",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("owner", sa.String(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
    sa.Column("cursor", sa.JSON(), nullable=False),
)


def schema_filter(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic ``include_object`` for ``dialect``: what this metadata manages there.

    Leaves out tables of another backend only (rag_postings on SQLite), the
    per-collection FTS5 tables lockgate.rag makes at run time and the job queue's own
    tables (``lockgate_jobs``, ``lockgate_jobs_outbox``: the queue creates them itself
    when it lives in the store's database, its default).
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ != "table":
            return True
        if name and name.startswith((RAG_FTS_PREFIX, JOB_QUEUE_PREFIX)):
            return False
        only_on = obj.info.get(_ONLY_ON) if isinstance(obj, sa.Table) else None
        return only_on is None or dialect in only_on

    return include


# ---------------------------------------------------------------- Batch API (lockgate.jobs)
# Files and batches of the OpenAI Batch API live in the store, so every gateway and worker
# sharing it serves any file or batch. Times are Unix seconds (integers, as the API shows
# them). A batch's record is its public JSON; status and owner are columns for filtering
# and row locks (``SELECT ... FOR UPDATE``) serialise status changes.

batch_files = sa.Table(
    "batch_files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("filename", sa.Text(), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.BigInteger(), nullable=False, index=True),
    sa.Column("owner_key_id", sa.String(), nullable=True, index=True),
    sa.Column("owner_team_id", sa.String(), nullable=True),
    sa.Column("owner", sa.Text(), nullable=True),  # JSON: the uploader's principal
    # output/error files of a batch: content is the batch's result lines of that kind
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # upload | output | errors
)

# An uploaded file's content, in chunks of at most 1 MiB.
batch_file_chunks = sa.Table(
    "batch_file_chunks",
    metadata,
    sa.Column("file_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("record", sa.Text(), nullable=False),  # JSON: the Batch object + private fields
    sa.Column("owner_key_id", sa.String(), nullable=True, index=True),
    sa.Column("owner_team_id", sa.String(), nullable=True),
    sa.Column("created_at", sa.BigInteger(), nullable=False, index=True),
    sa.Column("expires_at", sa.BigInteger(), nullable=False),
)

# One row per finished request line: the checkpoint a re-delivered batch job resumes from.
batch_results = sa.Table(
    "batch_results",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("custom_id", sa.Text(), primary_key=True),
    sa.Column("line_no", sa.Integer(), nullable=False),
    sa.Column("ok", sa.Boolean(), nullable=False),
    sa.Column("line", sa.Text(), nullable=False),  # the output/error file's JSON line
)
