"""Facade calls as process events (the ``facade`` source), from the ``facade_calls`` log.

Every request a facade answers is logged off the request path (the AuditWriter batches
``facade_calls`` rows; ``log_calls: false`` on a facade turns it off):

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

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.mining.log import Event
from lockgate.store.tables import facade_calls

__all__ = ["FacadeCallSource", "facade_activity", "route_of"]

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


class FacadeCallSource:
    name = "facade"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def events(self, since: float | None, until: float | None) -> list[Event]:
        t = facade_calls
        q = sa.select(t.c.case_id, t.c.method, t.c.path, t.c.status, t.c.rules, t.c.upgraded,
                      t.c.started_at, t.c.finished_at, t.c.upstream).order_by(t.c.id)
        if since is not None:
            q = q.where(t.c.finished_at >= since)
        if until is not None:
            q = q.where(t.c.finished_at < until)
        out: list[Event] = []
        async with self.engine.connect() as conn:
            for r in await conn.execute(q):
                out.append(Event(r.case_id, facade_activity(r.method, r.path, r.status, r.rules,
                                                            bool(r.upgraded)),
                                 float(r.finished_at), r.upstream, float(r.started_at)))
        return out
