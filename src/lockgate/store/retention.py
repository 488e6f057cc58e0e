"""The audit retention loop a running gateway runs (``audit.retention.interval_seconds``).

Every ``interval`` seconds (the first time after a random share of at most a minute, so
several workers started together do not all go at once) it calls
:func:`~lockgate.store.archive.archive_audit` with the configured policy. Several
gateways may run it against one database: :func:`archive_audit` lets one of them archive
a range and the others stop (see its module docstring). A failure is logged and counted,
never raised: the next round tries again. ``archived`` and ``failures`` feed the
``lockgate_audit{stat="archived"|"archive_failures"}`` gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta
from pathlib import Path

from lockgate.store.archive import archive_audit
from lockgate.store.store import Store

__all__ = ["AuditRetainer"]

log = logging.getLogger(__name__)


class AuditRetainer:
    """Archives old audit rows on a timer until ``stop`` is set."""

    def __init__(self, store: Store, directory: Path, *, interval: float,
                 max_age: timedelta | None, max_rows: int | None, file_rows: int) -> None:
        self.store = store
        self.directory = directory
        self.interval = interval
        self.max_age = max_age
        self.max_rows = max_rows
        self.file_rows = file_rows
        self.archived = 0
        self.failures = 0

    async def run_once(self) -> int:
        """One round; the number of rows archived (0 after a logged failure)."""
        try:
            report = await archive_audit(self.store, self.directory, max_age=self.max_age,
                                         max_rows=self.max_rows, file_rows=self.file_rows)
        except Exception as exc:  # database down, disk full, a broken chain: say so, go on
            self.failures += 1
            log.error("audit retention: archiving failed: %s", exc)
            return 0
        if report.files:
            self.archived += report.rows
            log.info("audit retention: %s", report.line())
        return report.rows

    async def run(self, stop: asyncio.Event) -> None:
        delay = random.uniform(0.1, 1.0) * min(self.interval, 60.0)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            await self.run_once()
            delay = self.interval
