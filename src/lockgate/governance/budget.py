"""Budgets: which calendar-window counters a call reserves against, and how a denial reads.

Each scope with a :class:`~lockgate.settings.BudgetConfig` adds one
line per configured ceiling: money (micro-units) or tokens, per UTC day
(``...:d:YYYY-MM-DD``) or month (``...:m:YYYY-MM``). A reservation is
all-or-nothing over every line; :class:`~lockgate.governance.admission.Ticket`
settles it with the true amounts or releases it. :class:`~lockgate.governance.governor.BudgetGuard`
runs budgets alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lockgate.governance.errors import BudgetExceeded
from lockgate.governance.money import MICROS, to_micros
from lockgate.governance.scope import Scope
from lockgate.governance.windows import Window, WindowKind, window_at
from lockgate.state.base import BudgetLine, BudgetUsage

__all__ = [
    "BudgetStatus",
    "PlannedLine",
    "budget_denial",
    "plan_lines",
]

BudgetMetric = Literal["cost", "tokens"]

_CEILINGS: tuple[tuple[str, BudgetMetric, WindowKind], ...] = (
    ("daily", "cost", "daily"),
    ("monthly", "cost", "monthly"),
    ("daily_tokens", "tokens", "daily"),
    ("monthly_tokens", "tokens", "monthly"),
)


@dataclass(frozen=True, slots=True)
class PlannedLine:
    line: BudgetLine
    metric: BudgetMetric
    scope: Scope
    window: Window


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One ceiling of a scope now: for admin views and reports."""

    scope: str
    window: WindowKind
    period: str
    metric: BudgetMetric
    limit: float
    spent: float
    reserved: float
    resets_at: str


def _show(metric: BudgetMetric, amount: int) -> str:
    if metric == "tokens":
        return f"{amount} tokens"
    return f"{amount / MICROS:.6f}".rstrip("0").rstrip(".")


def plan_lines(
    scopes: Sequence[Scope], tokens: int, cost_micros: int, now: float
) -> list[PlannedLine]:
    """Lines a call reserves. Amounts are at least 1 so a spent budget blocks every call."""
    out: list[PlannedLine] = []
    for scope in scopes:
        budget = scope.budget
        if budget is None:
            continue
        for name, metric, kind in _CEILINGS:
            ceiling: float | int | None = getattr(budget, name)
            if ceiling is None:
                continue
            window = window_at(kind, now)
            limit = to_micros(ceiling) if metric == "cost" else int(ceiling)
            amount = max(1, cost_micros if metric == "cost" else tokens)
            unit = "cost" if metric == "cost" else "tok"
            key = f"bg:{scope.kind}:{scope.id}:{unit}:{kind[0]}:{window.suffix}"
            out.append(PlannedLine(BudgetLine(key, limit, amount, window.expire_at), metric,
                                   scope, window))
    return out


def budget_denial(
    planned: Sequence[PlannedLine], usage: Sequence[BudgetUsage], index: int, now: float
) -> BudgetExceeded:
    """The 429 ``budget_exceeded`` for line ``index``; Retry-After is the window's end."""
    p = planned[index]
    u = usage[index]
    wait = max(1, math.ceil(p.window.end - now))
    what = "spend" if p.metric == "cost" else "token"
    return BudgetExceeded(
        f"Budget exceeded for {p.scope.label}: {p.window.kind} {what} limit "
        f"{_show(p.metric, p.line.limit)} reached (spent {_show(p.metric, u.spent)}, "
        f"reserved by calls in flight {_show(p.metric, u.reserved)}, this call needs up to "
        f"{_show(p.metric, p.line.amount)}). It resets at {p.window.end_iso()}.",
        headers={"retry-after": str(wait)},
    )
