"""The shared-state contract: :class:`StateBackend` and the values it trades in.

Two implementations exist: :class:`~lockgate.state.memory.MemoryState` (one
process) and :class:`~lockgate.state.redis_state.RedisState` (many gateways,
atomic Lua scripts). The governance layer (``lockgate.governance``) builds the
requests below and interprets the answers; backends only keep counters.

All times are POSIX seconds (floats) supplied by the caller (``now``), so one
injectable clock drives both backends. Keys are *logical* (no prefix); a
backend adds its own prefix.

Rate limits use GCRA (the generic cell rate algorithm, "leaky bucket as a
meter"): each counter stores one number, its theoretical arrival time (TAT).
A counter with ``limit`` L per ``period`` P has emission interval T = P/L and
allows a burst of L; a request of cost n is allowed when
``max(TAT, now) + n*T - P <= now``. That gives exactly L requests in a burst,
then one more every T seconds: a smooth sliding window with O(1) state.
Refunds and charges just move TAT by ``delta*T``.

Budgets are integer counters (money in micro-units, or tokens) per calendar
window key. A reservation adds to ``reserved``; :meth:`StateBackend.settle`
removes the reservation and adds the actual amount to ``spent``. A reservation
not settled by its expiry time is dropped at the next admission on that key,
so a crashed gateway cannot hold budget forever. Admission holds
``spent + reserved + amount <= limit`` atomically on every line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from lockgate.errors import Unavailable

__all__ = [
    "HALF_OPEN_RETRY",
    "AdmitResult",
    "BreakerParams",
    "BreakerStateName",
    "BreakerView",
    "BudgetLine",
    "BudgetSettle",
    "BudgetUsage",
    "RateAdjust",
    "RateCounter",
    "RateState",
    "StateBackend",
    "StateUnavailable",
    "Subscription",
]

EPSILON = 1e-6
"""Seconds of slack in GCRA comparisons (float rounding of ``k * P/L``)."""


class StateUnavailable(Unavailable):
    """The shared state store (Redis) cannot be reached in time.

    A subclass of :class:`~lockgate.errors.Unavailable`, so when it escapes to
    a client it renders as HTTP 503 ``state_unavailable``.
    """

    code = "state_unavailable"


@dataclass(frozen=True, slots=True)
class RateCounter:
    """One GCRA counter to check and consume: ``limit`` units per ``period`` seconds."""

    key: str
    limit: int
    period: float
    cost: int


@dataclass(frozen=True, slots=True)
class RateState:
    """A counter's state after an admission (consumed if allowed, untouched if denied)."""

    remaining: int
    """Units still available right now."""
    reset: float
    """Seconds until the counter is back to its full limit."""
    retry_after: float
    """Seconds until this request's cost would fit (0 when it fits now; -1: never, cost > limit)."""


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """Reserve ``amount`` on the budget counter ``key`` whose ceiling is ``limit``."""

    key: str
    limit: int
    amount: int
    expire_at: float
    """When the window's counter may be deleted (past the window end)."""


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    spent: int
    reserved: int


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """Answer to :meth:`StateBackend.admit`: everything or nothing was taken."""

    allowed: bool
    denied: Literal["rate", "budget"] | None
    index: int
    """Index of the first violated counter/line in its list; -1 when allowed."""
    rates: tuple[RateState, ...]
    budgets: tuple[BudgetUsage, ...]
    """Per line, after the admission (including this reservation if allowed)."""
    version: int | None = None
    """Value of the requested version counter (see ``version_key``), read in the same trip."""


@dataclass(frozen=True, slots=True)
class BudgetSettle:
    """End a reservation on one line: add ``actual`` to spent, or release when None."""

    key: str
    actual: int | None
    expire_at: float


@dataclass(frozen=True, slots=True)
class RateAdjust:
    """Move a GCRA counter by ``delta`` units (negative refunds, positive charges)."""

    key: str
    limit: int
    period: float
    delta: int


@dataclass(frozen=True, slots=True)
class BreakerParams:
    """Circuit-breaker parameters, passed with every breaker operation."""

    window: float = 30.0
    buckets: int = 10
    min_requests: int = 10
    failure_rate: float = 0.5
    open_seconds: float = 30.0
    half_open_probes: int = 1
    half_open_successes: int = 1
    probe_ttl: float = 120.0


HALF_OPEN_RETRY = 1.0
"""Retry-After (seconds) suggested while every half-open probe slot is taken."""

BreakerStateName = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A deployment's breaker as seen by one operation."""

    state: BreakerStateName
    allowed: bool = True
    """For :meth:`StateBackend.breaker_acquire`: may this call go out."""
    probe: bool = False
    """The call holds a half-open probe slot: report it with ``probe_id``."""
    open_until: float = 0.0
    retry_after: float = 0.0
    successes: int = 0
    failures: int = 0
    probes: int = 0


@runtime_checkable
class Subscription(Protocol):
    """Messages published on one channel, in order, until closed."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


@runtime_checkable
class StateBackend(Protocol):
    """Shared counters, cache and signals. Every method is one round-trip at most.

    Limit/budget/breaker/version methods raise :class:`StateUnavailable` when
    the store is unreachable; cache methods never raise (a dead store is a miss).
    """

    name: str
    in_process: bool
    """True when no call does I/O (the in-memory backend): a caller may await it on the
    request path instead of handing it to a background task."""

    async def admit(
        self,
        rates: Sequence[RateCounter],
        budgets: Sequence[BudgetLine],
        *,
        now: float,
        reservation_id: str,
        reservation_expires: float,
        version_key: str | None = None,
    ) -> AdmitResult:
        """Check all rate counters and budget lines; take all of them or none."""
        ...

    async def settle(
        self,
        reservation_id: str,
        budgets: Sequence[BudgetSettle],
        rates: Sequence[RateAdjust] = (),
        *,
        now: float,
    ) -> None:
        """End a reservation (settle or release) and correct token counters, atomically."""
        ...

    async def budget_usage(self, key: str, *, now: float) -> BudgetUsage: ...

    async def breaker_acquire(
        self, deployment: str, params: BreakerParams, *, now: float, probe_id: str
    ) -> BreakerView: ...

    async def breaker_record(
        self,
        deployment: str,
        params: BreakerParams,
        *,
        ok: bool,
        now: float,
        probe_id: str | None = None,
    ) -> BreakerView: ...

    async def breaker_cooldown(
        self, deployment: str, params: BreakerParams, *, seconds: float, now: float
    ) -> BreakerView: ...

    async def breaker_view(
        self, deployment: str, params: BreakerParams, *, now: float
    ) -> BreakerView: ...

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def cache_delete(self, key: str) -> None: ...

    async def get_version(self, name: str) -> int: ...

    async def bump_version(self, name: str) -> int:
        """Increment and return a version counter (e.g. ``keys`` after a revoke)."""
        ...

    async def publish(self, channel: str, message: str) -> None: ...

    async def subscribe(self, channel: str) -> Subscription: ...

    async def close(self) -> None: ...
