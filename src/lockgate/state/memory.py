"""In-process state backend: the embedded default for a single gateway process.

Every operation runs synchronously inside one event-loop step, so each is
atomic with respect to other tasks in the same process. It is *not* shared
between processes: run :class:`~lockgate.state.redis_state.RedisState` when
more than one gateway (or worker process) serves traffic.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from lockgate.state import gcra
from lockgate.state.base import (
    HALF_OPEN_RETRY,
    AdmitResult,
    BreakerParams,
    BreakerStateName,
    BreakerView,
    BudgetLine,
    BudgetSettle,
    BudgetUsage,
    RateAdjust,
    RateCounter,
)

__all__ = ["MemoryState"]

_SWEEP_EVERY = 4096


@dataclass(slots=True)
class _Budget:
    expire_at: float
    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    """reservation id -> (amount, expires)"""

    def purge(self, now: float) -> None:
        if not self.holds:
            return
        for rid in [r for r, (_, exp) in self.holds.items() if exp <= now]:
            amount, _ = self.holds.pop(rid)
            self.reserved -= amount


@dataclass(slots=True)
class _Breaker:
    state: str = "closed"
    until: float = 0.0
    half_successes: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)
    """bucket index -> [successes, failures]"""
    probes: dict[str, float] = field(default_factory=dict)


class _MemorySubscription:
    def __init__(self, owner: MemoryState, channel: str) -> None:
        self._owner = owner
        self._channel = channel
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        owner._subscribers.setdefault(channel, set()).add(self._queue)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        subs = self._owner._subscribers.get(self._channel)
        if subs is not None:
            subs.discard(self._queue)
        self._queue.put_nowait(None)


class MemoryState:
    """Counters, cache and signals in this process's memory."""

    name = "memory"
    in_process = True

    def __init__(self, *, cache_max_entries: int = 10_000) -> None:
        self._tat: dict[str, float] = {}
        self._budgets: dict[str, _Budget] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._cache_max = cache_max_entries
        self._versions: dict[str, int] = {}
        self._subscribers: dict[str, set[asyncio.Queue[str | None]]] = {}
        self._ops = 0

    # -- limits and budgets ------------------------------------------------

    def _budget(self, key: str, now: float, expire_at: float) -> _Budget:
        b = self._budgets.get(key)
        if b is None or b.expire_at <= now:
            b = _Budget(expire_at=expire_at)
            self._budgets[key] = b
        b.expire_at = max(b.expire_at, expire_at)
        return b

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % _SWEEP_EVERY:
            return
        for k in [k for k, t in self._tat.items() if t <= now]:
            del self._tat[k]
        for k in [k for k, b in self._budgets.items() if b.expire_at <= now]:
            del self._budgets[k]

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
        self._sweep(now)
        version = self._versions.get(version_key, 0) if version_key is not None else None
        new_tats: list[float] = []
        denied_at = -1
        retry: list[float] = []
        for i, c in enumerate(rates):
            tat = self._tat.get(c.key, now)
            new_tat, retry_after = gcra.check(tat, now, c.limit, c.period, c.cost)
            new_tats.append(new_tat)
            retry.append(retry_after)
            if retry_after != 0.0 and denied_at < 0:
                denied_at = i
        if denied_at >= 0:
            states = tuple(
                gcra.state_after(self._tat.get(c.key, now), now, c.limit, c.period, retry[i])
                for i, c in enumerate(rates)
            )
            usage = tuple(self._usage(line.key, now) for line in budgets)
            return AdmitResult(False, "rate", denied_at, states, usage, version)
        lines = [self._budget(line.key, now, line.expire_at) for line in budgets]
        for j, (line, b) in enumerate(zip(budgets, lines, strict=True)):
            b.purge(now)
            if b.spent + b.reserved + line.amount > line.limit:
                states = tuple(
                    gcra.state_after(self._tat.get(c.key, now), now, c.limit, c.period, 0.0)
                    for c in rates
                )
                usage = tuple(BudgetUsage(x.spent, x.reserved) for x in lines)
                return AdmitResult(False, "budget", j, states, usage, version)
        for c, new_tat in zip(rates, new_tats, strict=True):
            self._tat[c.key] = new_tat
        for line, b in zip(budgets, lines, strict=True):
            prev = b.holds.get(reservation_id)
            if prev is not None:
                b.reserved -= prev[0]
            b.holds[reservation_id] = (line.amount, reservation_expires)
            b.reserved += line.amount
        states = tuple(
            gcra.state_after(t, now, c.limit, c.period, 0.0)
            for c, t in zip(rates, new_tats, strict=True)
        )
        usage = tuple(BudgetUsage(b.spent, b.reserved) for b in lines)
        return AdmitResult(True, None, -1, states, usage, version)

    def _usage(self, key: str, now: float) -> BudgetUsage:
        b = self._budgets.get(key)
        if b is None or b.expire_at <= now:
            return BudgetUsage(0, 0)
        b.purge(now)
        return BudgetUsage(b.spent, b.reserved)

    async def settle(
        self,
        reservation_id: str,
        budgets: Sequence[BudgetSettle],
        rates: Sequence[RateAdjust] = (),
        *,
        now: float,
    ) -> None:
        for s in budgets:
            b = self._budget(s.key, now, s.expire_at)
            hold = b.holds.pop(reservation_id, None)
            if hold is not None:
                b.reserved -= hold[0]
            if s.actual is not None:
                b.spent += s.actual
        for a in rates:
            tat = self._tat.get(a.key, now)
            new_tat = gcra.adjust(tat, now, a.limit, a.period, a.delta)
            if new_tat > now:
                self._tat[a.key] = new_tat
            else:
                self._tat.pop(a.key, None)

    async def budget_usage(self, key: str, *, now: float) -> BudgetUsage:
        return self._usage(key, now)

    # -- circuit breaker ---------------------------------------------------

    def _breaker(self, deployment: str) -> _Breaker:
        b = self._breakers.get(deployment)
        if b is None:
            b = self._breakers[deployment] = _Breaker()
        return b

    @staticmethod
    def _view(
        b: _Breaker, p: BreakerParams, now: float, *, allowed: bool = True, probe: bool = False
    ) -> BreakerView:
        width = p.window / p.buckets
        current = math.floor(now / width)
        s = f = 0
        for idx, (bs, bf) in b.buckets.items():
            if idx > current - p.buckets:
                s += bs
                f += bf
        state: BreakerStateName = "closed"
        retry = 0.0
        if b.state == "open":
            state = "open"
            retry = max(0.0, b.until - now)
        elif b.state == "half":
            state = "half_open"
            retry = 0.0 if allowed else HALF_OPEN_RETRY
        return BreakerView(
            state=state,
            allowed=allowed,
            probe=probe,
            open_until=b.until if b.state == "open" else 0.0,
            retry_after=retry,
            successes=s,
            failures=f,
            probes=len(b.probes),
        )

    async def breaker_acquire(
        self, deployment: str, params: BreakerParams, *, now: float, probe_id: str
    ) -> BreakerView:
        b = self._breaker(deployment)
        if b.state == "closed":
            return self._view(b, params, now)
        if b.state == "open":
            if now < b.until:
                return self._view(b, params, now, allowed=False)
            b.state = "half"
            b.half_successes = 0
            b.probes.clear()
        for pid in [k for k, exp in b.probes.items() if exp <= now]:
            del b.probes[pid]
        if len(b.probes) < params.half_open_probes:
            b.probes[probe_id] = now + params.probe_ttl
            return self._view(b, params, now, probe=True)
        return self._view(b, params, now, allowed=False)

    async def breaker_record(
        self,
        deployment: str,
        params: BreakerParams,
        *,
        ok: bool,
        now: float,
        probe_id: str | None = None,
    ) -> BreakerView:
        return self.breaker_record_now(deployment, params, ok=ok, now=now, probe_id=probe_id)

    def breaker_record_now(
        self,
        deployment: str,
        params: BreakerParams,
        *,
        ok: bool,
        now: float,
        probe_id: str | None = None,
    ) -> BreakerView:
        """:meth:`breaker_record` without a coroutine (it does no I/O): what
        :meth:`CircuitBreaker.record_now` calls on the request path."""
        b = self._breaker(deployment)
        was_probe = probe_id is not None and b.probes.pop(probe_id, None) is not None
        if b.state == "half":
            if probe_id is not None or was_probe:
                if ok:
                    b.half_successes += 1
                    if b.half_successes >= params.half_open_successes:
                        self._breakers[deployment] = b = _Breaker()
                else:
                    b.state = "open"
                    b.until = now + params.open_seconds
                    b.probes.clear()
            return self._view(b, params, now)
        if b.state == "open":
            return self._view(b, params, now)
        width = params.window / params.buckets
        current = math.floor(now / width)
        for idx in [i for i in b.buckets if i <= current - params.buckets]:
            del b.buckets[idx]
        cell = b.buckets.setdefault(current, [0, 0])
        cell[0 if ok else 1] += 1
        view = self._view(b, params, now)
        total = view.successes + view.failures
        if total >= params.min_requests and view.failures >= params.failure_rate * total:
            b.state = "open"
            b.until = now + params.open_seconds
            b.buckets.clear()
            view = self._view(b, params, now)
        return view

    async def breaker_cooldown(
        self, deployment: str, params: BreakerParams, *, seconds: float, now: float
    ) -> BreakerView:
        b = self._breaker(deployment)
        until = now + seconds
        if b.state != "open" or b.until < until:
            b.until = until
        b.state = "open"
        b.probes.clear()
        b.buckets.clear()
        return self._view(b, params, now)

    async def breaker_view(
        self, deployment: str, params: BreakerParams, *, now: float
    ) -> BreakerView:
        b = self._breakers.get(deployment)
        if b is None:
            return BreakerView(state="closed")
        return self._view(b, params, now)

    # -- cache -------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        item = self._cache.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= time.monotonic():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        self._cache[key] = (value, time.monotonic() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)

    async def cache_delete(self, key: str) -> None:
        self._cache.pop(key, None)

    # -- versions and pub/sub ----------------------------------------------

    async def get_version(self, name: str) -> int:
        return self._versions.get(name, 0)

    async def bump_version(self, name: str) -> int:
        v = self._versions.get(name, 0) + 1
        self._versions[name] = v
        return v

    async def publish(self, channel: str, message: str) -> None:
        for q in list(self._subscribers.get(channel, ())):
            q.put_nowait(message)

    async def subscribe(self, channel: str) -> _MemorySubscription:
        return _MemorySubscription(self, channel)

    async def close(self) -> None:
        for subs in self._subscribers.values():
            for q in subs:
                q.put_nowait(None)
        self._subscribers.clear()
