"""Run the ``cdc:`` consumers of the config in one process (``lockgate worker``,
``lockgate cdc run`` without ``--capture``): one :class:`CdcConsumer` per entry, sharing
the runtime's pipeline and lockgate's store (dedup record, DLQ)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from lockgate.cdc.consumer import CdcConsumer, CdcStats, Destination, task_transform
from lockgate.cdc.database import CdcDatabase, open_capture
from lockgate.cdc.ledger import CdcLedger
from lockgate.events.transports import EventTransport, open_transport
from lockgate.settings import resolve_secret
from lockgate.settings.cdc import CdcConsumerSettings

if TYPE_CHECKING:
    from lockgate.runtime import Runtime

__all__ = ["run_configured"]

log = logging.getLogger("lockgate.cdc")


async def run_configured(runtime: Runtime, entries: list[CdcConsumerSettings],
                         stop: asyncio.Event) -> list[CdcStats]:
    """Open every entry (a bad one fails here, before any runs), then consume until ``stop``."""
    opened: list[tuple[CdcDatabase, EventTransport | None]] = []
    consumers: list[CdcConsumer] = []
    try:
        for e in entries:
            dsn = resolve_secret(e.dsn, f"cdc[{e.capture}].dsn") or ""
            db, spec = await open_capture(dsn, e.capture, pool_size=e.concurrency + 2)
            sink = open_transport(e.event, group=f"cdc-{e.capture}") if e.event else None
            opened.append((db, sink))
            consumers.append(CdcConsumer(
                db, CdcLedger(runtime.store.engine), spec,
                task_transform(runtime.task_runner("cdc"), e.task, e.select),
                Destination(column=e.write_column, side_table=e.side_table, event=sink),
                concurrency=e.concurrency, lease=e.lease, max_attempts=e.max_attempts,
                poll_interval=e.poll, backoff_base=e.backoff, on_delete=e.on_delete))
        for c in consumers:
            await c.prepare()
            log.info("cdc consumer for capture %s started", c.spec.name)
        return list(await asyncio.gather(*(c.run(stop) for c in consumers)))
    finally:
        for db, sink in opened:
            if sink is not None:
                with contextlib.suppress(Exception):
                    await sink.aclose()
            await db.aclose()

