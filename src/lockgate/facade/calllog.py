"""The facade's call log: every answered call, collected cheaply and handed over in batches.

On the request path a call is one tuple appended to a list (``add``: no I/O, no dict, no
validation). Once a second (``interval``), or as soon as ``max_batch`` calls are waiting, the
batch becomes one ``facade_calls`` row -- ``calls`` is the JSON array of the tuples, in
:data:`lockgate.store.records.FACADE_CALL_FIELDS` order -- and goes to ``sink`` (the
AuditWriter's ``submit_facade``: O(1); it writes, retries and spills the row with its own
batches). ``close`` hands over what is left.

Holds: per call about a microsecond on the request path; one database row per batch.
Partial: calls still waiting here (at most ``interval``) are lost if the process is killed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["CallLog", "CallRow", "Sink"]

CallRow = tuple[float, float, str, str, int, str, str | None, str | None, bool]
"""(started_at, finished_at, method, path, status, case_id, client, rules, upgraded)."""
Sink = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)


class CallLog:
    def __init__(self, sink: Sink, facade: str, upstream: str, *, interval: float = 1.0,
                 max_batch: int = 2000) -> None:
        self.sink = sink
        self.facade = facade
        self.upstream = upstream
        self.interval = interval
        self.max_batch = max_batch
        self.pending: list[CallRow] = []
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0
        self.calls = 0
        self.lost = 0

    def add(self, call: CallRow) -> None:
        pending = self.pending
        pending.append(call)
        if len(pending) >= self.max_batch:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Hand the waiting calls to the sink as one row (nothing waiting: nothing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        calls, self.pending = self.pending, []
        if not calls:
            return
        ends = [c[1] for c in calls]
        try:
            self.sink({"facade": self.facade, "upstream": self.upstream, "first_at": min(ends),
                       "last_at": max(ends), "n_calls": len(calls),
                       "calls": orjson.dumps(calls).decode()})
        except Exception as exc:  # the writer refused (full, no spill dir): say so, go on
            self.lost += len(calls)
            log.error("facade %s: %d logged calls dropped: %s", self.facade, len(calls), exc)
            return
        self.batches += 1
        self.calls += len(calls)

    def close(self) -> None:
        self.flush()
