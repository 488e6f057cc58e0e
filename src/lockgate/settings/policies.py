"""``teams:``, ``keys:``, ``model_policies:`` and ``kill_switch:``: who gets which limits
and budgets, and what is switched off at start."""

from __future__ import annotations

from pydantic import Field

from lockgate.settings.base import Strict
from lockgate.settings.governance import BudgetConfig, LimitsConfig

__all__ = ["KillSwitchDefaults", "ModelPolicy", "Policy", "TeamPolicy"]


class Policy(Strict):
    """Rate limits and budget of one key, team or model (either may be omitted)."""

    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None

    def is_empty(self) -> bool:
        return (self.limits is None or self.limits.is_empty()) and (
            self.budget is None or self.budget.is_empty()
        )


class TeamPolicy(Policy):
    """``teams.<team name or id>``: limits/budget shared by all the team's keys, and the
    limits/budget every key of the team gets on its own (``key_limits``/``key_budget``)."""

    key_limits: LimitsConfig | None = None
    key_budget: BudgetConfig | None = None


class ModelPolicy(Policy):
    """``model_policies.<public model>``: limits/budget over all callers, kill-switch fallback."""

    fallback_model: str | None = None
    """Model answering when this one is switched off (typically a ``provider: rules`` one)."""


class KillSwitchDefaults(Strict):
    """Models and teams switched off at start (the admin API/CLI changes them at run time)."""

    models: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)
