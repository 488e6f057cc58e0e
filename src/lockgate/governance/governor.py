"""The request path's entry point: every rate limit and budget of a call in one round-trip.

:class:`Governor` takes limits and budgets together; :class:`RateLimiter` and
:class:`BudgetGuard` run limits or budgets alone over the same :class:`Core`.
Imports go one way: planning (``limits``, ``budget``) <- ``admission`` <- here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lockgate.governance.admission import Core, Ticket, admit, cost_to_micros_ceil
from lockgate.governance.budget import BudgetStatus, plan_lines
from lockgate.governance.estimate import Estimate, estimate_call
from lockgate.governance.limits import plan_counters
from lockgate.governance.money import MICROS
from lockgate.governance.scope import Scope
from lockgate.governance.stats import GovernanceStats
from lockgate.settings.governance import GovernanceConfig
from lockgate.state.base import StateBackend

__all__ = ["BudgetGuard", "Governor", "RateLimiter"]


class Governor:
    """Limits + budgets for the pipeline. One instance per process, shared by all requests.

    ``await governor.admit(scopes, tokens=..., cost=...)`` checks and takes
    every counter and budget line of every scope atomically (one backend
    round-trip) and returns a :class:`~lockgate.governance.admission.Ticket`,
    or raises ``RateLimited`` / ``BudgetExceeded`` (429) / ``StateUnavailable`` (503).
    """

    def __init__(
        self,
        state: StateBackend,
        config: GovernanceConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = Core(state, config or GovernanceConfig(), clock)
        self.limiter = RateLimiter(state, core=self.core)
        self.budgets = BudgetGuard(state, core=self.core)

    @property
    def config(self) -> GovernanceConfig:
        return self.core.config

    @property
    def stats(self) -> GovernanceStats:
        """Plain-int counters: admitted, limit_hits, budget_denials, state_errors, ..."""
        return self.core.stats

    def estimate(
        self,
        body: Mapping[str, Any],
        prices: Iterable[tuple[float, float]] = (),
        *,
        prompt_tokens: int | None = None,
    ) -> Estimate:
        """Tokens and cost to reserve for an OpenAI request body (see :func:`estimate_call`).

        ``prompt_tokens``: the exact count from the model's tokenizer, when there is one.
        """
        return estimate_call(body, default_max_tokens=self.config.default_max_tokens,
                             prices=prices, prompt_tokens=prompt_tokens,
                             media_tokens=self.config.media_tokens)

    async def admit(self, scopes: Sequence[Scope], *, tokens: int, cost: float = 0.0) -> Ticket:
        """Take every limit and budget of ``scopes`` for a call of ``tokens``/``cost`` estimated."""
        micros = cost_to_micros_ceil(cost)
        counters = plan_counters(scopes, tokens)
        now = self.core.clock()
        lines = plan_lines(scopes, tokens, micros, now)
        return await admit(self.core, counters, lines, tokens, micros, now=now)

    async def retry_pending(self) -> int:
        """Send settles that failed while the backend was down (also done after admissions)."""
        return await self.core.retry_pending()


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
        self.core = core or Core(state, config or GovernanceConfig(), clock)

    @property
    def hits(self) -> int:
        """Calls denied by a rate limit (a Prometheus counter's value)."""
        return self.core.stats.limit_hits

    plan = staticmethod(plan_counters)

    async def check(self, scopes: Sequence[Scope], tokens: int) -> Ticket:
        """Consume the counters (raises RateLimited); settle the ticket to correct tokens."""
        return await admit(self.core, plan_counters(scopes, tokens), [], tokens, 0)


class BudgetGuard:
    """Budgets alone: :meth:`reserve` in one trip, :meth:`status` for admin views.

    :class:`~lockgate.governance.governor.Governor` reserves budgets together
    with rate limits; use it on the request path.
    """

    def __init__(
        self,
        state: StateBackend,
        config: GovernanceConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        core: Core | None = None,
    ) -> None:
        self.core = core or Core(state, config or GovernanceConfig(), clock)

    @property
    def denials(self) -> int:
        """Calls denied by a budget (a Prometheus counter's value)."""
        return self.core.stats.budget_denials

    plan = staticmethod(plan_lines)

    async def reserve(self, scopes: Sequence[Scope], tokens: int, cost: float) -> Ticket:
        """Reserve against the budgets of ``scopes``; raises :class:`BudgetExceeded`.

        ``cost`` in currency units. End the ticket with settle/release (or ``async with``).
        """
        micros = cost_to_micros_ceil(cost)
        now = self.core.clock()
        lines = plan_lines(scopes, tokens, micros, now)
        return await admit(self.core, [], lines, tokens, micros, now=now)

    async def status(self, scope: Scope) -> list[BudgetStatus]:
        """Limit, spent and reserved of every ceiling of ``scope`` in the current windows."""
        now = self.core.clock()
        out: list[BudgetStatus] = []
        for p in plan_lines([scope], 1, 1, now):
            u = await self.core.state.budget_usage(p.line.key, now=now)
            div = MICROS if p.metric == "cost" else 1
            out.append(BudgetStatus(
                scope=scope.name, window=p.window.kind, period=p.window.suffix, metric=p.metric,
                limit=p.line.limit / div, spent=u.spent / div, reserved=u.reserved / div,
                resets_at=p.window.end_iso(),
            ))
        return out
