"""Persistence: teams, virtual keys and usage rows on SQLite or PostgreSQL.

Public surface::

    store = await Store.open("sqlite:///.lockgate/lockgate.db")   # or postgresql://...
    team = await store.create_team("search", business_unit="growth")
    plaintext, key = await store.create_key("search", "ci", allowed_models=["local"])
    await store.find_key(plaintext)           # ApiKey (revoked_at set if revoked) or None
    writer = AuditWriter(store); writer.start(); writer.submit(record); await writer.close()
    await store.usage_summary(team="search", since=...)
    await store.close()

See docs/store.md for tables, migrations under a lock and the writer's guarantees.
"""

from lockgate.store.audit_writer import DEFAULT_SPILL_DIR, AuditOverflow, AuditStats, AuditWriter
from lockgate.store.errors import (
    AlreadyExists,
    DatabaseUnavailable,
    InvalidInput,
    NotFoundError,
    StoreError,
    UnsupportedDatabase,
)
from lockgate.store.migrate import head_revision, run_migrations
from lockgate.store.records import ApiKey, Team, UsageRecordLike, UsageRow, hash_key
from lockgate.store.store import KEY_PREFIX, UNSET, Store
from lockgate.store.urls import to_async_url

__all__ = [
    "DEFAULT_SPILL_DIR",
    "KEY_PREFIX",
    "UNSET",
    "AlreadyExists",
    "ApiKey",
    "AuditOverflow",
    "AuditStats",
    "AuditWriter",
    "DatabaseUnavailable",
    "InvalidInput",
    "NotFoundError",
    "Store",
    "StoreError",
    "Team",
    "UnsupportedDatabase",
    "UsageRecordLike",
    "UsageRow",
    "hash_key",
    "head_revision",
    "run_migrations",
    "to_async_url",
]
