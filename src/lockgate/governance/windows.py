"""Calendar UTC windows for budgets: the key suffix and the end of the window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

__all__ = ["GRACE_SECONDS", "Window", "WindowKind", "window_at"]

WindowKind = Literal["daily", "monthly"]

GRACE_SECONDS = 3 * 86_400.0
"""Counters live this long past their window's end (late settles, reports)."""


@dataclass(frozen=True, slots=True)
class Window:
    kind: WindowKind
    suffix: str
    """``YYYY-MM-DD`` for daily, ``YYYY-MM`` for monthly (UTC)."""
    start: float
    end: float
    """POSIX seconds; the window is ``[start, end)``."""

    @property
    def expire_at(self) -> float:
        return self.end + GRACE_SECONDS

    def end_iso(self) -> str:
        return datetime.fromtimestamp(self.end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_at(kind: WindowKind, now: float) -> Window:
    """The calendar window of ``kind`` containing the instant ``now``."""
    return _window_of_day(kind, math.floor(now / 86_400))


@lru_cache(maxsize=256)
def _window_of_day(kind: WindowKind, day: int) -> Window:
    t = datetime.fromtimestamp(day * 86_400, UTC)
    if kind == "daily":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
        suffix = start.strftime("%Y-%m-%d")
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        suffix = start.strftime("%Y-%m")
    return Window(kind, suffix, start.timestamp(), end.timestamp())
