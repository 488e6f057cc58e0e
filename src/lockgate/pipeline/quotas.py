"""Limits + budget stage: which scopes a call counts against, and the admission itself.

Scopes, from config (all optional):

- ``keys.<key name or id>`` -- the key's own limits/budget; else the team's
  ``key_limits``/``key_budget`` (every key of that team gets its own counters);
- ``teams.<team name or id>`` -- ``limits``/``budget`` shared by the team's keys;
- ``model_policies.<model>`` -- ``limits``/``budget`` over every caller of a model.

A call with no configured scope makes no state round-trip at all (the hot path
stays as without governance). Otherwise :meth:`Limits.admit` takes every
counter and budget line in one atomic round-trip and returns a
:class:`~lockgate.governance.Ticket` to settle with the true usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lockgate.governance import Estimate, Governor, Scope, Ticket
from lockgate.pipeline.call import Call
from lockgate.settings import Config, ModelDeployment, Policy

__all__ = ["Limits", "scopes_for"]


def _usable(p: Policy | None) -> bool:
    return p is not None and not p.is_empty()


def scopes_for(config: Config, call: Call) -> list[Scope]:
    """The scopes ``call`` counts against (empty: nothing to count)."""
    p = call.principal
    out: list[Scope] = []
    if p is not None and not p.is_master:
        team = None
        if p.team_id is not None:
            team = config.teams.get(p.team_id)
        if team is None and p.team_name is not None:
            team = config.teams.get(p.team_name)
        key = config.keys.get(p.key_id)
        if key is None and p.key_name:
            key = config.keys.get(p.key_name)
        if key is not None and not key.is_empty():
            out.append(Scope("key", p.key_id, key.limits, key.budget))
        elif team is not None and (team.key_limits is not None or team.key_budget is not None):
            out.append(Scope("key", p.key_id, team.key_limits, team.key_budget))
        if _usable(team) and team is not None and p.team_id is not None:
            out.append(Scope("team", p.team_id, team.limits, team.budget))
    model = config.model_policies.get(call.model)
    if model is not None and not model.is_empty():
        out.append(Scope("model", call.model, model.limits, model.budget))
    return out


class Limits:
    """The pipeline's limits/budget stage over one :class:`Governor`."""

    def __init__(self, config: Config, governor: Governor) -> None:
        self.config = config
        self.governor = governor
        self.active = bool(
            config.keys
            or any(not t.is_empty() or t.key_limits or t.key_budget
                   for t in config.teams.values())
            or any(not m.is_empty() for m in config.model_policies.values())
        )
        """False when nothing is configured: :meth:`admit` returns at once."""

    @property
    def default_max_tokens(self) -> int:
        return self.governor.config.default_max_tokens

    @property
    def max_tokens_field(self) -> str:
        return self.governor.config.max_tokens_field

    @property
    def media_tokens(self) -> int:
        return self.governor.config.media_tokens

    def estimate(
        self, body: dict[str, Any], deployments: Sequence[ModelDeployment],
        prompt_tokens: int | None = None,
    ) -> Estimate:
        return self.governor.estimate(
            body,
            prices=[(d.pricing.input_per_mtok, d.pricing.output_per_mtok) for d in deployments],
            prompt_tokens=prompt_tokens,
        )

    async def admit(
        self,
        call: Call,
        deployments: Sequence[ModelDeployment],
        count_prompt: Callable[[dict[str, Any]], Awaitable[int | None]] | None = None,
    ) -> Ticket | None:
        """Reserve for ``call`` (None when no scope applies); raises the 429/503 denials.

        ``count_prompt(body)``: the prompt tokens to reserve (exact where the model's
        tokenizer is at hand); called only when some scope applies. None: the bound.
        """
        if not self.active:
            return None
        scopes = scopes_for(self.config, call)
        if not scopes:
            return None
        prompt = await count_prompt(call.body) if count_prompt is not None else None
        est = self.estimate(call.body, deployments, prompt)
        return await self.governor.admit(scopes, tokens=est.tokens, cost=est.cost)

    async def top_up(self, call: Call, tokens: int, cost: float) -> Ticket | None:
        """Reserve more budget for a call already admitted (a guard lengthened the prompt, a
        contract repair makes a second upstream call). Budgets only: the call's rate
        counters were taken once. Settle the ticket with zero (the main ticket carries
        the true usage). Raises ``BudgetExceeded`` when the budget cannot cover it."""
        if not self.active or (tokens <= 0 and cost <= 0):
            return None
        scopes = scopes_for(self.config, call)
        if not any(s.budget is not None for s in scopes):
            return None
        return await self.governor.budgets.reserve(scopes, max(tokens, 0), max(cost, 0.0))
