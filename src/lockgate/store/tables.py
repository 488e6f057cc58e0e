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
    "agent_defs",
    "agent_grants",
    "agent_runs",
    "agent_steps",
    "agent_tool_pins",
    "agent_tool_sources",
    "alerts",
    "api_keys",
    "audit_archives",
    "audit_chain",
    "batch_file_chunks",
    "batch_files",
    "batch_results",
    "batches",
    "cdc_applied",
    "cdc_dead",
    "console_rollup_cursor",
    "console_rollups",
    "console_sessions",
    "facade_calls",
    "feedback",
    "kg_entities",
    "kg_mentions",
    "kg_relations",
    "metadata",
    "mining_events",
    "mining_logs",
    "monitor_leases",
    "rag_chunks",
    "rag_collections",
    "rag_doc_principals",
    "rag_documents",
    "rag_postings",
    "rag_term_stats",
    "review_items",
    "review_webhooks",
    "schema_filter",
    "shadow_results",
    "teams",
    "usage_records",
    "widget_tokens",
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

# Audit rows moved out of usage_records into compressed JSONL files (lockgate.store.archive):
# one row per file, in chain order; the last one's (last_seq, last_hash) is where the live
# chain continues. Migration 0010.
audit_archives = sa.Table(
    "audit_archives",
    metadata,
    sa.Column("first_seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger(), nullable=False, unique=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("rows", sa.BigInteger(), nullable=False),
    sa.Column("file", sa.String(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("oldest_at", UTCDateTime(), nullable=False),
    sa.Column("newest_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
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
    # copied from the chunk (0011): BM25 is scored from the primary key alone (0018: it
    # covers tf, doc_pk and n_terms; no second term index, no foreign key to rag_chunks:
    # lockgate.rag deletes postings before their chunks)
    sa.Column("doc_pk", _RefId, nullable=False),
    sa.Column("n_terms", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("collection_id", "term", "chunk_pk", name="rag_postings_pkey",
                            postgresql_include=["tf", "doc_pk", "n_terms"]),
    sa.Index("ix_rag_postings_chunk", "chunk_pk"),
    info={_ONLY_ON: ("postgresql",)},
)

# Each term's BM25 statistics per collection, kept by lockgate.rag in the write
# transaction of its postings (0019): df and multi (postings with tf > 1) exact, max_tf
# and min_dl bounds (a delete leaves them); queries read them by primary key.
rag_term_stats = sa.Table(
    "rag_term_stats",
    metadata,
    sa.Column("collection_id", _RefId, nullable=False),
    sa.Column("term", sa.Text(), nullable=False),
    sa.Column("df", sa.Integer(), nullable=False),
    sa.Column("max_tf", sa.Integer(), nullable=False),
    sa.Column("min_dl", sa.Integer(), nullable=False),
    sa.Column("multi", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("collection_id", "term", name="rag_term_stats_pkey"),
    info={_ONLY_ON: ("postgresql",)},
    postgresql_with={"fillfactor": 50},  # HOT updates: ingest rewrites thousands per batch
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

# Alembic revision 0020: the review webhooks' outbox (lockgate.review.webhook_outbox). A row
# is written in the transaction of the change it reports; ``state`` pending -> delivered or
# dead; a sender holds it by ``lease_owner`` / ``lease_until`` while it posts.
review_webhooks = sa.Table(
    "review_webhooks",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("item_id", sa.String(), nullable=False),
    sa.Column("event", sa.String(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=True),
    sa.Column("created_at", _Seconds, nullable=False),
    sa.Column("due_at", _Seconds, nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("lease_owner", sa.String(), nullable=True),
    sa.Column("lease_until", _Seconds, nullable=True),
    sa.Index("ix_review_webhooks_state_due", "state", "due_at"),
    sa.Index("ix_review_webhooks_item", "item_id"),
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


# ------------------------------------------- process mining (lockgate.mining), revision 0013
# Imported event logs (CSV/XES or snapshots of lockgate's own records). Times are Unix
# seconds (Double) so mining reads plain numbers on both backends.

mining_logs = sa.Table(
    "mining_logs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("n_events", sa.BigInteger(), nullable=False),
    sa.Column("n_cases", sa.BigInteger(), nullable=False),
)

mining_events = sa.Table(
    "mining_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("log_id", _RefId, sa.ForeignKey("mining_logs.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("case_id", sa.Text(), nullable=False),
    sa.Column("activity", sa.Text(), nullable=False),
    sa.Column("ts", _Real, nullable=False),
    sa.Column("start_ts", _Real, nullable=True),
    sa.Column("resource", sa.Text(), nullable=True),
    sa.Index("ix_mining_events_log_case", "log_id", "case_id", "ts", "id"),
)

# ------------------------------------- knowledge graph of RAG collections (lockgate.kg), 0013
# Entities are names per collection; every mention and relation row names the chunk and the
# document it was extracted from and is read only through that document's ACL
# (rag_doc_principals), so a graph fact is never more visible than its source passage.
# Deleting or replacing a document deletes its mentions and relations (ON DELETE CASCADE).

kg_entities = sa.Table(
    "kg_entities",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("collection_id", _RefId,
              sa.ForeignKey("rag_collections.id", ondelete="CASCADE"), nullable=False),
    sa.Column("norm", sa.Text(), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.UniqueConstraint("collection_id", "norm"),
)

kg_mentions = sa.Table(
    "kg_mentions",
    metadata,
    sa.Column("entity_id", _RefId, sa.ForeignKey("kg_entities.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("chunk_pk", _RefId, sa.ForeignKey("rag_chunks.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("doc_pk", _RefId, sa.ForeignKey("rag_documents.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("collection_id", _RefId, nullable=False),
    sa.Index("ix_kg_mentions_chunk_pk", "chunk_pk"),
    sa.Index("ix_kg_mentions_doc_pk", "doc_pk"),
)

kg_relations = sa.Table(
    "kg_relations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("collection_id", _RefId, nullable=False),
    sa.Column("subject_id", _RefId, sa.ForeignKey("kg_entities.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("predicate", sa.String(80), nullable=False),
    sa.Column("object_id", _RefId, sa.ForeignKey("kg_entities.id", ondelete="CASCADE"),
              nullable=False),
    # the names as this passage writes them (an entity's stored name may come from another,
    # less visible passage)
    sa.Column("subject_name", sa.Text(), nullable=False),
    sa.Column("object_name", sa.Text(), nullable=False),
    sa.Column("chunk_pk", _RefId, sa.ForeignKey("rag_chunks.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("doc_pk", _RefId, sa.ForeignKey("rag_documents.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("evidence", sa.Text(), nullable=False),
    sa.Index("ix_kg_relations_subject", "subject_id"),
    sa.Index("ix_kg_relations_object", "object_id"),
    sa.Index("ix_kg_relations_chunk_pk", "chunk_pk"),
    sa.Index("ix_kg_relations_doc_pk", "doc_pk"),
)


# ------------------------------------------------------- console (lockgate.console), revision 0009
# Sign-in sessions of the web console: only the sha256 of the cookie value is stored, never a
# key. Times are unix seconds.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(), nullable=False),
    sa.Column("team_id", sa.String(), nullable=True),
    sa.Column("team_name", sa.String(), nullable=True),
    sa.Column("is_master", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False, index=True),
)

# Short-lived tokens of the embeddable assistant panel, minted by a team key: bound to an
# origin, a model (or rag/<collection>), an end user and an expiry. Only the hash is stored.
widget_tokens = sa.Table(
    "widget_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(), nullable=False),
    sa.Column("team_id", sa.String(), nullable=True),
    sa.Column("origin", sa.String(), nullable=False),
    sa.Column("model", sa.String(), nullable=False),
    sa.Column("user_id", sa.String(), nullable=False),
    sa.Column("groups", sa.Text(), nullable=False),  # JSON list
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False, index=True),
)

# Per-minute (grain 60) and per-hour (grain 3600) totals of model calls per team and model,
# folded in from usage_records by id (lockgate.store.rollups); latency as a histogram
# (ROLLUP_EDGES_MS) so p50/p95 come from the rollup, not from the audit rows.
ROLLUP_BINS = 12
console_rollups = sa.Table(
    "console_rollups",
    metadata,
    sa.Column("grain", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("bucket", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("team_id", sa.String(), primary_key=True),
    sa.Column("model", sa.String(), primary_key=True),
    sa.Column("requests", sa.BigInteger(), nullable=False),
    sa.Column("errors", sa.BigInteger(), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cost", sa.Double(), nullable=False),
    sa.Column("latency_sum", sa.Double(), nullable=False),
    *[sa.Column(f"h{i}", sa.BigInteger(), nullable=False) for i in range(ROLLUP_BINS)],
)

# How far the rollups have read usage_records (one row, id 1).
console_rollup_cursor = sa.Table(
    "console_rollup_cursor",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger(), nullable=False),
)


# ---------------------------------------------------------------- CDC (lockgate.cdc)
# A change applied by a CDC consumer (dedup by change id: ``<capture>:<epoch>:<outbox id>``),
# and a change that went to the dead-letter list (poison: out of attempts, or permanent).

cdc_applied = sa.Table(
    "cdc_applied",
    metadata,
    sa.Column("capture", sa.String(64), primary_key=True),
    sa.Column("change_id", sa.String(160), primary_key=True),
    sa.Column("applied_at", UTCDateTime(), nullable=False, index=True),
)

cdc_dead = sa.Table(
    "cdc_dead",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("capture", sa.String(64), nullable=False, index=True),
    sa.Column("change_id", sa.String(160), nullable=False, unique=True),
    sa.Column("row_key", sa.Text(), nullable=False),
    sa.Column("op", sa.String(16), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)


# ------------------------------------------------- agent runs (lockgate.agents), revision 0008
# A run is a row (its conversation so far in ``messages``, the tool calls still to do in
# ``pending``) plus one ``agent_steps`` row per model turn, tool call, approval or delegation.
# ``state`` changes are compare-and-set on (id, state, version): a paused run resumes once.

agent_runs = sa.Table(
    "agent_runs",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
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
    sa.Column("lease_owner", sa.String(), nullable=True),
    sa.Column("lease_until", _Seconds, nullable=True),
    sa.Index("ix_agent_runs_agent_created", "agent", "created_at"),
    sa.Index("ix_agent_runs_root_id", "root_id"),
    sa.Index("ix_agent_runs_review_id", "review_id"),
    sa.Index("ix_agent_runs_state_lease", "state", "lease_until"),
)

agent_steps = sa.Table(
    "agent_steps",
    metadata,
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

agent_tool_pins = sa.Table(
    "agent_tool_pins",
    metadata,
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("tool", sa.String(), nullable=False),
    sa.Column("hash", sa.String(), nullable=False),
    sa.Column("pinned_at", _Seconds, nullable=False),
    sa.PrimaryKeyConstraint("source", "tool", name="pk_agent_tool_pins"),
)

agent_defs = sa.Table(
    "agent_defs",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("spec", sa.Text(), nullable=False),
    sa.Column("updated_at", _Seconds, nullable=False),
    sa.Column("updated_by", sa.String(), nullable=True),
)

agent_tool_sources = sa.Table(
    "agent_tool_sources",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("spec", sa.Text(), nullable=False),
    sa.Column("updated_at", _Seconds, nullable=False),
    sa.Column("updated_by", sa.String(), nullable=True),
)

agent_grants = sa.Table(
    "agent_grants",
    metadata,
    sa.Column("part", sa.String(), nullable=False),
    sa.Column("subject", sa.String(), nullable=False),
    sa.Column("tools", sa.Text(), nullable=False),
    sa.Column("updated_at", _Seconds, nullable=False),
    sa.Column("updated_by", sa.String(), nullable=True),
    sa.PrimaryKeyConstraint("part", "subject", name="pk_agent_grants"),
)

# --------------------------------------------- facade calls (lockgate.facade), revision 0016
# The facades' call log, one row per batch: each facade collects its answered calls (a
# tuple each, on the request path) and hands one row per second (or per 2,000 calls) to
# the AuditWriter; ``calls`` is a JSON array of arrays (``records.FACADE_CALL_FIELDS``).
# Process mining (the ``facade`` source) expands them; ``first_at``/``last_at`` bound the
# batch's end times for window queries.

facade_calls = sa.Table(
    "facade_calls",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("facade", sa.String(), nullable=False),
    sa.Column("upstream", sa.String(), nullable=False),
    sa.Column("first_at", _Seconds, nullable=False),
    sa.Column("last_at", _Seconds, nullable=False),
    sa.Column("n_calls", sa.Integer(), nullable=False),
    sa.Column("calls", sa.Text(), nullable=False),
    sa.Index("ix_facade_calls_last_at", "last_at"),
)
