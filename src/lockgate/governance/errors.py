"""Client-visible governance denials (OpenAI error shapes)."""

from __future__ import annotations

from lockgate.errors import GatewayError, RateLimited

__all__ = ["BudgetExceeded", "RateLimited"]


class BudgetExceeded(GatewayError):
    """A key, team or model spent its daily or monthly budget (HTTP 429, like OpenAI's quota)."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"
