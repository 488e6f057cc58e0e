"""Stored event logs (``mining_logs``, ``mining_events``): save an EventLog, load it back.

On PostgreSQL both directions use the asyncpg connection under SQLAlchemy directly:
``COPY`` (``copy_records_to_table``) to save and one ordered ``SELECT`` with
dictionary encoding while reading, which is what lets a 1,000,000-event log be loaded and
mined in seconds (bench/mining_bench.py). SQLite uses plain batched inserts/selects.

Rows come back ordered by (case_id, ts, id): the EventLog is built presorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.lazy import lazy_module
from lockgate.mining.log import EventLog, MiningInputError
from lockgate.store.engine import writer_engine
from lockgate.store.tables import mining_events, mining_logs

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

__all__ = ["LogInfo", "MiningStore", "UnknownLog"]

_BATCH = 5000
_SELECT = ("SELECT case_id, activity, ts, start_ts, resource FROM mining_events"
           " WHERE log_id = {p} ORDER BY case_id, ts, id")


class UnknownLog(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class LogInfo:
    id: int
    name: str
    source: str
    created_at: datetime
    n_events: int
    n_cases: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source,
                "created_at": self.created_at.isoformat(), "events": self.n_events,
                "cases": self.n_cases}


class _Decoder:
    """Dictionary-encodes rows (case, activity, ts, start, resource) already in case order."""

    def __init__(self) -> None:
        self.cases: list[str] = []
        self.acts: dict[str, int] = {}
        self.ress: dict[str, int] = {}

    def build(self, rows: Any) -> EventLog:
        acts, ress = self.acts, self.ress
        case_codes: list[int] = []
        a: list[int] = []
        t: list[float] = []
        s: list[float] = []
        r: list[int] = []
        last: str | None = None
        cases = self.cases
        nan = float("nan")
        for case_id, activity, ts, start_ts, resource in rows:
            if case_id != last:
                cases.append(case_id)
                last = case_id
            case_codes.append(len(cases) - 1)
            a.append(acts.setdefault(activity, len(acts)))
            t.append(ts)
            s.append(nan if start_ts is None else start_ts)
            r.append(-1 if resource is None else ress.setdefault(resource, len(ress)))
        return EventLog(np.asarray(case_codes, dtype=np.int64), np.asarray(a, dtype=np.int64),
                        np.asarray(t, dtype=np.float64), case_names=cases,
                        activities=list(acts), resource=np.asarray(r, dtype=np.int64),
                        resources=list(ress), start=np.asarray(s, dtype=np.float64),
                        presorted=True)


class MiningStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Writes read first (does the name exist?) then write: on SQLite they must hold the
        # write lock from BEGIN, or a commit by another writer in between fails the lock
        # upgrade at once (SQLITE_BUSY_SNAPSHOT) instead of waiting busy_timeout.
        self._writer = writer_engine(engine)

    @property
    def _pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def logs(self) -> list[LogInfo]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(mining_logs).order_by(mining_logs.c.name)))
            return [LogInfo(r.id, r.name, r.source, r.created_at, r.n_events, r.n_cases)
                    for r in rows]

    async def info(self, name: str) -> LogInfo:
        async with self.engine.connect() as conn:
            r = (await conn.execute(sa.select(mining_logs).where(mining_logs.c.name == name))
                 ).first()
        if r is None:
            raise UnknownLog(f"no event log named {name!r}")
        return LogInfo(r.id, r.name, r.source, r.created_at, r.n_events, r.n_cases)

    async def delete(self, name: str) -> bool:
        async with self._writer.begin() as conn:
            found = (await conn.execute(
                sa.select(mining_logs.c.id).where(mining_logs.c.name == name))).scalar()
            if found is None:
                return False
            await conn.execute(sa.delete(mining_events).where(mining_events.c.log_id == found))
            await conn.execute(sa.delete(mining_logs).where(mining_logs.c.id == found))
        return True

    async def save(self, name: str, log: EventLog, *, source: str = "import",
                   replace: bool = False) -> LogInfo:
        """Store ``log`` as ``name`` (409-style :class:`MiningInputError` if it exists)."""
        if not name or len(name) > 200:
            raise MiningInputError("a log name is 1 to 200 characters")
        if replace:
            await self.delete(name)
        now = datetime.now(UTC)
        taken = MiningInputError(f"an event log named {name!r} already exists")
        try:
            async with self._writer.begin() as conn:
                exists = (await conn.execute(
                    sa.select(mining_logs.c.id).where(mining_logs.c.name == name))).scalar()
                if exists is not None:
                    raise taken
                log_id = (await conn.execute(sa.insert(mining_logs).values(
                    name=name, source=source, created_at=now, n_events=len(log),
                    n_cases=log.n_cases).returning(mining_logs.c.id))).scalar_one()
                await self._insert_events(conn, int(log_id), log)
        except IntegrityError:
            raise taken from None  # PostgreSQL: a concurrent save of the same name won
        return LogInfo(int(log_id), name, source, now, len(log), log.n_cases)

    async def _insert_events(self, conn: AsyncConnection, log_id: int, log: EventLog) -> None:
        cases, acts, ress = log.case_names, log.activities, log.resources
        case_l = log.case.tolist()
        act_l = log.act.tolist()
        ts_l = log.ts.tolist()
        st_l = [None if x != x else x for x in log.start.tolist()]
        res_l = [None if x < 0 else ress[x] for x in log.resource.tolist()]
        rows = [(log_id, cases[c], acts[a], t, s, r)
                for c, a, t, s, r in zip(case_l, act_l, ts_l, st_l, res_l, strict=True)]
        if self._pg:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.copy_records_to_table(
                "mining_events", records=rows,
                columns=["log_id", "case_id", "activity", "ts", "start_ts", "resource"])
            return
        stmt = sa.insert(mining_events)
        keys = ("log_id", "case_id", "activity", "ts", "start_ts", "resource")
        for i in range(0, len(rows), _BATCH):
            await conn.execute(stmt, [dict(zip(keys, row, strict=True))
                                      for row in rows[i:i + _BATCH]])

    async def load(self, name: str) -> EventLog:
        info = await self.info(name)
        decoder = _Decoder()
        async with self.engine.connect() as conn:
            if self._pg:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                records = await driver.fetch(_SELECT.format(p="$1"), info.id)
                return decoder.build(records)
            result = await conn.exec_driver_sql(_SELECT.format(p="?"), (info.id,))
            return decoder.build(result.all())
