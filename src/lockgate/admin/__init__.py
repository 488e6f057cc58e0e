"""Administration as a service: teams, keys, revocation (audited), and the budgets and
rate limits each team and key is using right now.

One implementation for every adapter: the admin HTTP API (``/admin/teams``, ``/admin/keys``)
and the console's teams, keys and budgets screens call :class:`AdminService`; neither
writes the store itself. :mod:`.usage_now` reads the governor's shared counters (process
memory, or Redis when ``redis_url`` is set) without consuming them.
"""

from __future__ import annotations

from lockgate.admin.service import AdminService
from lockgate.admin.usage_now import BudgetLineUse, RateUse, ScopeUse, UsageNow

__all__ = ["AdminService", "BudgetLineUse", "RateUse", "ScopeUse", "UsageNow"]
