"""The request path's entry point: every rate limit and budget of a call in one round-trip."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lockgate.governance.admission import Core, Ticket, admit, cost_to_micros_ceil
from lockgate.governance.budget import BudgetGuard, plan_lines
from lockgate.governance.estimate import Estimate, estimate_call
from lockgate.governance.limits import RateLimiter, plan_counters
from lockgate.governance.scope import Scope
from lockgate.governance.stats import GovernanceStats
from lockgate.settings.governance import GovernanceConfig
from lockgate.state.base import StateBackend

__all__ = ["Governor"]


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
        self, body: Mapping[str, Any], prices: Iterable[tuple[float, float]] = ()
    ) -> Estimate:
        """Tokens and cost to reserve for an OpenAI request body (see :func:`estimate_call`)."""
        return estimate_call(body, default_max_tokens=self.config.default_max_tokens,
                             prices=prices)

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
