"""Usage rollups for the console's overview: totals per minute and per hour, per team and model.

:class:`Rollups` folds new ``usage_records`` rows (by id, past a stored cursor) into
``console_rollups`` at two grains (60 s and 3600 s). The overview then reads a few hundred
rollup rows instead of scanning the audit table, so it stays fast with millions of rows.

What holds:

- Folding is incremental and exactly once: each step reads ids ``(cursor, cursor + step]``,
  adds them to the rollups and moves the cursor in the same transaction, under a lock of
  the cursor row (PostgreSQL ``FOR UPDATE SKIP LOCKED``: a second process skips the step
  instead of waiting; SQLite serialises writers). Any number of gateways may call
  :meth:`Rollups.refresh`.
- Only model calls count (not admin/review audit links, not shadow traffic), as in
  :func:`lockgate.store.usage.summarise_usage`.
- Latency percentiles are estimated from a fixed histogram (:data:`EDGES_MS`), linear
  inside a bin: p50/p95 are approximate to the bin width, never computed from raw rows.

Partial: a row whose id is below the cursor when it commits (a writer that took its id
before a fold and committed after it) would be missed. Audit rows are written under the
chain-head lock (:mod:`lockgate.store.chain`), which serialises writers, so ids commit in
order; a deployment that writes rows around the chain can keep the fold ``lag_ids`` ids
behind the newest one (default 0). A page view folds at most one step (``step_ids`` rows);
the server's background loop (``console.rollup_interval``) catches up on a backlog (the
first fold of 1,000,000 existing rows took about a minute on PostgreSQL here) and the
overview says how many rows are still to fold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lockgate.store.records import NOT_CALLS, SHADOW_SOURCE
from lockgate.store.tables import (
    ROLLUP_BINS,
    console_rollup_cursor,
    console_rollups,
    usage_records,
)

__all__ = ["EDGES_MS", "GRAINS", "WINDOWS", "Overview", "Rollups", "percentile"]

EDGES_MS: Final = (10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                   30000.0)
"""Upper edges of the latency bins (ms); the last bin is everything above 30 s."""
assert len(EDGES_MS) == ROLLUP_BINS - 1

GRAINS: Final = (60, 3600)
WINDOWS: Final[dict[str, tuple[int, int, int]]] = {
    # name: (seconds, grain read, chart step)
    "1h": (3600, 60, 60),
    "6h": (6 * 3600, 60, 300),
    "24h": (86400, 3600, 3600),
    "7d": (7 * 86400, 3600, 6 * 3600),
    "30d": (30 * 86400, 3600, 86400),
}

r = console_rollups
u = usage_records
_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "latency_sum",
         *[f"h{i}" for i in range(ROLLUP_BINS)])


def percentile(hist: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram over :data:`EDGES_MS` (None when empty)."""
    total = sum(hist)
    if total <= 0:
        return None
    target = q * total
    seen = 0.0
    for i, count in enumerate(hist):
        if count and seen + count >= target:
            low = EDGES_MS[i - 1] if i > 0 else 0.0
            high = EDGES_MS[i] if i < len(EDGES_MS) else EDGES_MS[-1] * 2
            return low + (high - low) * ((target - seen) / count)
        seen += count
    return EDGES_MS[-1] * 2


UNTRUSTED_MODEL_STATUSES = (400, 401, 403, 404, 408, 413, 422)
"""Statuses of calls refused before their model was known to exist."""
UNKNOWN_MODEL = "unknown"
MAX_MODEL_LABEL = 200


@dataclass
class Overview:
    """What the overview page draws: one point per chart step, and totals per team/model."""

    window: str
    step: int
    times: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    error_rate: list[float | None] = field(default_factory=list)
    p50: list[float | None] = field(default_factory=list)
    p95: list[float | None] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    by_team_model: list[dict[str, Any]] = field(default_factory=list)

    def series(self) -> dict[str, Any]:
        return {"window": self.window, "step": self.step, "t": self.times,
                "requests": self.requests, "rps": self.rps,
                "error_rate": self.error_rate, "p50": self.p50, "p95": self.p95,
                "cost": self.cost}


def _bucket_expr(dialect: str, grain: int) -> sa.ColumnElement[Any]:
    if dialect == "postgresql":
        epoch = sa.func.floor(sa.extract("epoch", u.c.created_at) / grain)
        return sa.cast(epoch, sa.BigInteger) * grain
    epoch_s = sa.cast(sa.func.strftime("%s", u.c.created_at), sa.Integer)
    return (epoch_s // grain) * grain


def _bin_exprs() -> list[sa.ColumnElement[Any]]:
    out: list[sa.ColumnElement[Any]] = []
    low: float | None = None
    for i in range(ROLLUP_BINS):
        high = EDGES_MS[i] if i < len(EDGES_MS) else None
        conds = []
        if low is not None:
            conds.append(u.c.latency_ms > low)
        if high is not None:
            conds.append(u.c.latency_ms <= high)
        cond = sa.and_(*conds) if conds else sa.true()
        out.append(sa.func.sum(sa.case((cond, 1), else_=0)).label(f"h{i}"))
        low = high
    return out


class Rollups:
    """Folds audit rows into ``console_rollups`` and reads the overview from them."""

    def __init__(self, engine: AsyncEngine, writer: AsyncEngine | None = None, *,
                 step_ids: int = 50_000, lag_ids: int = 0) -> None:
        self._engine = engine
        self._writer = writer or engine
        self.step_ids = step_ids
        self.lag_ids = lag_ids
        self.last_refresh = 0.0
        self.folded = 0
        self.behind = 0
        """Audit rows (by id) not yet folded, as of this process's last fold step."""

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def _insert(self) -> Any:
        return postgresql.insert(r) if self.dialect == "postgresql" else sqlite.insert(r)

    async def refresh(self, *, max_steps: int = 1000) -> int:
        """Fold every new audit row; returns how many rows were folded by this call."""
        folded = 0
        for _ in range(max_steps):
            n = await self._step()
            if n < 0:
                break
            folded += n
        self.last_refresh = time.monotonic()
        self.folded += folded
        return folded

    async def refresh_if_stale(self, max_age: float, *, max_steps: int = 1) -> None:
        """Fold at most ``max_steps`` steps when the last fold is older than ``max_age`` s
        (a page view; the background loop catches up on large backlogs)."""
        if time.monotonic() - self.last_refresh >= max_age:
            await self.refresh(max_steps=max_steps)

    async def _nothing_new(self) -> bool:
        """A read-only look first, so an idle fold never takes SQLite's write lock."""
        async with self._engine.connect() as conn:
            cursor = (await conn.execute(sa.select(console_rollup_cursor.c.last_id).where(
                console_rollup_cursor.c.id == 1))).scalar()
            newest = (await conn.execute(sa.select(sa.func.max(u.c.id)))).scalar()
        if newest is None:
            return True
        return cursor is not None and int(newest) - self.lag_ids <= int(cursor)

    async def _step(self) -> int:
        """One fold; -1 when there was nothing to do (or another process holds the lock)."""
        if await self._nothing_new():
            self.behind = 0
            return -1
        async with self._writer.begin() as conn:
            cursor = await self._lock_cursor(conn)
            if cursor is None:
                return -1
            newest = (await conn.execute(sa.select(sa.func.max(u.c.id)))).scalar()
            if newest is None:
                return -1
            hi = min(int(newest) - self.lag_ids, cursor + self.step_ids)
            self.behind = max(0, int(newest) - max(hi, cursor))
            if hi <= cursor:
                return -1
            rows = 0
            for grain in GRAINS:
                rows = await self._fold(conn, grain, cursor, hi)
            await conn.execute(console_rollup_cursor.update()
                               .where(console_rollup_cursor.c.id == 1).values(last_id=hi))
            return rows

    async def _lock_cursor(self, conn: AsyncConnection) -> int | None:
        stmt = sa.select(console_rollup_cursor.c.last_id).where(console_rollup_cursor.c.id == 1)
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        value = (await conn.execute(stmt)).scalar()
        if value is not None:
            return int(value)
        # first use: create the row (a racing creator makes this a no-op)
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(
            console_rollup_cursor).values(id=1, last_id=0).on_conflict_do_nothing()
        await conn.execute(ins)
        value = (await conn.execute(stmt)).scalar()
        return int(value) if value is not None else None

    async def _fold(self, conn: AsyncConnection, grain: int, lo: int, hi: int) -> int:
        bucket = _bucket_expr(self.dialect, grain).label("bucket")
        team = sa.func.coalesce(u.c.team_id, "").label("team_id")
        is_error = sa.or_(u.c.status >= 400, u.c.error_class.is_not(None))
        # A client error before routing (bad key, unknown or disallowed model, bad body) may
        # carry any name a client made up: it is rolled up as "unknown", so made-up names
        # cannot grow the rollups or the overview (the metrics' closed label set does the same).
        model = sa.case(
            (u.c.status.in_(UNTRUSTED_MODEL_STATUSES), UNKNOWN_MODEL),
            (sa.func.length(u.c.model) > MAX_MODEL_LABEL, UNKNOWN_MODEL),
            else_=u.c.model,
        ).label("model")
        stmt = (
            sa.select(
                bucket, team, model,
                sa.func.count().label("requests"),
                sa.func.sum(sa.case((is_error, 1), else_=0)).label("errors"),
                sa.func.sum(u.c.prompt_tokens).label("prompt_tokens"),
                sa.func.sum(u.c.completion_tokens).label("completion_tokens"),
                sa.func.sum(u.c.cost).label("cost"),
                sa.func.sum(u.c.latency_ms).label("latency_sum"),
                *_bin_exprs(),
            )
            .where(u.c.id > lo, u.c.id <= hi, u.c.kind.not_in(NOT_CALLS),
                   u.c.source != SHADOW_SOURCE)
            .group_by(bucket, team, model)
        )
        groups = [dict(m) for m in (await conn.execute(stmt)).mappings()]
        if not groups:
            return 0
        for g in groups:
            g["grain"] = grain
            g["bucket"] = int(g["bucket"])
            for name in _SUMS:
                g[name] = g[name] or 0
        ins = self._insert()
        upsert = ins.on_conflict_do_update(
            index_elements=["grain", "bucket", "team_id", "model"],
            set_={name: getattr(r.c, name) + getattr(ins.excluded, name) for name in _SUMS},
        )
        await conn.execute(upsert, groups)
        return sum(int(g["requests"]) for g in groups)

    async def overview(self, window: str, *, team_id: str | None = None,
                       now: float | None = None) -> Overview:
        """The overview for ``window`` (a key of :data:`WINDOWS`), all teams or one."""
        seconds, grain, step = WINDOWS[window]
        end = int(now if now is not None else time.time())
        start = (end - seconds) // step * step + step
        where = [r.c.grain == grain, r.c.bucket >= start - (start % grain)]
        if team_id is not None:
            where.append(r.c.team_id == team_id)
        point = ((r.c.bucket // step) * step).label("t")
        sums = [sa.func.sum(getattr(r.c, n)).label(n) for n in _SUMS]
        series_q = sa.select(point, *sums).where(*where).group_by(point).order_by(point)
        split_q = (sa.select(r.c.team_id, r.c.model, *sums).where(*where)
                   .group_by(r.c.team_id, r.c.model))
        async with self._engine.connect() as conn:
            points = {int(m["t"]): dict(m) for m in (await conn.execute(series_q)).mappings()}
            split = [dict(m) for m in (await conn.execute(split_q)).mappings()]
        ov = Overview(window=window, step=step)
        total_hist = [0] * ROLLUP_BINS
        for t in range(start, end + 1, step):
            p = points.get(t)
            ov.times.append(t)
            if p is None:
                ov.requests.append(0)
                ov.rps.append(0.0)
                ov.error_rate.append(None)
                ov.p50.append(None)
                ov.p95.append(None)
                ov.cost.append(0.0)
                continue
            hist = [int(p[f"h{i}"] or 0) for i in range(ROLLUP_BINS)]
            total_hist = [a + b for a, b in zip(total_hist, hist, strict=True)]
            req = int(p["requests"] or 0)
            ov.requests.append(req)
            ov.rps.append(round(req / step, 4))
            ov.error_rate.append(round(int(p["errors"] or 0) / req, 4) if req else None)
            ov.p50.append(_round(percentile(hist, 0.5)))
            ov.p95.append(_round(percentile(hist, 0.95)))
            ov.cost.append(round(float(p["cost"] or 0.0), 6))
        requests = sum(int(s["requests"] or 0) for s in split)
        errors = sum(int(s["errors"] or 0) for s in split)
        ov.totals = {
            "requests": requests,
            "errors": errors,
            "error_rate": round(errors / requests, 4) if requests else None,
            "rps": round(requests / seconds, 4),
            "cost": round(sum(float(s["cost"] or 0.0) for s in split), 6),
            "p50_ms": _round(percentile(total_hist, 0.5)),
            "p95_ms": _round(percentile(total_hist, 0.95)),
        }
        ov.by_team_model = sorted(
            ({"team_id": s["team_id"] or None, "model": s["model"],
              "requests": int(s["requests"] or 0), "errors": int(s["errors"] or 0),
              "cost": round(float(s["cost"] or 0.0), 6),
              "tokens": int(s["prompt_tokens"] or 0) + int(s["completion_tokens"] or 0)}
             for s in split),
            key=lambda d: (-d["cost"], -d["requests"], d["model"]),
        )
        return ov


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
