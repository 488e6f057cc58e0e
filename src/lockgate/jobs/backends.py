"""Which job queue backend a URL names: :func:`open_queue`.

The backends import only the contract in :mod:`lockgate.jobs.queue`; this module
sits above them (each is imported on demand, so a SQLite deployment never loads
asyncpg, redis or nats).
"""

from __future__ import annotations

from lockgate.jobs.queue import JobQueue, QueueOptions

__all__ = ["open_queue"]


def open_queue(url: str, options: QueueOptions | None = None) -> JobQueue:
    """Build (not yet connect) the backend for ``url``; call ``await q.open()``.

    * ``sqlite:///path/jobs.db`` (``sqlite+aiosqlite://`` accepted) — embedded default;
    * ``postgresql://user@host:5432/db?schema=name`` — ``FOR UPDATE SKIP LOCKED``;
    * ``redis://host:6379/0?prefix=name`` — Redis Streams + consumer group;
    * ``nats://host:4222?prefix=name`` — NATS JetStream (streams + a KV bucket).
    """
    opts = options or QueueOptions()
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        from lockgate.jobs.sqlite_queue import SqliteQueue

        return SqliteQueue(url, opts)
    if scheme.startswith(("postgresql", "postgres")):
        from lockgate.jobs.postgres_queue import PostgresQueue

        return PostgresQueue(url, opts)
    if scheme in ("redis", "rediss"):
        from lockgate.jobs.redis_queue import RedisQueue

        return RedisQueue(url, opts)
    if scheme in ("nats", "tls"):
        from lockgate.jobs.nats_queue import NatsQueue

        return NatsQueue(url, opts)
    raise ValueError(
        f"unsupported job queue URL {url!r}: use sqlite:///..., postgresql://..., redis://..."
        " or nats://..."
    )
