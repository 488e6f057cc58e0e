"""Rate limits: which GCRA counters a call consumes, and how a denial reads.

:class:`RateLimiter` turns scopes into :class:`~lockgate.state.base.RateCounter`
requests (requests count 1, tokens count the estimate), renders OpenAI's
``x-ratelimit-*`` headers, and builds the 429 a denied call gets. The check
itself runs in :meth:`RateLimiter.check` alone, or together with budgets in
:meth:`lockgate.governance.governor.Governor.admit` (one round-trip).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lockgate.errors import RateLimited
from lockgate.governance.scope import Scope
from lockgate.settings.governance import GovernanceConfig
from lockgate.state.base import RateCounter, RateState, StateBackend

if TYPE_CHECKING:
    from lockgate.governance.admission import Core, Ticket

__all__ = [
    "PlannedCounter",
    "RateLimiter",
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


class RateLimiter:
    """Rate limits alone: :meth:`check` consumes the counters of some scopes in one trip.

    :class:`~lockgate.governance.governor.Governor` runs the same counters
    together with budgets; use it on the request path.
    """

    def __init__(
        self,
        state: StateBackend,
        config: GovernanceConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        core: Core | None = None,
    ) -> None:
        from lockgate.governance.admission import Core

        self.core = core or Core(state, config or GovernanceConfig(), clock)

    @property
    def hits(self) -> int:
        """Calls denied by a rate limit (a Prometheus counter's value)."""
        return self.core.stats.limit_hits

    plan = staticmethod(plan_counters)

    async def check(self, scopes: Sequence[Scope], tokens: int) -> Ticket:
        """Consume the counters (raises RateLimited); settle the ticket to correct tokens."""
        from lockgate.governance.admission import admit

        return await admit(self.core, plan_counters(scopes, tokens), [], tokens, 0)
