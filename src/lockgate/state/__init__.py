"""Shared state: counters (limits, budgets, breakers), response cache, invalidation signals.

``MemoryState`` serves one process; ``RedisState`` (needs the ``redis`` extra)
is shared by many gateways. :func:`open_state` picks one from a URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lockgate.state.base import (
    AdmitResult,
    BreakerParams,
    BreakerStateName,
    BreakerView,
    BudgetLine,
    BudgetSettle,
    BudgetUsage,
    RateAdjust,
    RateCounter,
    RateState,
    StateBackend,
    StateUnavailable,
    Subscription,
)
from lockgate.state.invalidation import Invalidations
from lockgate.state.memory import MemoryState

if TYPE_CHECKING:
    from lockgate.state.redis_state import RedisState

__all__ = [
    "AdmitResult",
    "BreakerParams",
    "BreakerStateName",
    "BreakerView",
    "BudgetLine",
    "BudgetSettle",
    "BudgetUsage",
    "Invalidations",
    "MemoryState",
    "RateAdjust",
    "RateCounter",
    "RateState",
    "RedisState",
    "StateBackend",
    "StateUnavailable",
    "Subscription",
    "open_state",
]


def open_state(url: str | None, *, prefix: str = "lg:", timeout: float = 0.25) -> StateBackend:
    """Memory for ``None``/``memory://``; Redis for ``redis://``, ``rediss://``, ``unix://``.

    Does not connect: the first operation does.
    """
    if not url or url.startswith("memory:"):
        return MemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lockgate.state.redis_state import RedisState

        return RedisState(url, prefix, timeout=timeout)
    raise ValueError(f"unsupported state URL {url!r}: use redis://host:port/db or memory://")


def __getattr__(name: str) -> Any:
    if name == "RedisState":
        from lockgate.state.redis_state import RedisState

        return RedisState
    raise AttributeError(name)
