"""Admission: one round-trip for every limit and budget of a call, and the ticket that ends it.

:func:`admit` sends the planned rate counters and budget lines to the state
backend in one atomic operation and returns a :class:`Ticket`, or raises the
client error for the first violated limit (429 ``rate_limit_exceeded``,
429 ``budget_exceeded``) or :class:`~lockgate.state.base.StateUnavailable`
(503) when the backend is down and policy is ``fail_closed``.

A :class:`Ticket` must end exactly once: :meth:`Ticket.settle` with the true
usage, or :meth:`Ticket.release` when nothing was consumed. Used as an async
context manager it guarantees that: on exit it settles with the usage
recorded so far (:meth:`Ticket.record`, for streams cut mid-way, timeouts and
client disconnects), releases when nothing was recorded and the block raised,
and settles at the estimate when nothing was recorded but the block succeeded.
The final write is shielded from task cancellation, and a write that cannot
reach the backend is queued in :class:`Core` and retried later.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from lockgate.governance.budget import PlannedLine, budget_denial
from lockgate.governance.limits import PlannedCounter, rate_denial, rate_headers
from lockgate.governance.money import MICROS, to_micros
from lockgate.governance.stats import GovernanceStats
from lockgate.settings.governance import GovernanceConfig
from lockgate.state.base import BudgetSettle, RateAdjust, StateBackend, StateUnavailable

__all__ = ["Core", "PendingSettle", "Ticket", "admit", "cost_to_micros_ceil"]

_BACKGROUND: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class PendingSettle:
    reservation_id: str
    budgets: tuple[BudgetSettle, ...]
    rates: tuple[RateAdjust, ...]


@dataclass(slots=True)
class Core:
    """What limiter, budget guard and governor share: backend, config, clock, counters."""

    state: StateBackend
    config: GovernanceConfig
    clock: Callable[[], float]
    stats: GovernanceStats = field(default_factory=GovernanceStats)
    pending: deque[PendingSettle] = field(default_factory=deque)
    _retrying: bool = False

    def defer(self, item: PendingSettle) -> None:
        if len(self.pending) >= self.config.max_pending_settles:
            return
        self.pending.append(item)
        self.stats.pending_settles = len(self.pending)

    async def retry_pending(self) -> int:
        """Send queued settles; stop at the first failure. Returns how many went through."""
        done = 0
        while self.pending:
            item = self.pending[0]
            try:
                await self.state.settle(item.reservation_id, item.budgets, item.rates,
                                        now=self.clock())
            except StateUnavailable:
                break
            self.pending.popleft()
            done += 1
        self.stats.pending_settles = len(self.pending)
        return done

    def kick_pending(self) -> None:
        if not self.pending or self._retrying:
            return
        self._retrying = True

        async def run() -> None:
            try:
                await self.retry_pending()
            finally:
                self._retrying = False

        task = asyncio.get_running_loop().create_task(run())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


class Ticket:
    """An admitted call's hold on limits and budgets. End it once (see module docs)."""

    __slots__ = (
        "_core",
        "_cost_used",
        "_counters",
        "_lines",
        "_tokens_used",
        "cost_estimate_micros",
        "degraded",
        "done",
        "headers",
        "reservation_id",
        "tokens_estimate",
        "version",
    )

    def __init__(
        self,
        core: Core,
        *,
        reservation_id: str,
        counters: Sequence[PlannedCounter],
        lines: Sequence[PlannedLine],
        tokens_estimate: int,
        cost_estimate_micros: int,
        headers: dict[str, str],
        version: int | None,
        degraded: bool = False,
    ) -> None:
        self._core = core
        self._counters = tuple(counters)
        self._lines = tuple(lines)
        self.reservation_id = reservation_id
        self.tokens_estimate = tokens_estimate
        self.cost_estimate_micros = cost_estimate_micros
        self.headers = headers
        """``x-ratelimit-*`` headers to send with the answer (empty when no limits apply)."""
        self.version = version
        """The configured version counter (e.g. ``keys``) as read during admission."""
        self.degraded = degraded
        """True when admitted without counting (state backend down, policy fail_open)."""
        self.done = False
        self._tokens_used: int | None = None
        self._cost_used: int | None = None

    def record(self, *, tokens: int | None = None, cost: float | None = None) -> None:
        """Usage known so far (totals, not increments): what exit settles with if cut short."""
        if tokens is not None:
            self._tokens_used = max(0, tokens)
        if cost is not None:
            self._cost_used = max(0, to_micros(cost))

    async def settle(self, *, tokens: int | None = None, cost: float | None = None) -> None:
        """Replace the estimate with the true usage (defaults: recorded, else the estimate)."""
        self.record(tokens=tokens, cost=cost)
        used_tokens = self._tokens_used if self._tokens_used is not None else self.tokens_estimate
        used_cost = self._cost_used if self._cost_used is not None else self.cost_estimate_micros
        budgets = tuple(
            BudgetSettle(p.line.key, used_cost if p.metric == "cost" else used_tokens,
                         p.line.expire_at)
            for p in self._lines
        )
        delta = used_tokens - self.tokens_estimate
        rates = tuple(
            RateAdjust(p.counter.key, p.counter.limit, p.counter.period, delta)
            for p in self._counters
            if p.metric == "tokens" and delta != 0
        )
        self._core.stats.settles += 1
        await self._finish(budgets, rates)

    async def release(self) -> None:
        """Nothing was consumed: free the reservation and refund the token estimate."""
        budgets = tuple(BudgetSettle(p.line.key, None, p.line.expire_at) for p in self._lines)
        rates = tuple(
            RateAdjust(p.counter.key, p.counter.limit, p.counter.period, -self.tokens_estimate)
            for p in self._counters
            if p.metric == "tokens" and self.tokens_estimate > 0
        )
        self._core.stats.releases += 1
        await self._finish(budgets, rates)

    async def _finish(
        self, budgets: tuple[BudgetSettle, ...], rates: tuple[RateAdjust, ...]
    ) -> None:
        if self.done:
            return
        self.done = True
        if self.degraded or (not budgets and not rates):
            return
        item = PendingSettle(self.reservation_id, budgets, rates)
        core = self._core

        async def send() -> None:
            try:
                await core.state.settle(item.reservation_id, item.budgets, item.rates,
                                        now=core.clock())
            except StateUnavailable:
                core.stats.settle_errors += 1
                core.defer(item)

        task = asyncio.get_running_loop().create_task(send())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        # shield: a cancelled caller (client went away) still gets its settle written
        await asyncio.shield(task)

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.done:
            return
        if exc_type is None or self._tokens_used is not None or self._cost_used is not None:
            await self.settle()
        else:
            await self.release()


async def admit(
    core: Core,
    counters: Sequence[PlannedCounter],
    lines: Sequence[PlannedLine],
    tokens: int,
    cost_micros: int,
    *,
    now: float | None = None,
) -> Ticket:
    """Take every counter and line at once or raise the denial (see module docs)."""
    if now is None:
        now = core.clock()
    rid = uuid.uuid4().hex
    cfg = core.config
    if not counters and not lines and cfg.version_key is None:
        core.stats.admitted += 1  # nothing to count: no round-trip
        return Ticket(core, reservation_id=rid, counters=(), lines=(), tokens_estimate=tokens,
                      cost_estimate_micros=cost_micros, headers={}, version=None)
    try:
        result = await core.state.admit(
            [p.counter for p in counters],
            [p.line for p in lines],
            now=now,
            reservation_id=rid,
            reservation_expires=now + cfg.reservation_ttl_seconds,
            version_key=cfg.version_key,
        )
    except StateUnavailable:
        core.stats.state_errors += 1
        closed = (counters and cfg.limits_on_state_error == "fail_closed") or (
            lines and cfg.budgets_on_state_error == "fail_closed"
        )
        if closed:
            raise
        core.stats.fail_open_admits += 1
        return Ticket(core, reservation_id=rid, counters=counters, lines=lines,
                      tokens_estimate=tokens, cost_estimate_micros=cost_micros, headers={},
                      version=None, degraded=True)
    if not result.allowed:
        if result.denied == "rate":
            core.stats.limit_hits += 1
            raise rate_denial(counters, result.rates, result.index)
        core.stats.budget_denials += 1
        raise budget_denial(lines, result.budgets, result.index, now)
    core.stats.admitted += 1
    if core.pending:
        core.kick_pending()
    return Ticket(core, reservation_id=rid, counters=counters, lines=lines,
                  tokens_estimate=tokens, cost_estimate_micros=cost_micros,
                  headers=rate_headers(counters, result.rates) if counters else {},
                  version=result.version)


def cost_to_micros_ceil(cost: float) -> int:
    """Currency units to micro-units, rounded up (for estimates)."""
    return math.ceil(cost * MICROS - 1e-9)
