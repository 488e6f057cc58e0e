"""Governance: rate limits, budgets and circuit breakers over a shared state backend.

The pipeline uses three objects, each built once per process:

- :class:`Governor` -- ``admit(scopes, tokens=, cost=)`` takes every limit and
  budget of a call in one backend round-trip and returns a :class:`Ticket`
  (settle/release it, or use ``async with``);
- :class:`CircuitBreaker` -- ``acquire(deployment)`` before an upstream call,
  ``record(permit, ok)`` / ``record_error(permit, kind, retry_after)`` after;
- the config models (:class:`LimitsConfig`, :class:`BudgetConfig`,
  :class:`BreakerConfig`, :class:`GovernanceConfig`) for ``lockgate.yaml``.

:class:`RateLimiter` and :class:`BudgetGuard` run limits or budgets alone.
"""

from __future__ import annotations

from lockgate.governance.admission import Ticket
from lockgate.governance.breaker import STATE_CODES, CircuitBreaker, Permit
from lockgate.governance.budget import BudgetGuard, BudgetStatus
from lockgate.governance.config import (
    BreakerConfig,
    BudgetConfig,
    FailurePolicy,
    GovernanceConfig,
    LimitsConfig,
)
from lockgate.governance.errors import BudgetExceeded
from lockgate.governance.estimate import Estimate, estimate_call, prompt_tokens_estimate
from lockgate.governance.governor import Governor
from lockgate.governance.limits import RateLimiter, openai_duration
from lockgate.governance.scope import Scope
from lockgate.governance.stats import GovernanceStats

__all__ = [
    "STATE_CODES",
    "BreakerConfig",
    "BudgetConfig",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatus",
    "CircuitBreaker",
    "Estimate",
    "FailurePolicy",
    "GovernanceConfig",
    "GovernanceStats",
    "Governor",
    "LimitsConfig",
    "Permit",
    "RateLimiter",
    "Scope",
    "Ticket",
    "estimate_call",
    "openai_duration",
    "prompt_tokens_estimate",
]
