"""Governance: rate limits, budgets and circuit breakers over a shared state backend.

The pipeline uses two objects, each built once per process:

- :class:`Governor` -- ``admit(scopes, tokens=, cost=)`` takes every limit and
  budget of a call in one backend round-trip and returns a :class:`Ticket`
  (settle/release it, or use ``async with``);
- :class:`CircuitBreaker` -- ``acquire(deployment)`` before an upstream call,
  ``record(permit, ok)`` / ``record_error(permit, kind, retry_after)`` after.

Their config models for ``lockgate.yaml`` (``LimitsConfig``, ``BudgetConfig``,
``BreakerConfig``, ``GovernanceConfig``) are in :mod:`lockgate.settings.governance`.

:class:`RateLimiter` and :class:`BudgetGuard` run limits or budgets alone.

Example (one call through limits, budget and breaker)::

    scopes = [Scope("key", p.key_id, key_limits, key_budget),
              Scope("team", p.team_id, team_limits, team_budget),
              Scope("model", call.model, model_limits, model_budget)]
    est = governor.estimate(call.body, prices=[(d.pricing.input_per_mtok,
                                                d.pricing.output_per_mtok) for d in deps])
    async with await governor.admit(scopes, tokens=est.tokens, cost=est.cost) as ticket:
        permit = await breaker.acquire(dep_id)          # permit.allowed False: try the next
        answer = await provider.complete(...)           # stream: ticket.record(tokens=, cost=)
        await breaker.record(permit, ok=True)           # or record_error(permit, exc.kind, ...)
        await ticket.settle(tokens=usage.total_tokens, cost=cost)
    response.headers.update(ticket.headers)             # x-ratelimit-*
"""

from __future__ import annotations

from lockgate.governance.admission import Ticket
from lockgate.governance.breaker import STATE_CODES, CircuitBreaker, Permit
from lockgate.governance.budget import BudgetStatus
from lockgate.governance.errors import BudgetExceeded
from lockgate.governance.estimate import (
    Estimate,
    completion_cap,
    estimate_call,
    prompt_tokens_bound,
    prompt_tokens_estimate,
    requested_completion_limit,
    text_tokens_bound,
    tokens_for_chars,
    tokens_for_text,
)
from lockgate.governance.governor import BudgetGuard, Governor, RateLimiter
from lockgate.governance.limits import openai_duration
from lockgate.governance.scope import Scope
from lockgate.governance.stats import GovernanceStats

__all__ = [
    "STATE_CODES",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatus",
    "CircuitBreaker",
    "Estimate",
    "GovernanceStats",
    "Governor",
    "Permit",
    "RateLimiter",
    "Scope",
    "Ticket",
    "completion_cap",
    "estimate_call",
    "openai_duration",
    "prompt_tokens_bound",
    "prompt_tokens_estimate",
    "requested_completion_limit",
    "text_tokens_bound",
    "tokens_for_chars",
    "tokens_for_text",
]
