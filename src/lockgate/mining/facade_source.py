"""Facade calls as process events (the ``facade`` source), from the ``facade_calls`` log.

Every request a facade answers is logged off the request path (the facade collects its
calls and writes one ``facade_calls`` row per batch through the AuditWriter; ``calls`` is
a JSON array of arrays in ``FACADE_CALL_FIELDS`` order; ``log_calls: false`` on a facade
turns it off):

* **case** = the client's correlation header (``case_header``, default
  ``X-Correlation-Id``) when it sent one, else ``<client address> <path>``: the calls one
  client made on one resource;
* **activity** = ``<METHOD> <route>``: the path with id-like segments (digits, UUIDs, long
  hex or tokens mixing letters and digits) as ``{id}``; then `` [rule a,rule b]`` for the
  rules whose method + path matched, `` (websocket)`` for an upgraded connection, and
  `` failed`` for status >= 400 (or no answer: status 0);
* **timestamp** = when the answer ended (a tunnel: when it closed), **start** = when the
  request arrived, so processing time is the facade + service time;
* **resource** = the upstream (``host:port``) the facade fronts.

The window (``since``/``until``) applies to when the answer ended.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.mining.log import Event
from lockgate.store.records import FACADE_CALL_FIELDS
from lockgate.store.tables import facade_calls

__all__ = ["FacadeCallSource", "calls_of", "facade_activity", "route_of"]

_WIDTH = len(FACADE_CALL_FIELDS)

_ID_SEGMENT = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{12,}|(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_-]{16,})$")


def route_of(path: str) -> str:
    """``/tickets/42/notes`` -> ``/tickets/{id}/notes``."""
    parts = path.split("/")
    return "/".join("{id}" if p and _ID_SEGMENT.match(p) else p for p in parts) or "/"


def facade_activity(method: str, path: str, status: int, rules: str | None,
                    upgraded: bool) -> str:
    act = f"{method} {route_of(path)}"
    if rules:
        act += f" [{rules}]"
    if upgraded:
        act += " (websocket)"
    if status >= 400 or status == 0:
        act += " failed"
    return act


def calls_of(batch: str) -> Iterator[dict[str, Any]]:
    """The calls of one ``facade_calls.calls`` value as dicts (malformed entries skipped)."""
    try:
        rows = orjson.loads(batch)
    except orjson.JSONDecodeError:
        return
    if not isinstance(rows, list):
        return
    for row in rows:
        if isinstance(row, list) and len(row) == _WIDTH:
            yield dict(zip(FACADE_CALL_FIELDS, row, strict=True))


class FacadeCallSource:
    name = "facade"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def events(self, since: float | None, until: float | None) -> list[Event]:
        t = facade_calls
        q = sa.select(t.c.upstream, t.c.calls).order_by(t.c.id)
        if since is not None:
            q = q.where(t.c.last_at >= since)
        if until is not None:
            q = q.where(t.c.first_at < until)
        out: list[Event] = []
        async with self.engine.connect() as conn:
            batches = (await conn.execute(q)).all()
        for b in batches:
            for c in calls_of(b.calls):
                try:
                    end, start = float(c["finished_at"]), float(c["started_at"])
                    status = int(c["status"])
                except (TypeError, ValueError):
                    continue
                if (since is not None and end < since) or (until is not None and end >= until):
                    continue
                act = facade_activity(str(c["method"]), str(c["path"]), status,
                                      c["rules"] or None, bool(c["upgraded"]))
                out.append(Event(str(c["case_id"]), act, end, b.upstream, start))
        return out
