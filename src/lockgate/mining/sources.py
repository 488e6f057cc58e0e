"""Event sources: lockgate's own records as process events (case id, activity, time, resource).

A source is anything with a ``name`` and ``async events(since, until) -> list[Event]``
(:class:`EventSource`). Built in, reading the store's tables:

* ``calls`` (:class:`CallSource`, audit rows ``usage_records``): case = the request id,
  activity ``call <source>/<kind>`` (``... failed`` for status >= 400, ``... cached`` for a
  cache hit), resource = the key id; audit rows that are no model calls (admin actions,
  review-queue links, canary changes) are left out;
* ``reviews`` (:class:`ReviewSource`, ``review_items``): ``review queued`` at creation, then
  ``review <state>`` (approved/edited/rejected/auto_approved) when decided (resource = the
  reviewer) and ``review resumed``. The case is the job (``job:<id>``) for reviews of jobs,
  the root run id for an agent's approvals (the case of the ``agents`` source), else the
  request id, so review steps join the case of the call, job or agent run they gate;
* ``jobs`` (:class:`JobSource`, the SQL job queue's ``lockgate_jobs`` table when the queue
  lives in the store's database): ``job submitted`` (resource = the task), then
  ``job <state>`` at its finish.

Plugging in more: implement the protocol and call :func:`register_source` with a factory
taking the store engine; ``lockgate mine --source <name>`` and the API then read it like the
built-ins. ``lockgate.mining`` registers two this way: ``agents``
(:mod:`~lockgate.mining.agent_source`, agent runs and their steps) and ``facade``
(:mod:`~lockgate.mining.facade_source`, the facades' call log).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.mining.log import Event, MiningInputError
from lockgate.store.records import NOT_CALLS
from lockgate.store.tables import agent_runs, review_items, usage_records

__all__ = [
    "DEFAULT_SOURCES",
    "CallSource",
    "EventSource",
    "JobSource",
    "ReviewSource",
    "collect",
    "register_source",
    "source_names",
]

DEFAULT_SOURCES = ("calls", "reviews", "jobs")
JOBS_TABLE = "lockgate_jobs"


class EventSource(Protocol):
    name: str

    async def events(self, since: float | None, until: float | None) -> list[Event]: ...


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class CallSource:
    name = "calls"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def events(self, since: float | None, until: float | None) -> list[Event]:
        t = usage_records
        q = sa.select(t.c.request_id, t.c.created_at, t.c.key_id, t.c.kind, t.c.source,
                      t.c.status, t.c.cached).where(t.c.kind.not_in(NOT_CALLS))
        if since is not None:
            q = q.where(t.c.created_at >= _dt(since))
        if until is not None:
            q = q.where(t.c.created_at < _dt(until))
        out: list[Event] = []
        async with self.engine.connect() as conn:
            for r in await conn.execute(q):
                act = f"call {r.source}/{r.kind}"
                if r.status >= 400:
                    act += " failed"
                elif r.cached:
                    act += " cached"
                out.append(Event(r.request_id, act, r.created_at.timestamp(), r.key_id))
        return out


class ReviewSource:
    name = "reviews"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def events(self, since: float | None, until: float | None) -> list[Event]:
        t = review_items
        runs = agent_runs
        q = sa.select(t.c.id, t.c.source, t.c.source_ref, t.c.request_id, t.c.state,
                      t.c.created_at, t.c.decided_at, t.c.decided_by, t.c.resumed_at, t.c.task,
                      runs.c.root_id).select_from(t.outerjoin(
                          runs, sa.and_(t.c.source == "agent", runs.c.id == t.c.source_ref)))
        if since is not None:
            q = q.where(t.c.created_at >= since)
        if until is not None:
            q = q.where(t.c.created_at < until)
        out: list[Event] = []
        async with self.engine.connect() as conn:
            for r in await conn.execute(q):
                if r.source == "jobs" and r.source_ref:
                    case = f"job:{r.source_ref}"
                elif r.root_id is not None:
                    case = r.root_id
                else:
                    case = r.request_id or f"review:{r.id}"
                out.append(Event(case, "review queued", float(r.created_at), r.task))
                if r.state != "pending":
                    when = r.decided_at if r.decided_at is not None else r.created_at
                    out.append(Event(case, f"review {r.state}", float(when), r.decided_by))
                if r.resumed_at is not None:
                    out.append(Event(case, "review resumed", float(r.resumed_at), None))
        return out


class JobSource:
    name = "jobs"

    def __init__(self, engine: AsyncEngine, table: str = JOBS_TABLE) -> None:
        self.engine = engine
        self.table = table

    async def events(self, since: float | None, until: float | None) -> list[Event]:
        async with self.engine.connect() as conn:
            exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(self.table))
            if not exists:
                return []
            where = []
            params: dict[str, float] = {}
            if since is not None:
                where.append("created_at >= :since")
                params["since"] = since
            if until is not None:
                where.append("created_at < :until")
                params["until"] = until
            sql = (f"SELECT id, task, state, created_at, finished_at FROM {self.table}"
                   + (" WHERE " + " AND ".join(where) if where else ""))
            rows = (await conn.execute(sa.text(sql), params)).all()
        out: list[Event] = []
        for r in rows:
            case = f"job:{r.id}"
            out.append(Event(case, "job submitted", float(r.created_at), r.task))
            if r.finished_at is not None:
                out.append(Event(case, f"job {r.state}", float(r.finished_at), r.task))
        return out


SourceFactory = Callable[[AsyncEngine], EventSource]
_REGISTRY: dict[str, SourceFactory] = {
    "calls": CallSource,
    "reviews": ReviewSource,
    "jobs": JobSource,
}


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``name`` selectable (agent steps, facade calls...)."""
    _REGISTRY[name] = factory


def source_names() -> list[str]:
    return sorted(_REGISTRY)


async def collect(engine: AsyncEngine, names: Sequence[str], since: float | None,
                  until: float | None) -> list[Event]:
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise MiningInputError(f"unknown event source(s): {', '.join(unknown)} "
                               f"(known: {', '.join(source_names())})")
    out: list[Event] = []
    for name in dict.fromkeys(names):
        out.extend(await _REGISTRY[name](engine).events(since, until))
    return out
