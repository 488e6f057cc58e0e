"""The CDC consumer: outbox change -> task through the pipeline -> write-back or event.

Each round claims up to ``concurrency`` changes (leases of ``lease`` seconds; only the
oldest change of each row, so one row's changes apply in order), runs them concurrently
and waits for a ``NOTIFY`` (PostgreSQL) or ``poll_interval`` when none is ready.

For one change:

1. dedup: a change id already in ``cdc_applied`` is dropped (its effect happened);
2. the task runs on the change's captured columns (``TaskRunner``: the pipeline);
3. the result is applied: a column of the row or a side-table row -- written together
   with the deletion of the outbox row in ONE transaction of the user's database, so it
   applies once even when the consumer dies at any point (a redelivery after the lease
   finds the row gone or redoes the whole transaction) -- or an event published under
   the change id (at-least-once: a consumer that dies after publishing republishes it under
   the same id, for the receiver's dedup);
4. the change id is recorded in ``cdc_applied``.

A DELETE (captured with ``--ops ...,delete``) does what ``on_delete`` says: ``remove``
(default; no model call) deletes the row's side-table results, ``mark`` (no model call)
adds a side-table tombstone (op ``DELETE``, result ``null``), ``task`` runs the task on the
deleted row's old values and writes its result to the side table. With a column
write-back the row and its column are gone already: nothing is written (``task`` is
refused). An event destination publishes ``{"event": "deleted", ...}`` (result ``null``
unless ``task``). Each of these consumes the change like any other: once, in row order.

A failure is retried with backoff up to ``max_attempts`` deliveries (a delivery that a
killed consumer never finished counts too), then -- or at once for a permanent error such
as a bad template input -- the change goes to the DLQ (``cdc_dead``) and leaves the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from lockgate.cdc.database import CdcDatabase
from lockgate.cdc.ledger import CdcLedger
from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.events.transports import EventTransport
from lockgate.jobs.model import backoff_delay
from lockgate.jobs.tasks import TaskRunner
from lockgate.jobs.worker import classify_error

__all__ = ["ON_DELETE", "CdcConsumer", "CdcStats", "Destination", "OnDelete", "task_transform"]

log = logging.getLogger("lockgate.cdc")

Transform = Callable[[dict[str, Any]], Awaitable[Any]]

OnDelete = Literal["remove", "mark", "task"]
ON_DELETE: tuple[str, ...] = ("remove", "mark", "task")
EVENT_NAMES = {"INSERT": "inserted", "UPDATE": "updated", "DELETE": "deleted"}


def task_transform(runner: TaskRunner, task: str, select: str | None = None) -> Transform:
    """The change's data -> the task's output (or its ``select`` field)."""
    runner.spec(task)  # unknown task: fail at start

    async def run(data: dict[str, Any]) -> Any:
        res = await runner.run(task, data)
        if select:
            if select not in res.output:
                from lockgate.jobs.tasks import TaskOutputInvalid

                raise TaskOutputInvalid(f"task output has no field '{select}'")
            return res.output[select]
        return res.output

    return run


@dataclass(frozen=True)
class Destination:
    """Exactly one of: ``column`` (of the captured row), ``side_table``, ``event`` (sink)."""

    column: str | None = None
    side_table: str | None = None
    event: EventTransport | None = None


@dataclass
class CdcStats:
    applied: int = 0
    duplicates: int = 0
    retries: int = 0
    dead: int = 0
    lost: int = 0
    """Changes another consumer finished first (our lease had run out)."""


class CdcConsumer:
    def __init__(
        self,
        db: CdcDatabase,
        ledger: CdcLedger,
        spec: CaptureSpec,
        transform: Transform,
        destination: Destination,
        *,
        concurrency: int = 8,
        lease: float = 60.0,
        max_attempts: int = 5,
        poll_interval: float = 1.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        on_delete: OnDelete = "remove",
    ) -> None:
        n = sum(x is not None for x in (destination.column, destination.side_table,
                                        destination.event))
        if n != 1:
            raise ValueError("a CDC consumer needs exactly one destination")
        if destination.column and destination.column in spec.columns:
            raise ValueError(f"write-back column '{destination.column}' is watched by capture "
                             f"'{spec.name}': results would feed back into it")
        if destination.column and destination.column in spec.key:
            raise ValueError(f"write-back column '{destination.column}' is part of the key")
        if on_delete not in ON_DELETE:
            raise ValueError(f"on_delete '{on_delete}': remove, mark or task")
        if destination.column and on_delete == "task" and "DELETE" in spec.ops:
            raise ValueError("on_delete 'task' needs a side table or an event: a deleted row "
                             "has no column to write to")
        self.db = db
        self.ledger = ledger
        self.spec = spec
        self.transform = transform
        self.destination = destination
        self.concurrency = concurrency
        self.lease = lease
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.on_delete = on_delete
        self.stats = CdcStats()
        self._prepared = False

    async def prepare(self) -> None:
        """Side table, write-back column check, event sink: once per consumer."""
        if self._prepared:
            return
        self._prepared = True
        d = self.destination
        if d.side_table:
            await self.db.ensure_side_table(d.side_table)
        if d.column and d.column not in await self.db.table_columns(self.spec.table):
            raise ValueError(f"table {self.spec.table} has no column '{d.column}'")
        if d.event is not None:
            await d.event.open()

    async def run(self, stop: asyncio.Event) -> CdcStats:
        await self.prepare()
        while not stop.is_set():
            if not await self.round():
                waiter = asyncio.ensure_future(self.db.wait(self.spec, self.poll_interval))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in (waiter, stopper):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
        return self.stats

    async def drain(self, idle_rounds: int = 1) -> CdcStats:
        """Process until nothing is ready (``lockgate cdc run --once``, tests)."""
        await self.prepare()
        idle = 0
        while idle < idle_rounds:
            if await self.round():
                idle = 0
            else:
                idle += 1
                if idle < idle_rounds:
                    await self.db.wait(self.spec, self.poll_interval)
        return self.stats

    async def round(self) -> int:
        """Claim and handle one batch; how many changes it held."""
        try:
            changes = await self.db.claim(self.spec, self.concurrency, self.lease)
        except Exception:
            log.exception("cdc claim failed (capture %s)", self.spec.name)
            return 0
        if changes:
            await asyncio.gather(*(self._one(c) for c in changes))
        return len(changes)

    async def _one(self, change: Change) -> None:
        beat = asyncio.create_task(self._keep(change))
        try:
            if await self.ledger.applied(change):
                await self.db.delete(change)
                self.stats.duplicates += 1
                return
            value = None
            if change.op != "DELETE" or self.on_delete == "task":
                value = await self.transform(change.data)
            await self._apply(change, value)
        except Exception as exc:
            await self._failed(change, exc)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _keep(self, change: Change) -> None:
        """Extend the lease every third of it while the change is being handled."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.db.extend(change, self.lease)
            except Exception:
                log.warning("cdc could not extend the lease of %s", change.change_id)

    async def _apply(self, change: Change, value: Any) -> None:
        d = self.destination
        if d.event is not None:
            await d.event.publish({"capture": change.capture, "change_id": change.change_id,
                                   "event": EVENT_NAMES.get(change.op, change.op.lower()),
                                   "op": change.op, "key": change.key, "data": change.data,
                                   "result": value}, event_id=change.change_id)
            await self.ledger.mark(change)
            await self.db.delete(change)
            self.stats.applied += 1
            return
        wb = self._write_back(change, value)
        if await self.db.complete(self.spec, change, wb):
            self.stats.applied += 1
            await self.ledger.mark(change)
        else:
            self.stats.lost += 1

    def _write_back(self, change: Change, value: Any) -> WriteBack:
        d = self.destination
        if change.op == "DELETE":
            if d.column:
                return WriteBack("none", d.column)  # the row (and its column) is gone
            if self.on_delete == "remove":
                return WriteBack("forget", d.side_table or "")
        if d.column:
            return WriteBack("column", d.column, value)
        return WriteBack("side", d.side_table or "", value)  # a DELETE: tombstone or result

    async def _failed(self, change: Change, exc: Exception) -> None:
        message, permanent, retry_in = classify_error(exc)
        try:
            if permanent or change.attempts >= self.max_attempts:
                log.warning("cdc change %s dead after %d attempts: %s", change.change_id,
                            change.attempts, message)
                await self.ledger.dead(change, message)
                await self.db.delete(change)
                self.stats.dead += 1
            else:
                delay = max(retry_in, backoff_delay(change.attempts, base=self.backoff_base,
                                                    cap=self.backoff_cap))
                await self.db.retry_later(change, delay, message)
                self.stats.retries += 1
        except Exception:
            # the lease runs out and the change comes back: nothing is lost
            log.exception("cdc could not record the failure of %s", change.change_id)
