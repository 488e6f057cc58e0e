"""SQL for usage rows: aggregation and recent rows.

Functions here take an open ``AsyncConnection``; :class:`~lockgate.store.Store`
owns transactions. Rows are written only through the audit chain
(:func:`lockgate.store.chain.insert_chained`).

Shadow calls (``source = 'shadow'``, :data:`~lockgate.store.records.SHADOW_SOURCE`)
are audited like any call but are the operator's experiment, not the caller's
spend: summaries leave them out of ``requests``/tokens/``cost``/``errors``/latency
and show them apart as ``shadow_requests`` and ``shadow_cost``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.store.errors import InvalidInput
from lockgate.store.records import NOT_CALLS, SHADOW_SOURCE, USAGE_FIELDS, UsageRow
from lockgate.store.tables import api_keys, teams, usage_records

__all__ = [
    "GROUP_BY_CHOICES",
    "recent_usage_rows",
    "summarise_usage",
    "to_datetime",
]

u = usage_records

GROUP_BY_CHOICES: dict[str, sa.ColumnElement[Any]] = {
    "team": u.c.team_id,
    "key": u.c.key_id,
    "model": u.c.model,
    "deployment": u.c.deployment,
    "kind": u.c.kind,
    "source": u.c.source,
    "status": u.c.status,
}
_GROUP_OUTPUT = {"team": "team_id", "key": "key_id"}


def to_datetime(value: datetime | float | int | None) -> datetime | None:
    """Epoch seconds or a datetime (naive = UTC) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _filters(
    *,
    team_id: str | None,
    key_id: str | None,
    model: str | None,
    since: datetime | float | None,
    until: datetime | float | None,
    errors_only: bool = False,
    kind: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """``kind`` None: every call, not administrators' actions or review events
    (``kind`` 'admin' / 'review', which are audit links but no model calls)."""
    where: list[sa.ColumnElement[bool]] = [
        u.c.kind.not_in(NOT_CALLS) if kind is None else u.c.kind == kind
    ]
    if team_id is not None:
        where.append(u.c.team_id == team_id)
    if key_id is not None:
        where.append(u.c.key_id == key_id)
    if model is not None:
        where.append(u.c.model == model)
    if since is not None:
        where.append(u.c.created_at >= to_datetime(since))
    if until is not None:
        where.append(u.c.created_at < to_datetime(until))
    if errors_only:
        where.append(_is_error())
    return where


def _is_error() -> sa.ColumnElement[bool]:
    return sa.or_(u.c.status >= 400, u.c.error_class.is_not(None))


def _sort_key(row: Mapping[str, Any], names: Iterable[str]) -> tuple[tuple[bool, str], ...]:
    return tuple((row[n] is not None, str(row[n]) if row[n] is not None else "") for n in names)


async def summarise_usage(
    conn: AsyncConnection,
    *,
    group_by: Sequence[str],
    team_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since: datetime | float | None = None,
    until: datetime | float | None = None,
) -> list[dict[str, Any]]:
    """One dict per group: the group columns, names, and the totals."""
    unknown = [g for g in group_by if g not in GROUP_BY_CHOICES]
    if unknown:
        raise InvalidInput(
            f"cannot group usage by {', '.join(unknown)}; choose from "
            + ", ".join(GROUP_BY_CHOICES)
        )
    groups = list(dict.fromkeys(group_by))
    columns: list[sa.ColumnElement[Any]] = [
        GROUP_BY_CHOICES[g].label(_GROUP_OUTPUT.get(g, g)) for g in groups
    ]
    source: sa.FromClause = u
    if "team" in groups:
        columns.append(teams.c.name.label("team_name"))
        source = source.outerjoin(teams, teams.c.id == u.c.team_id)
    if "key" in groups:
        columns.append(api_keys.c.name.label("key_name"))
        source = source.outerjoin(api_keys, api_keys.c.id == u.c.key_id)
    shadow = u.c.source == SHADOW_SOURCE

    def billed(value: sa.ColumnElement[Any], none: Any = 0) -> sa.ColumnElement[Any]:
        return sa.case((shadow, none), else_=value)

    def total(value: sa.ColumnElement[Any], zero: Any = 0) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(value), zero)

    totals = [
        total(billed(sa.literal(1))).label("requests"),
        total(billed(u.c.prompt_tokens)).label("prompt_tokens"),
        total(billed(u.c.completion_tokens)).label("completion_tokens"),
        total(billed(u.c.cost, 0.0), 0.0).label("cost"),
        total(billed(sa.case((_is_error(), 1), else_=0))).label("errors"),
        sa.func.avg(billed(u.c.latency_ms, None)).label("avg_latency_ms"),
        total(sa.case((shadow, 1), else_=0)).label("shadow_requests"),
        total(sa.case((shadow, u.c.cost), else_=0.0), 0.0).label("shadow_cost"),
    ]
    stmt = sa.select(*columns, *totals).select_from(source)
    stmt = stmt.where(
        *_filters(team_id=team_id, key_id=key_id, model=model, since=since, until=until)
    )
    if columns:
        stmt = stmt.group_by(*columns)
    out: list[dict[str, Any]] = []
    for row in (await conn.execute(stmt)).mappings():
        item = dict(row)
        for name in ("requests", "prompt_tokens", "completion_tokens", "errors",
                     "shadow_requests"):
            item[name] = int(item[name])
        item["cost"] = float(item["cost"])
        item["shadow_cost"] = float(item["shadow_cost"])
        avg = item["avg_latency_ms"]
        item["avg_latency_ms"] = float(avg) if avg is not None else None
        if not groups and item["requests"] == 0 and item["shadow_requests"] == 0:
            continue
        out.append(item)
    names = [_GROUP_OUTPUT.get(g, g) for g in groups]
    out.sort(key=lambda r: _sort_key(r, names))
    return out


async def recent_usage_rows(
    conn: AsyncConnection,
    *,
    limit: int,
    team_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    errors_only: bool = False,
    kind: str | None = None,
) -> list[UsageRow]:
    """The newest rows first; ``kind='admin'`` lists administrators' actions instead."""
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    stmt = (
        sa.select(*(u.c[name] for name in USAGE_FIELDS))
        .where(
            *_filters(
                team_id=team_id,
                key_id=key_id,
                model=model,
                since=since,
                until=until,
                errors_only=errors_only,
                kind=kind,
            )
        )
        .order_by(u.c.created_at.desc(), u.c.id.desc())
        .limit(limit)
    )
    rows = (await conn.execute(stmt)).mappings()
    return [
        UsageRow(
            **{
                **row,
                "prompt_tokens": int(row["prompt_tokens"]),
                "completion_tokens": int(row["completion_tokens"]),
                "stream": bool(row["stream"]),
                "cached": bool(row["cached"]),
            }
        )
        for row in rows
    ]
