"""``server:`` (listening socket, body limit, workers) and ``audit:`` (the batched writer)."""

from __future__ import annotations

from pydantic import Field

from lockgate.settings.audit_retention import AuditRetention
from lockgate.settings.base import Strict

__all__ = ["AuditSettings", "ServerSettings"]


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=1, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    workers: int = Field(1, ge=1, le=64)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    """How long to wait for the next piece of an incomplete request body (then 408)."""


class AuditSettings(Strict):
    flush_interval_ms: int = Field(200, ge=10)
    batch_size: int = Field(500, ge=1)
    max_queue: int = Field(100_000, ge=100)
    retention: AuditRetention | None = None
    """Archive old audit rows to compressed JSONL (lockgate.settings.audit_retention)."""
