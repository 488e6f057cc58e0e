"""Rate limits: which GCRA counters a call consumes, and how a denial reads.

:func:`plan_counters` turns scopes into :class:`~lockgate.state.base.RateCounter`
requests (requests count 1, tokens count the estimate); :func:`rate_headers` renders
OpenAI's ``x-ratelimit-*`` headers and :func:`rate_denial` builds the 429 a denied call
gets. The check itself runs in :meth:`lockgate.governance.governor.RateLimiter.check`
alone, or together with budgets in :meth:`lockgate.governance.governor.Governor.admit`
(one round-trip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lockgate.errors import RateLimited
from lockgate.governance.scope import Scope
from lockgate.state.base import RateCounter, RateState

__all__ = [
    "PlannedCounter",
    "openai_duration",
    "plan_counters",
    "rate_denial",
    "rate_headers",
]

Metric = Literal["requests", "tokens"]

_UNITS: tuple[tuple[str, Metric, float, str], ...] = (
    ("rpm", "requests", 60.0, "minute"),
    ("tpm", "tokens", 60.0, "minute"),
    ("rpd", "requests", 86_400.0, "day"),
    ("tpd", "tokens", 86_400.0, "day"),
)


@dataclass(frozen=True, slots=True)
class PlannedCounter:
    counter: RateCounter
    metric: Metric
    scope: Scope
    unit: str
    """``rpm``, ``tpm``, ``rpd`` or ``tpd``."""
    per: str
    """``minute`` or ``day``."""


def openai_duration(seconds: float) -> str:
    """Durations the way OpenAI's ``x-ratelimit-reset-*`` headers write them: ``20ms``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total_ms = math.ceil(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"


def rate_headers(planned: Sequence[PlannedCounter], states: Sequence[RateState]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the binding counters.

    For each metric the counter with the fewest remaining units is reported
    (ties: the one that takes longest to reset).
    """
    headers: dict[str, str] = {}
    for metric in ("requests", "tokens"):
        best: tuple[PlannedCounter, RateState] | None = None
        for p, s in zip(planned, states, strict=True):
            if p.metric != metric:
                continue
            if best is None or (s.remaining, -s.reset) < (best[1].remaining, -best[1].reset):
                best = (p, s)
        if best is not None:
            p, s = best
            headers[f"x-ratelimit-limit-{metric}"] = str(p.counter.limit)
            headers[f"x-ratelimit-remaining-{metric}"] = str(s.remaining)
            headers[f"x-ratelimit-reset-{metric}"] = openai_duration(s.reset)
    return headers


def rate_denial(
    planned: Sequence[PlannedCounter], states: Sequence[RateState], index: int
) -> RateLimited:
    """The 429 for a call denied by counter ``index``, with Retry-After and limit headers."""
    p = planned[index]
    s = states[index]
    headers = rate_headers(planned, states)
    c = p.counter
    if s.retry_after < 0:
        return RateLimited(
            f"Request too large for {p.scope.label}: it needs {c.cost} {p.metric} but the "
            f"limit is {c.limit} {p.metric} per {p.per} ({p.unit}). Reduce the prompt or "
            "max_tokens.",
            code="request_too_large",
            headers=headers,
        )
    wait = max(s.retry_after, 0.001)
    headers["retry-after"] = str(max(1, math.ceil(wait)))
    headers["retry-after-ms"] = str(math.ceil(wait * 1000))
    return RateLimited(
        f"Rate limit reached for {p.scope.label}: {c.limit} {p.metric} per {p.per} "
        f"({p.unit}). Try again in {openai_duration(wait)}.",
        headers=headers,
    )


def plan_counters(scopes: Sequence[Scope], tokens: int) -> list[PlannedCounter]:
    """Counters a call of ``tokens`` estimated tokens consumes across ``scopes``."""
    out: list[PlannedCounter] = []
    for scope in scopes:
        limits = scope.limits
        if limits is None:
            continue
        for unit, metric, period, per in _UNITS:
            limit: int | None = getattr(limits, unit)
            if limit is None:
                continue
            cost = 1 if metric == "requests" else max(0, tokens)
            key = f"rl:{scope.kind}:{scope.id}:{unit}"
            out.append(PlannedCounter(RateCounter(key, limit, period, cost), metric, scope,
                                      unit, per))
    return out
