"""Quality per task x model x deployment x prompt version x contract version.

From the ``feedback`` table, one dict per group with counts and rates:

* ``reviews`` (reviewer decisions), ``approval_rate`` = approved / reviews,
  ``override_rate`` = (edited + rejected) / reviews;
* ``thumbs`` (up + down), ``thumbs_down_rate`` = down / thumbs;
* ``outcomes`` (rows with a business outcome) and ``outcome_counts`` per label;
  ``outcome_rate`` = outcomes / rows, or, with ``outcome=<label>``, rows with that
  label / outcomes;
* ``refusal_known`` (rows where it is known whether the model refused),
  ``refusal_rate`` = refused / refusal_known.

A rate is None when its denominator is 0 (never a made-up 0 %).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.feedback.model import OVERRIDE_KINDS
from lockgate.store.tables import feedback

__all__ = ["GROUP_COLUMNS", "quality_report"]

GROUP_COLUMNS = ("task", "model", "deployment", "prompt_version", "contract_version")


def _count(cond: Any) -> Any:
    return sa.func.sum(sa.case((cond, 1), else_=0))


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


async def quality_report(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    task: str | None = None,
    model: str | None = None,
    deployment: str | None = None,
    outcome: str | None = None,
) -> list[dict[str, Any]]:
    f = feedback.c
    groups = [getattr(f, name) for name in GROUP_COLUMNS]
    stmt = sa.select(
        *groups,
        sa.func.count().label("rows"),
        _count(f.kind == "review_approved").label("approved"),
        _count(f.kind.in_(sorted(OVERRIDE_KINDS))).label("overridden"),
        _count(f.kind == "review_edited").label("edited"),
        _count(f.kind == "review_rejected").label("rejected"),
        _count(f.thumbs == "up").label("thumbs_up"),
        _count(f.thumbs == "down").label("thumbs_down"),
        _count(f.outcome.is_not(None)).label("outcomes"),
        _count(f.refused.is_(True)).label("refused"),
        _count(f.refused.is_not(None)).label("refusal_known"),
    ).group_by(*groups)
    where = []
    if since is not None:
        where.append(f.created_at >= since)
    for col, value in (("task", task), ("model", model), ("deployment", deployment)):
        if value is not None:
            where.append(getattr(f, col) == value)
    if where:
        stmt = stmt.where(*where)
    per_outcome = sa.select(*groups, f.outcome, sa.func.count().label("n")).where(
        f.outcome.is_not(None), *where).group_by(*groups, f.outcome)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
        outcome_rows = (await conn.execute(per_outcome)).mappings().all()
    counts: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in outcome_rows:
        counts.setdefault(tuple(r[c] for c in GROUP_COLUMNS), {})[r["outcome"]] = int(r["n"])
    out = []
    for r in rows:
        key = tuple(r[c] for c in GROUP_COLUMNS)
        n = {name: int(r[name] or 0) for name in (
            "rows", "approved", "overridden", "edited", "rejected", "thumbs_up", "thumbs_down",
            "outcomes", "refused", "refusal_known")}
        reviews = n["approved"] + n["overridden"]
        thumbs = n["thumbs_up"] + n["thumbs_down"]
        labels = counts.get(key, {})
        outcome_rate = (_rate(labels.get(outcome, 0), n["outcomes"]) if outcome is not None
                        else _rate(n["outcomes"], n["rows"]))
        out.append({
            **dict(zip(GROUP_COLUMNS, key, strict=True)),
            **n,
            "reviews": reviews,
            "thumbs": thumbs,
            "approval_rate": _rate(n["approved"], reviews),
            "override_rate": _rate(n["overridden"], reviews),
            "thumbs_down_rate": _rate(n["thumbs_down"], thumbs),
            "outcome_rate": outcome_rate,
            "outcome_counts": dict(sorted(labels.items())),
            "refusal_rate": _rate(n["refused"], n["refusal_known"]),
        })
    out.sort(key=lambda d: tuple("" if d[c] is None else str(d[c]) for c in GROUP_COLUMNS))
    return out
