"""The report: ``shadow_results`` aggregated per (model, candidate deployment).

Count, mean/p50/p95 latency and total cost of primary and candidate, agreement
rates and error rates; ``lockgate shadow report [--model M]`` prints it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lockgate.store import Store
from lockgate.store.tables import shadow_results

__all__ = ["ShadowStats", "shadow_report"]


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """One (model, candidate) line of ``lockgate shadow report``."""

    model: str
    candidate: str
    count: int
    primary_latency_mean_ms: float
    primary_latency_p50_ms: float
    primary_latency_p95_ms: float
    candidate_latency_mean_ms: float
    candidate_latency_p50_ms: float
    candidate_latency_p95_ms: float
    primary_cost: float
    candidate_cost: float
    text_agreement: float | None
    """Share of successful pairs whose normalised texts are equal (None: no pairs)."""
    json_agreement: float | None
    """Share of pairs where both answers were JSON whose documents are equal."""
    json_pairs: int
    primary_error_rate: float
    candidate_error_rate: float

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


async def shadow_report(
    store: Store, model: str | None = None, *, since: datetime | None = None
) -> list[ShadowStats]:
    """Aggregate ``shadow_results`` per (model, candidate deployment), sorted by model."""
    t = shadow_results
    stmt = sa.select(
        t.c.model,
        t.c.candidate_deployment,
        t.c.primary_latency_ms,
        t.c.candidate_latency_ms,
        t.c.primary_cost,
        t.c.candidate_cost,
        t.c.candidate_error,
        t.c.text_match,
        t.c.json_match,
    )
    if model is not None:
        stmt = stmt.where(t.c.model == model)
    if since is not None:
        stmt = stmt.where(t.c.created_at >= since)
    groups: dict[tuple[str, str], list[Any]] = {}
    async with store.engine.connect() as conn:
        for row in await conn.execute(stmt):
            groups.setdefault((row[0], row[1]), []).append(row)
    out: list[ShadowStats] = []
    for (name, candidate), rows in sorted(groups.items()):
        p_lat = sorted(float(r[2]) for r in rows)
        c_lat = sorted(float(r[3]) for r in rows)
        ok = [r for r in rows if r[6] is None]
        json_pairs = [r for r in ok if r[8] is not None]
        out.append(
            ShadowStats(
                model=name,
                candidate=candidate,
                count=len(rows),
                primary_latency_mean_ms=sum(p_lat) / len(p_lat),
                primary_latency_p50_ms=_percentile(p_lat, 50),
                primary_latency_p95_ms=_percentile(p_lat, 95),
                candidate_latency_mean_ms=sum(c_lat) / len(c_lat),
                candidate_latency_p50_ms=_percentile(c_lat, 50),
                candidate_latency_p95_ms=_percentile(c_lat, 95),
                primary_cost=sum(float(r[4]) for r in rows),
                candidate_cost=sum(float(r[5]) for r in rows),
                text_agreement=_rate(sum(1 for r in ok if r[7]), len(ok)),
                json_agreement=_rate(sum(1 for r in json_pairs if r[8]), len(json_pairs)),
                json_pairs=len(json_pairs),
                primary_error_rate=0.0,  # only successful primary calls are mirrored
                candidate_error_rate=(len(rows) - len(ok)) / len(rows),
            )
        )
    return out
