"""GCRA arithmetic shared by the in-memory backend (the Redis Lua scripts mirror it).

A counter is its theoretical arrival time ``tat`` (POSIX seconds). See
:mod:`lockgate.state.base` for the algorithm in words.
"""

from __future__ import annotations

import math

from lockgate.state.base import EPSILON, RateState

__all__ = ["adjust", "check", "state_after"]


def check(tat: float, now: float, limit: int, period: float, cost: int) -> tuple[float, float]:
    """Return ``(new_tat, retry_after)``; ``retry_after`` 0 means allowed, -1 never."""
    if limit <= 0 or cost > limit:
        return tat, -1.0
    interval = period / limit
    base = max(tat, now)
    new_tat = base + cost * interval
    allow_at = new_tat - period
    if allow_at - now > EPSILON:
        return tat, allow_at - now
    return new_tat, 0.0


def state_after(tat: float, now: float, limit: int, period: float, retry_after: float) -> RateState:
    """Remaining units and seconds-to-full-reset for a counter whose TAT is ``tat``."""
    if limit <= 0:
        return RateState(remaining=0, reset=period, retry_after=retry_after)
    interval = period / limit
    used = max(0.0, tat - now)
    remaining = math.floor((period - used) / interval + EPSILON)
    return RateState(remaining=max(0, min(limit, remaining)), reset=used, retry_after=retry_after)


def adjust(tat: float, now: float, limit: int, period: float, delta: int) -> float:
    """Move a counter by ``delta`` units: refund (negative) never below ``now``."""
    if limit <= 0:
        return tat
    interval = period / limit
    if delta < 0:
        return max(now, tat + delta * interval) if tat > now else tat
    return max(tat, now) + delta * interval
