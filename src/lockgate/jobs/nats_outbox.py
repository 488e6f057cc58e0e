"""The completion-webhook outbox of :class:`lockgate.jobs.nats_queue.NatsQueue`.

Entries are KV documents ``w.<delivery id>`` (``P_kv``) changed by compare-and-set, each
announced by a message ``P.wh.<delivery id>`` in the work-queue stream ``P_W``. Taking an
entry counts an attempt and naks its message with the lease as delay, so an entry whose
deliverer died is handed out again when the lease runs out; a retry naks it until its next
attempt is due; delivered and dead entries acknowledge it (dead ones are listed in ``P_WD``,
the webhook DLQ). The delivery id is stable per finish of a job (``whd_<job>_<n>``), so a
finish whose follow-up steps are redone writes no second entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from lockgate.jobs.model import JobNotFound, WebhookDelivery, WebhookOutcome
from lockgate.jobs.nats_wire import Conn, Doc

__all__ = ["EVENTS", "NatsOutbox", "delivery_of"]

EVENTS = {"succeeded": "job.completed", "dead": "job.failed", "cancelled": "job.cancelled"}
"""The webhook event a job's final state sends."""


def delivery_of(doc: Doc) -> WebhookDelivery:
    return WebhookDelivery(
        id=doc["id"],
        job_id=doc["job_id"],
        event=doc["event"],
        url=doc["url"],
        attempts=int(doc["attempts"]),
        state=doc["state"],
        last_error=doc.get("last_error"),
        created_at=float(doc["created_at"]),
    )


class NatsOutbox:
    def __init__(self, conn: Conn, prefix: str,
                 set_status: Callable[[str, str], Awaitable[None]]) -> None:
        self.conn = conn
        self.prefix = prefix
        self.s_hooks, self.s_hooks_dead = f"{prefix}_W", f"{prefix}_WD"
        self.set_status = set_status
        self._msgs: dict[str, Msg] = {}
        """The message of each entry this client took (settling acks or naks it)."""

    async def add(self, doc: Doc) -> None:
        """The outbox entry of a job that just finished (idempotent: a stable id per finish)."""
        did = f"whd_{doc['id'][4:]}_{doc['finish_no']}"
        now = time.time()
        entry = {
            "id": did, "job_id": doc["id"], "event": EVENTS[doc["state"]],
            "url": doc["webhook_url"], "state": "pending", "attempts": 0, "last_error": None,
            "created_at": now, "updated_at": now, "next_at": now,
        }
        if await self.conn.cas.create(f"w.{did}", entry) is not None:
            await self.conn.js.publish(f"{self.prefix}.wh.{did}", did.encode())

    async def due(self, *, limit: int = 10, lease: float = 30.0) -> list[WebhookDelivery]:
        out: list[WebhookDelivery] = []
        for m in await self.conn.pulls.pull(self.s_hooks, "wh", limit):
            now = time.time()
            did = m.data.decode()
            cur = await self.conn.cas.load(f"w.{did}")
            if cur is None or cur[0]["state"] != "pending":
                await self.conn.ack(m)
                continue
            if float(cur[0]["next_at"]) > now:
                await self.conn.nak(m, delay=float(cur[0]["next_at"]) - now)
                continue

            def take(w: Doc, now: float = now) -> bool:
                if w["state"] != "pending" or float(w["next_at"]) > now:
                    return False
                w.update(attempts=int(w["attempts"]) + 1, next_at=now + lease, updated_at=now)
                return True

            after, won = await self.conn.cas.change(f"w.{did}", take, cur)
            await self.conn.nak(m, delay=lease if won else 0.05)
            if won and after is not None:
                self._msgs[did] = m
                out.append(delivery_of(after[0]))
        return out

    async def settle(
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

        def settle(w: Doc) -> bool:
            if w["state"] != "pending":
                return False
            w.update(state=state, last_error=error, updated_at=now,
                     next_at=retry_at if outcome == "retry" else now)
            return True

        _, won = await self.conn.cas.change(f"w.{delivery.id}", settle)
        msg = self._msgs.pop(delivery.id, None)
        if not won:
            return
        await self.set_status(delivery.job_id, status)
        if outcome == "dead":
            await self.conn.js.publish(f"{self.prefix}.whd.{delivery.id}", delivery.id.encode())
        if msg is not None:
            if outcome == "retry":
                await self.conn.nak(msg, delay=max(0.0, retry_at - now))
            else:
                await self.conn.ack(msg)

    async def dlq_list(self, limit: int = 100) -> list[WebhookDelivery]:
        ids = await self.conn.subject_ids(self.s_hooks_dead, f"{self.prefix}.whd")
        loaded = await asyncio.gather(*(self.conn.cas.load(f"w.{i}") for i in ids))
        dead = [c[0] for c in loaded if c and c[0]["state"] == "dead"]
        dead.sort(key=lambda w: float(w["updated_at"]), reverse=True)
        return [delivery_of(w) for w in dead[:limit]]

    async def dlq_retry(self, delivery_id: str) -> WebhookDelivery:
        now = time.time()

        def again(w: Doc) -> bool:
            if w["state"] != "dead":
                return False
            w.update(state="pending", attempts=0, next_at=now, updated_at=now)
            return True

        after, won = await self.conn.cas.change(f"w.{delivery_id}", again)
        if after is None or not won:
            raise JobNotFound(delivery_id)
        await self.conn.purge(self.s_hooks_dead, f"{self.prefix}.whd.{delivery_id}")
        await self.conn.js.publish(f"{self.prefix}.wh.{delivery_id}", delivery_id.encode())
        await self.set_status(after[0]["job_id"], "pending")
        return delivery_of(after[0])
