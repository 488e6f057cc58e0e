"""Queue logic shared by the SQL backends (SQLite and PostgreSQL).

Everything is one table. A job can be claimed when it is ``queued`` and due,
or ``running`` with an expired lease, and — when it has a partition key — it
is the *head of its partition*: no active (queued/running) job with the same
key was submitted before it. Subclasses supply the connection, the
transaction discipline (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``FOR UPDATE
SKIP LOCKED``) and the DDL. Queries are written with ``?`` placeholders.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from lockgate.jobs.model import (
    Delivery,
    EnqueueResult,
    Job,
    JobGone,
    JobNotFound,
    JobState,
    NewJob,
    QueueFull,
    QueueStats,
    WebhookDelivery,
    WebhookOutcome,
    backoff_delay,
    new_delivery_id,
    new_job_id,
)
from lockgate.jobs.queue import QueueOptions

__all__ = ["SqlQueue", "SqlTx"]

Row = Mapping[str, Any]

COLUMNS = (
    "id, task, input, idempotency_key, partition_key, priority, state, attempts, max_attempts,"
    " run_after, lease_owner, lease_until, result, last_error, errors, created_at, updated_at,"
    " finished_at, expires_at, webhook_url, webhook_status, meta, seq"
)

CLAIMABLE = """(
  (j.state = 'queued' AND j.run_after <= ?)
  OR (j.state = 'running' AND j.lease_until <= ? AND j.attempts < j.max_attempts)
) AND (j.partition_key IS NULL OR NOT EXISTS (
  SELECT 1 FROM {t} p WHERE p.partition_key = j.partition_key
    AND p.state IN ('queued', 'running') AND p.seq < j.seq
))"""


SWEEP_INTERVAL = 0.1
"""Seconds between dead-letter sweeps of expired last-attempt leases (per queue client)."""


class SqlTx(abc.ABC):
    """One open transaction (or autocommit connection)."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the affected row count."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


OUTBOX_COLUMNS = "id, job_id, event, url, state, attempts, last_error, created_at"

EVENTS = {"succeeded": "job.completed", "dead": "job.failed", "cancelled": "job.cancelled"}
"""The webhook event a job's final state sends."""


def row_to_delivery(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        job_id=row["job_id"],
        event=row["event"],
        url=row["url"],
        attempts=int(row["attempts"]),
        state=row["state"],
        last_error=row["last_error"],
        created_at=float(row["created_at"]),
    )


def row_to_job(row: Row) -> Job:
    return Job(
        id=row["id"],
        task=row["task"],
        input=_loads(row["input"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        created_at=float(row["created_at"]),
        idempotency_key=row["idempotency_key"],
        partition_key=row["partition_key"],
        priority=int(row["priority"]),
        run_after=float(row["run_after"]),
        lease_owner=row["lease_owner"],
        lease_until=None if row["lease_until"] is None else float(row["lease_until"]),
        result=_loads(row["result"]),
        last_error=row["last_error"],
        errors=list(_loads(row["errors"]) or []),
        finished_at=None if row["finished_at"] is None else float(row["finished_at"]),
        expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
        webhook_url=row["webhook_url"],
        webhook_status=row["webhook_status"],
        meta=dict(_loads(row["meta"]) or {}),
    )


class SqlQueue(abc.ABC):
    """A :class:`~lockgate.jobs.queue.JobQueue` over one SQL table."""

    table = "lockgate_jobs"
    skip_locked = ""
    """Appended to the claim sub-select (PostgreSQL: ``FOR UPDATE OF j SKIP LOCKED``)."""

    def __init__(self, url: str, options: QueueOptions) -> None:
        self.url = url
        self.options = options
        self._depth_cache: tuple[int, float] | None = None
        self._last_sweep = 0.0

    # ------------------------------------------------------------ backend hooks

    @abc.abstractmethod
    def _tx(self, *, write: bool = True, atomic: bool = True) -> AbstractAsyncContextManager[SqlTx]:
        """A transaction (``write``: take the write lock up front); ``atomic=False``: one
        statement in autocommit mode, no BEGIN/COMMIT round trips."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    @abc.abstractmethod
    async def drop(self) -> None: ...

    # ------------------------------------------------------------ helpers

    def _q(self, sql: str) -> str:
        return sql.replace("{t}", self.table)

    async def _one(self, tx: SqlTx, job_id: str) -> Row | None:
        rows = await tx.fetch(self._q(f"SELECT {COLUMNS} FROM {{t}} WHERE id = ?"), job_id)
        return rows[0] if rows else None

    async def _depth(self, tx: SqlTx, now: float) -> int:
        cached = self._depth_cache
        if cached is not None and now - cached[1] < 0.5:
            return cached[0]
        rows = await tx.fetch(self._q("SELECT COUNT(*) AS n FROM {t} WHERE state = 'queued'"))
        depth = int(rows[0]["n"])
        self._depth_cache = (depth, now)
        return depth

    def _bump_depth(self, delta: int) -> None:
        if self._depth_cache is not None:
            self._depth_cache = (max(0, self._depth_cache[0] + delta), self._depth_cache[1])

    # ------------------------------------------------------------ enqueue / read

    async def _by_key(self, key: str) -> Job | None:
        async with self._tx(write=False, atomic=False) as tx:
            rows = await tx.fetch(
                self._q(f"SELECT {COLUMNS} FROM {{t}} WHERE idempotency_key = ?"), key
            )
        return row_to_job(rows[0]) if rows else None

    async def enqueue(self, new: NewJob) -> EnqueueResult:
        # single statements in autocommit: the unique index on idempotency_key settles races
        now = time.time()
        async with self._tx(write=False, atomic=False) as tx:
            depth = await self._depth(tx, now)
        if depth >= self.options.max_depth:
            if new.idempotency_key is not None:
                existing = await self._by_key(new.idempotency_key)
                if existing is not None:
                    return EnqueueResult(existing, created=False)
            raise QueueFull(depth, self.options.max_depth, self.options.full_retry_after)
        async with self._tx(atomic=False) as tx:
            rows = await tx.fetch(
                self._q(
                    "INSERT INTO {t} (id, task, input, idempotency_key, partition_key, priority,"
                    " state, attempts, max_attempts, run_after, errors, created_at, updated_at,"
                    " webhook_url, webhook_status, meta) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?,"
                    " ?, '[]', ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING"
                    f" RETURNING {COLUMNS}"
                ),
                new_job_id(),
                new.task,
                _dumps(new.input),
                new.idempotency_key,
                new.partition_key,
                int(new.priority),
                int(new.max_attempts),
                float(new.run_after if new.run_after is not None else now),
                now,
                now,
                new.webhook_url,
                "waiting" if new.webhook_url else None,
                _dumps(new.meta),
            )
        if not rows:  # the idempotency key exists: same job, nothing queued
            assert new.idempotency_key is not None
            existing = await self._by_key(new.idempotency_key)
            if existing is None:  # purged between the two statements
                raise JobNotFound(new.idempotency_key)
            return EnqueueResult(existing, created=False)
        self._bump_depth(1)
        return EnqueueResult(row_to_job(rows[0]), created=True)

    async def get(self, job_id: str) -> Job:
        async with self._tx(write=False, atomic=False) as tx:
            row = await self._one(tx, job_id)
        if row is None:
            raise JobNotFound(job_id)
        job = row_to_job(row)
        if job.state == "expired" or (job.expires_at is not None and job.expires_at <= time.time()):
            raise JobGone(job_id)
        return job

    # ------------------------------------------------------------ claim / lease

    async def _dead_letter_expired(self, tx: SqlTx, now: float) -> None:
        """Leases that expired on a job's last attempt: dead-letter, do not rerun."""
        rows = await tx.fetch(
            self._q(
                "SELECT id, attempts, errors, webhook_url FROM {t} j WHERE j.state = 'running'"
                " AND j.lease_until <= ? AND j.attempts >= j.max_attempts"
                + (" FOR UPDATE SKIP LOCKED" if self.skip_locked else "")
            ),
            now,
        )
        for row in rows:
            error = f"lease expired on attempt {row['attempts']} (worker lost)"
            errors = [*(_loads(row["errors"]) or []), error]
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'dead', last_error = ?, errors = ?, finished_at = ?,"
                    " updated_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?"
                    " AND state = 'running'"
                ),
                error,
                _dumps(errors),
                now,
                now,
                row["id"],
            )
            if n and row["webhook_url"]:
                await self._outbox_add(tx, row["id"], row["webhook_url"], "dead", now)

    async def claim(self, worker_id: str, *, limit: int = 1, lease: float = 30.0) -> list[Delivery]:
        now = time.time()
        until = now + lease
        async with self._tx() as tx:
            if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL:
                self._last_sweep = time.monotonic()
                await self._dead_letter_expired(tx, now)
            rows = await tx.fetch(
                self._q(
                    "UPDATE {t} SET state = 'running', attempts = attempts + 1, lease_owner = ?,"
                    " lease_until = ?, updated_at = ? WHERE id IN (SELECT j.id FROM {t} j WHERE "
                    + CLAIMABLE
                    + " ORDER BY j.priority DESC, j.seq LIMIT ? "
                    + self.skip_locked
                    + f") RETURNING {COLUMNS}"
                ),
                worker_id,
                until,
                now,
                now,
                now,
                int(limit),
            )
        rows = sorted(rows, key=lambda r: (-int(r["priority"]), int(r["seq"])))
        self._bump_depth(-len(rows))
        return [Delivery(row_to_job(r), worker_id, until, token=r["id"]) for r in rows]

    async def heartbeat(self, delivery: Delivery, lease: float) -> bool:
        now = time.time()
        async with self._tx(atomic=False) as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET lease_until = ?, updated_at = ? WHERE id = ?"
                    " AND state = 'running' AND lease_owner = ?"
                ),
                now + lease,
                now,
                delivery.job.id,
                delivery.worker_id,
            )
        if n:
            delivery.lease_until = now + lease
        return n > 0

    async def complete(self, delivery: Delivery, result: Any) -> bool:
        now = time.time()
        url = delivery.job.webhook_url
        # with a webhook: result and outbox entry in one transaction (nothing lost on a crash)
        async with self._tx(atomic=url is not None) as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'succeeded', result = ?, finished_at = ?,"
                    " expires_at = ?, updated_at = ?, lease_owner = NULL, lease_until = NULL"
                    " WHERE id = ? AND state = 'running'"
                ),
                _dumps(result),
                now,
                now + self.options.result_ttl,
                now,
                delivery.job.id,
            )
            if n and url:
                await self._outbox_add(tx, delivery.job.id, url, "succeeded", now)
        return n > 0

    async def park(self, delivery: Delivery, note: Any) -> bool:
        now = time.time()
        async with self._tx(atomic=False) as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'awaiting_review', result = ?, updated_at = ?,"
                    " lease_owner = NULL, lease_until = NULL"
                    " WHERE id = ? AND state = 'running' AND lease_owner = ?"
                ),
                _dumps(note),
                now,
                delivery.job.id,
                delivery.worker_id,
            )
        return n > 0

    async def finish_review(self, job_id: str, result: Any, error: str | None) -> Job | None:
        now = time.time()
        async with self._tx() as tx:  # the new state and its webhook in one transaction
            row = await self._one(tx, job_id)
            if row is None or row["state"] != "awaiting_review":
                return None
            if error is None:
                await tx.execute(
                    self._q(
                        "UPDATE {t} SET state = 'succeeded', result = ?, finished_at = ?,"
                        " expires_at = ?, updated_at = ? WHERE id = ?"
                    ),
                    _dumps(result),
                    now,
                    now + self.options.result_ttl,
                    now,
                    job_id,
                )
            else:
                errors = [*(_loads(row["errors"]) or []), error]
                await tx.execute(
                    self._q(
                        "UPDATE {t} SET state = 'dead', last_error = ?, errors = ?,"
                        " finished_at = ?, updated_at = ? WHERE id = ?"
                    ),
                    error,
                    _dumps(errors),
                    now,
                    now,
                    job_id,
                )
            if row["webhook_url"]:
                await self._outbox_add(tx, job_id, row["webhook_url"],
                                       "dead" if error else "succeeded", now)
        return await self.get(job_id)

    async def fail(
        self, delivery: Delivery, error: str, *, retry_in: float = 0.0, permanent: bool = False
    ) -> JobState:
        now = time.time()
        async with self._tx() as tx:
            row = await self._one(tx, delivery.job.id)
            if row is None:
                raise JobNotFound(delivery.job.id)
            if row["state"] != "running" or row["lease_owner"] != delivery.worker_id:
                return row["state"]  # type: ignore[no-any-return]  # stale delivery
            attempts = int(row["attempts"])
            errors = [*(_loads(row["errors"]) or []), error]
            if permanent or attempts >= int(row["max_attempts"]):
                await tx.execute(
                    self._q(
                        "UPDATE {t} SET state = 'dead', last_error = ?, errors = ?,"
                        " finished_at = ?, updated_at = ?, lease_owner = NULL,"
                        " lease_until = NULL WHERE id = ?"
                    ),
                    error,
                    _dumps(errors),
                    now,
                    now,
                    delivery.job.id,
                )
                if row["webhook_url"]:
                    await self._outbox_add(tx, delivery.job.id, row["webhook_url"], "dead", now)
                return "dead"
            delay = max(
                retry_in,
                backoff_delay(
                    attempts, base=self.options.backoff_base, cap=self.options.backoff_cap
                ),
            )
            await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'queued', last_error = ?, errors = ?, run_after = ?,"
                    " updated_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?"
                ),
                error,
                _dumps(errors),
                now + delay,
                now,
                delivery.job.id,
            )
        self._bump_depth(1)
        return "queued"

    async def release(self, delivery: Delivery) -> None:
        now = time.time()
        async with self._tx(atomic=False) as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'queued', attempts = attempts - 1, run_after = ?,"
                    " updated_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?"
                    " AND state = 'running' AND lease_owner = ?"
                ),
                now,
                now,
                delivery.job.id,
                delivery.worker_id,
            )
        self._bump_depth(n)

    async def cancel(self, job_id: str) -> Job:
        now = time.time()
        async with self._tx() as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'cancelled', finished_at = ?, updated_at = ?,"
                    " expires_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?"
                    " AND state IN ('queued', 'running')"
                ),
                now,
                now,
                now + self.options.result_ttl,
                job_id,
            )
            row = await self._one(tx, job_id)
            if n and row is not None and row["webhook_url"]:
                await self._outbox_add(tx, job_id, row["webhook_url"], "cancelled", now)
                row = await self._one(tx, job_id)
        if row is None:
            raise JobNotFound(job_id)
        self._depth_cache = None
        return row_to_job(row)

    # ------------------------------------------------------------ dead letters

    async def dlq_list(self, limit: int = 100) -> list[Job]:
        async with self._tx(write=False, atomic=False) as tx:
            rows = await tx.fetch(
                self._q(
                    f"SELECT {COLUMNS} FROM {{t}} WHERE state = 'dead'"
                    " ORDER BY finished_at DESC LIMIT ?"
                ),
                int(limit),
            )
        return [row_to_job(r) for r in rows]

    async def dlq_retry(self, job_id: str) -> Job:
        now = time.time()
        async with self._tx() as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'queued', attempts = 0, run_after = ?, updated_at = ?,"
                    " finished_at = NULL WHERE id = ? AND state = 'dead'"
                ),
                now,
                now,
                job_id,
            )
            row = await self._one(tx, job_id)
        if row is None:
            raise JobNotFound(job_id)
        self._bump_depth(n)
        return row_to_job(row)

    async def dlq_purge(self, job_id: str | None = None) -> int:
        async with self._tx(atomic=False) as tx:
            if job_id is None:
                return await tx.execute(self._q("DELETE FROM {t} WHERE state = 'dead'"))
            return await tx.execute(
                self._q("DELETE FROM {t} WHERE state = 'dead' AND id = ?"), job_id
            )

    # ------------------------------------------------------------ housekeeping

    async def expire_results(self) -> int:
        now = time.time()
        async with self._tx(atomic=False) as tx:
            return await tx.execute(
                self._q(
                    "UPDATE {t} SET state = 'expired', result = NULL, input = 'null',"
                    " updated_at = ? WHERE expires_at <= ? AND state IN ('succeeded','cancelled')"
                ),
                now,
                now,
            )

    async def forget(self, before: float) -> int:
        async with self._tx(atomic=False) as tx:
            return await tx.execute(
                self._q("DELETE FROM {t} WHERE state = 'expired' AND expires_at < ?"), before
            )

    async def set_webhook_status(self, job_id: str, status: str) -> None:
        async with self._tx(atomic=False) as tx:
            await tx.execute(
                self._q("UPDATE {t} SET webhook_status = ? WHERE id = ?"), status, job_id
            )

    # ------------------------------------------------------------ webhook outbox

    async def _outbox_add(self, tx: SqlTx, job_id: str, url: str, state: str, now: float) -> None:
        await tx.execute(
            self._q(
                "INSERT INTO {t}_outbox (id, job_id, event, url, state, attempts, next_at,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)"
            ),
            new_delivery_id(),
            job_id,
            EVENTS[state],
            url,
            now,
            now,
            now,
        )
        await tx.execute(
            self._q("UPDATE {t} SET webhook_status = 'pending' WHERE id = ?"), job_id
        )

    async def webhooks_due(
        self, owner: str, *, limit: int = 10, lease: float = 30.0
    ) -> list[WebhookDelivery]:
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if self.skip_locked else ""
        async with self._tx() as tx:
            rows = await tx.fetch(
                self._q(
                    "UPDATE {t}_outbox SET next_at = ?, attempts = attempts + 1, updated_at = ?"
                    " WHERE id IN (SELECT id FROM {t}_outbox WHERE state = 'pending'"
                    f" AND next_at <= ? ORDER BY next_at LIMIT ?{lock})"
                    f" RETURNING {OUTBOX_COLUMNS}"
                ),
                now + lease,
                now,
                now,
                int(limit),
            )
        return [row_to_delivery(r) for r in rows]

    async def webhook_settle(
        self,
        delivery: WebhookDelivery,
        outcome: WebhookOutcome,
        status: str,
        *,
        retry_at: float = 0.0,
        error: str | None = None,
    ) -> None:
        now = time.time()
        state = "pending" if outcome == "retry" else outcome
        async with self._tx() as tx:
            n = await tx.execute(
                self._q(
                    "UPDATE {t}_outbox SET state = ?, next_at = ?, last_error = ?, updated_at = ?"
                    " WHERE id = ? AND state = 'pending'"
                ),
                state,
                retry_at if outcome == "retry" else now,
                error,
                now,
                delivery.id,
            )
            if n:
                await tx.execute(
                    self._q("UPDATE {t} SET webhook_status = ? WHERE id = ?"),
                    status,
                    delivery.job_id,
                )

    async def webhook_dlq_list(self, limit: int = 100) -> list[WebhookDelivery]:
        async with self._tx(write=False, atomic=False) as tx:
            rows = await tx.fetch(
                self._q(
                    f"SELECT {OUTBOX_COLUMNS} FROM {{t}}_outbox WHERE state = 'dead'"
                    " ORDER BY updated_at DESC LIMIT ?"
                ),
                int(limit),
            )
        return [row_to_delivery(r) for r in rows]

    async def webhook_dlq_retry(self, delivery_id: str) -> WebhookDelivery:
        now = time.time()
        async with self._tx() as tx:
            rows = await tx.fetch(
                self._q(
                    "UPDATE {t}_outbox SET state = 'pending', attempts = 0, next_at = ?,"
                    " updated_at = ? WHERE id = ? AND state = 'dead'"
                    f" RETURNING {OUTBOX_COLUMNS}"
                ),
                now,
                now,
                delivery_id,
            )
            if rows:
                await tx.execute(
                    self._q("UPDATE {t} SET webhook_status = 'pending' WHERE id = ?"),
                    rows[0]["job_id"],
                )
        if not rows:
            raise JobNotFound(delivery_id)
        return row_to_delivery(rows[0])

    async def stats(self) -> QueueStats:
        now = time.time()
        async with self._tx(write=False, atomic=False) as tx:
            rows = await tx.fetch(
                self._q(
                    "SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM {t}"
                    " WHERE state IN ('queued', 'running', 'dead') GROUP BY state"
                )
            )
        by: dict[str, Row] = {r["state"]: r for r in rows}
        queued = by.get("queued")
        return QueueStats(
            depth=int(queued["n"]) if queued else 0,
            oldest_age=max(0.0, now - float(queued["oldest"])) if queued else 0.0,
            in_flight=int(by["running"]["n"]) if "running" in by else 0,
            dlq=int(by["dead"]["n"]) if "dead" in by else 0,
        )
