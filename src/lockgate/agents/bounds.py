"""Bounds on agents: error-rate circuit breakers, per-tool rate limits, a loop detector.

Breakers and rate limits live on the state backend (:mod:`lockgate.state`): in process
memory for one gateway (``MemoryState``), in Redis for many (``RedisState``, atomic Lua
scripts), so every gateway sharing one Redis sees one sliding window.

- A breaker (one per agent, one per tool) opens when, over the last ``window_s`` seconds
  (10 buckets), at least ``min_calls`` outcomes were seen and the share of failures reached
  ``error_rate``; it stays open ``pause_s`` seconds. After that the next outcome decides:
  a success closes it with a clean window, a failure opens it for another ``pause_s``.
  Its key is ``agent:<name>`` / ``agent_tool:<tool>`` in the backend's breaker space.
- A tool's rate limit is ``rate_per_minute`` calls per 60 s as a GCRA counter
  (``agent_rate:<tool>``): a burst of the limit, then one more every ``60/limit`` s.

When the state backend cannot be reached (``StateUnavailable``), a tool call is refused
(fail closed: "rate limiter unavailable") and breakers read as closed (logged); outcomes
that cannot be recorded are dropped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import orjson

from lockgate.settings.agents import AgentBreaker
from lockgate.state import BreakerParams, BreakerView, RateCounter, StateBackend
from lockgate.state.base import StateUnavailable

__all__ = ["Breakers", "LoopDetector", "RateLimiter", "SharedBreaker"]

log = logging.getLogger("lockgate.agents")
HALF_OPEN_ALL = 1_000_000
"""After the pause every call may go (the next outcome closes or reopens the breaker)."""


def breaker_params(s: AgentBreaker) -> BreakerParams:
    return BreakerParams(window=s.window_s, buckets=10, min_requests=s.min_calls,
                         failure_rate=s.error_rate, open_seconds=s.pause_s,
                         half_open_probes=HALF_OPEN_ALL, half_open_successes=1,
                         probe_ttl=max(60.0, s.pause_s))


class SharedBreaker:
    """One breaker on the state backend (shared by every gateway on the same backend)."""

    __slots__ = ("_clock", "_params", "key", "last", "settings", "state")

    def __init__(self, state: StateBackend, key: str, settings: AgentBreaker,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.key = key
        self.settings = settings
        self._params = breaker_params(settings)
        self._clock = clock
        self.last: BreakerView | None = None

    async def is_open(self) -> bool:
        now = self._clock()
        try:
            view = await self.state.breaker_view(self.key, self._params, now=now)
            if view.state == "open" and now >= view.open_until:
                # the pause is over: half-open, the next outcome decides
                view = await self.state.breaker_acquire(self.key, self._params, now=now,
                                                        probe_id=uuid.uuid4().hex)
        except StateUnavailable as exc:
            log.warning("breaker %s: state backend unavailable (%s); read as closed",
                        self.key, exc)
            return False
        self.last = view
        return view.state == "open" and now < view.open_until

    async def record(self, ok: bool) -> bool:
        """Add an outcome; True when this outcome opened the breaker."""
        now = self._clock()
        try:
            view = await self.state.breaker_record(self.key, self._params, ok=ok, now=now,
                                                   probe_id=uuid.uuid4().hex)
        except StateUnavailable as exc:
            log.warning("breaker %s: outcome not recorded (%s)", self.key, exc)
            return False
        self.last = view
        return view.state == "open" and abs(view.open_until - (now + self.settings.pause_s)
                                            ) < 1e-3

    def failure_rate(self) -> float:
        """The share of failures last seen (the threshold when the breaker just opened:
        opening clears the window)."""
        v = self.last
        if v is None or v.successes + v.failures == 0:
            return self.settings.error_rate if v is not None and v.state == "open" else 0.0
        return v.failures / (v.successes + v.failures)


class Breakers:
    """One breaker per agent and one per tool, on ``state``."""

    def __init__(self, state: StateBackend, settings: AgentBreaker,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.settings = settings
        self._clock = clock
        self.agents: dict[str, SharedBreaker] = {}
        self.tools: dict[str, SharedBreaker] = {}

    def agent(self, name: str) -> SharedBreaker:
        b = self.agents.get(name)
        if b is None:
            b = self.agents[name] = SharedBreaker(self.state, "agent:" + name,
                                                  self.settings, self._clock)
        return b

    def tool(self, name: str) -> SharedBreaker:
        b = self.tools.get(name)
        if b is None:
            b = self.tools[name] = SharedBreaker(self.state, "agent_tool:" + name,
                                                 self.settings, self._clock)
        return b


class RateLimiter:
    """Calls per tool per minute (GCRA on the state backend)."""

    def __init__(self, state: StateBackend, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self._clock = clock

    async def take(self, tool: str, per_minute: int) -> bool:
        now = self._clock()
        try:
            res = await self.state.admit(
                [RateCounter(key="agent_rate:" + tool, limit=per_minute, period=60.0, cost=1)],
                [], now=now, reservation_id="agent-" + uuid.uuid4().hex,
                reservation_expires=now + 60.0)
        except StateUnavailable as exc:
            log.warning("rate limit of %s: state backend unavailable (%s); refused", tool, exc)
            return False
        return res.allowed


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
