"""Review webhooks through an outbox: at least once, deduplicable, retried, kept when dead.

The review repository writes one ``review_webhooks`` row per ``review.created`` /
``review.escalated`` / ``review.decided`` / ``review.sla_breached`` in the same transaction
as the change (the payload is the item as it was then), so a process killed right after a
decision loses nothing. Every instance that runs the review sweeper also runs
:meth:`ReviewWebhookOutbox.run`: it takes due rows under a lease (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, the write lock on SQLite; a row whose taker died is due again when
its lease runs out), POSTs each signed, with ``X-Lockgate-Delivery: <row id>`` (the same on
every retry, so receivers drop duplicates), and records the outcome:

* 2xx -> ``delivered`` (``status`` e.g. ``delivered 200 (attempt 1)``);
* connection error, timeout, 408, 429, 5xx -> retried with exponential backoff and jitter
  until ``attempts`` are used up;
* anything else, or attempts used up -> ``dead``, kept with its last error (and logged);
  ``lockgate review webhooks list --state dead`` shows them, ``... resend`` sends again.

Delivery order between events of one item is not guaranteed (a retry may overtake a later
event): receivers order by ``review.updated_at``. Delivered rows are deleted after
``keep_delivered_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.jobs.webhooks import WebhookSender
from lockgate.review.model import ReviewItem
from lockgate.store import Store
from lockgate.store.tables import review_webhooks

__all__ = ["ReviewWebhookOutbox", "WebhookRow", "add_webhook", "resend_dead", "webhook_rows"]

log = logging.getLogger("lockgate.review.webhooks")
w = review_webhooks


@dataclass(frozen=True)
class WebhookRow:
    id: str
    item_id: str
    event: str
    payload: str
    state: str
    status: str | None
    attempts: int
    due_at: float


async def add_webhook(conn: AsyncConnection, event: str, item: ReviewItem, now: float) -> None:
    """The outbox row for ``event`` (``review.decided`` ...), in the caller's transaction."""
    row_id = "rwh_" + uuid.uuid4().hex
    payload = {"event": event, "delivery_id": row_id, "review": item.public(now)}
    await conn.execute(w.insert().values(
        id=row_id, item_id=item.id, event=event, payload=orjson.dumps(payload).decode(),
        state="pending", status="pending", created_at=now, due_at=now, attempts=0,
        lease_owner=None, lease_until=None,
    ))


def _row(m: Any) -> WebhookRow:
    return WebhookRow(id=m["id"], item_id=m["item_id"], event=m["event"], payload=m["payload"],
                      state=m["state"], status=m["status"], attempts=int(m["attempts"]),
                      due_at=float(m["due_at"]))


class ReviewWebhookOutbox:
    """Delivers the review webhooks' outbox rows to one URL (run it in every instance)."""

    def __init__(
        self,
        store: Store,
        sender: WebhookSender,
        url: str,
        *,
        attempts: int = 8,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        lease: float = 60.0,
        poll_interval: float = 1.0,
        batch: int = 16,
        keep_delivered_s: float = 7 * 86400.0,
    ) -> None:
        self.store = store
        self.sender = sender
        self.url = url
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.lease = lease
        self.poll_interval = poll_interval
        self.batch = batch
        self.keep_delivered_s = keep_delivered_s
        self.owner = f"rwh:{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._last_purge = 0.0

    def wake(self) -> None:
        """A row was just written here: deliver now instead of at the next poll."""
        self._wake.set()

    async def take_due(self, now: float | None = None) -> list[WebhookRow]:
        """Due rows, leased to this sender (their ``attempts`` already counted)."""
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            stmt = sa.select(w).where(
                w.c.state == "pending", w.c.due_at <= now,
                sa.or_(w.c.lease_until.is_(None), w.c.lease_until < now),
            ).order_by(w.c.due_at, w.c.id).limit(self.batch)
            if self.store.backend == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = [_row(m) for m in (await conn.execute(stmt)).mappings()]
            if rows:
                await conn.execute(
                    w.update().where(w.c.id.in_([r.id for r in rows])).values(
                        lease_owner=self.owner, lease_until=now + self.lease,
                        attempts=w.c.attempts + 1)
                )
        return [replace(r, attempts=r.attempts + 1) for r in rows]

    async def _settle(self, row: WebhookRow, state: str, status: str,
                      due_at: float | None = None) -> None:
        values: dict[str, Any] = {"state": state, "status": status, "lease_owner": None,
                                  "lease_until": None}
        if due_at is not None:
            values["due_at"] = due_at
        async with self.store.transaction(write=True) as conn:
            await conn.execute(w.update().where(
                w.c.id == row.id, w.c.lease_owner == self.owner, w.c.state == "pending",
            ).values(**values))

    async def deliver(self, row: WebhookRow) -> str:
        """One attempt at one row; returns its new state."""
        res = await self.sender.attempt(self.url, row.event, row.payload.encode(), row.id)
        outcome, status, retry_at = res.verdict(row.attempts, self.attempts,
                                                backoff_base=self.backoff_base,
                                                backoff_cap=self.backoff_cap)
        state = "pending" if outcome == "retry" else outcome
        await self._settle(row, state, status, due_at=retry_at or None)
        if state == "dead":
            log.warning("review webhook %s (%s, item %s) dead: %s", row.id, row.event,
                        row.item_id, res.status)
        return state

    async def run_once(self) -> int:
        """Deliver what is due now; returns how many rows were attempted."""
        rows = await self.take_due()
        if rows:
            await asyncio.gather(*(self._deliver(r) for r in rows))
        now = time.time()
        if now - self._last_purge > 600:
            self._last_purge = now
            await self.purge(now)
        return len(rows)

    async def _deliver(self, row: WebhookRow) -> None:
        try:
            await self.deliver(row)
        except Exception:  # recorded nothing: the lease runs out and the row is due again
            log.exception("review webhook %s failed unexpectedly", row.id)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                n = await self.run_once()
            except Exception:  # the database is down: back off, keep going
                log.exception("review webhook outbox poll failed")
                n = 0
            if n >= self.batch:
                continue
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waits, timeout=self.poll_interval,
                                   return_when=asyncio.FIRST_COMPLETED)
            for f in waits:
                f.cancel()

    async def purge(self, now: float | None = None) -> int:
        """Delete delivered rows older than ``keep_delivered_s``."""
        now = time.time() if now is None else now
        async with self.store.transaction(write=True) as conn:
            res = await conn.execute(w.delete().where(
                w.c.state == "delivered", w.c.created_at < now - self.keep_delivered_s))
        return int(res.rowcount or 0)

    async def rows(self, item_id: str | None = None, state: str | None = None,
                   limit: int = 100) -> list[WebhookRow]:
        return await webhook_rows(self.store, item_id=item_id, state=state, limit=limit)


async def webhook_rows(store: Store, *, item_id: str | None = None, state: str | None = None,
                       limit: int = 100) -> list[WebhookRow]:
    """Outbox rows, newest first (for operators: ``lockgate review webhooks list``)."""
    stmt = sa.select(w).order_by(w.c.created_at.desc(), w.c.id).limit(limit)
    if item_id is not None:
        stmt = stmt.where(w.c.item_id == item_id)
    if state is not None:
        stmt = stmt.where(w.c.state == state)
    async with store.transaction(write=False) as conn:
        return [_row(m) for m in (await conn.execute(stmt)).mappings()]


async def resend_dead(store: Store, row_id: str | None = None) -> int:
    """Dead rows (one, or all when ``row_id`` is None) due again now, attempts from zero;
    returns how many. A row that is not dead is left alone."""
    stmt = w.update().where(w.c.state == "dead")
    if row_id is not None:
        stmt = stmt.where(w.c.id == row_id)
    async with store.transaction(write=True) as conn:
        res = await conn.execute(stmt.values(
            state="pending", status="pending (resent)", due_at=time.time(), attempts=0,
            lease_owner=None, lease_until=None))
    return int(res.rowcount or 0)
