"""Bounds on agents: error-rate circuit breakers, per-tool rate limits, a loop detector.

All in process memory (one gateway's view): a breaker opens when, over the last
``window_s`` seconds, at least ``min_calls`` outcomes were seen and the share of failures
reached ``error_rate``; it stays open ``pause_s`` seconds, then closes with a clean
window. Rate limits are a sliding one-minute window per tool. Partial: with several
gateways each keeps its own counts (the run store and review queue are shared).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import orjson

from lockgate.settings.agents import AgentBreaker

__all__ = ["Breakers", "LoopDetector", "RateLimiter", "SlidingBreaker"]


class SlidingBreaker:
    __slots__ = ("_clock", "_events", "_failures", "open_until", "settings")

    def __init__(self, settings: AgentBreaker, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._events: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self.open_until = 0.0
        self._clock = clock

    def is_open(self) -> bool:
        if self.open_until and self._clock() >= self.open_until:
            self.open_until = 0.0
            self._events.clear()
            self._failures = 0
        return self.open_until > 0.0

    def record(self, ok: bool) -> bool:
        """Add an outcome; True when this outcome opened the breaker."""
        now = self._clock()
        s = self.settings
        self._events.append((now, ok))
        self._failures += not ok
        while self._events and self._events[0][0] < now - s.window_s:
            self._failures -= not self._events.popleft()[1]
        if self.open_until:
            return False
        n = len(self._events)
        if n >= s.min_calls and self._failures / n >= s.error_rate:
            self.open_until = now + s.pause_s
            return True
        return False

    def failure_rate(self) -> float:
        n = len(self._events)
        return 0.0 if n == 0 else self._failures / n


class Breakers:
    """One breaker per agent and one per tool."""

    def __init__(self, settings: AgentBreaker,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.agents: dict[str, SlidingBreaker] = {}
        self.tools: dict[str, SlidingBreaker] = {}

    def agent(self, name: str) -> SlidingBreaker:
        b = self.agents.get(name)
        if b is None:
            b = self.agents[name] = SlidingBreaker(self.settings, self._clock)
        return b

    def tool(self, name: str) -> SlidingBreaker:
        b = self.tools.get(name)
        if b is None:
            b = self.tools[name] = SlidingBreaker(self.settings, self._clock)
        return b


class RateLimiter:
    """Calls per tool in the last 60 seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}

    def take(self, tool: str, per_minute: int) -> bool:
        now = self._clock()
        q = self._calls.setdefault(tool, deque())
        while q and q[0] <= now - 60.0:
            q.popleft()
        if len(q) >= per_minute:
            return False
        q.append(now)
        return True


class LoopDetector:
    """Counts identical calls (tool name + canonical arguments) within one run."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats

    @staticmethod
    def signature(name: str, args: object) -> str:
        return name + ":" + orjson.dumps(args, option=orjson.OPT_SORT_KEYS,
                                         default=str).decode()

    def looping(self, seen: dict[str, int], name: str, args: object) -> bool:
        """Count this call in ``seen``; True when it reached the repeat limit."""
        sig = self.signature(name, args)
        seen[sig] = seen.get(sig, 0) + 1
        return seen[sig] >= self.repeats
