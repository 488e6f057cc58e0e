"""What a call is governed as: the scopes (key, team, model, ...) it counts against."""

from __future__ import annotations

from dataclasses import dataclass

from lockgate.settings.governance import BudgetConfig, LimitsConfig

__all__ = ["Scope"]


@dataclass(frozen=True, slots=True)
class Scope:
    """One thing a call counts against, with its limits and budget (either may be None).

    ``kind`` is free-form (``key``, ``team``, ``model``, ``bu`` ...); ``kind:id``
    names the counters, so ids need only be unique within their kind.
    """

    kind: str
    id: str
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.id}"
