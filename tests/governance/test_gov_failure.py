"""When the state backend is down: fail_closed raises StateUnavailable, fail_open lets calls by."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import pytest
from gov_support import Clock

from lockgate.governance import CircuitBreaker, Governor, Scope
from lockgate.settings import BudgetConfig, GovernanceConfig, LimitsConfig
from lockgate.state import (
    BudgetSettle,
    MemoryState,
    RateAdjust,
    StateBackend,
    StateUnavailable,
)
from lockgate.state.redis_state import RedisState

T0 = 1_900_000_000.0
KEY = Scope("key", "k", limits=LimitsConfig(rpm=10))
TEAM = Scope("team", "t", budget=BudgetConfig(daily=1.0))


def dead_redis() -> RedisState:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return RedisState(f"redis://127.0.0.1:{port}/0", "lg:", timeout=0.2)


async def test_fail_closed_by_default() -> None:
    state = dead_redis()
    gov = Governor(state, clock=Clock(T0))
    with pytest.raises(StateUnavailable) as info:
        await asyncio.wait_for(gov.admit([KEY, TEAM], tokens=10, cost=0.1), 10)
    assert info.value.status == 503 and info.value.code == "state_unavailable"
    assert gov.stats.state_errors == 1 and gov.stats.admitted == 0
    await state.close()


async def test_fail_open_admits_degraded() -> None:
    state = dead_redis()
    cfg = GovernanceConfig(limits_on_state_error="fail_open", budgets_on_state_error="fail_open")
    gov = Governor(state, cfg, clock=Clock(T0))
    async with await gov.admit([KEY, TEAM], tokens=10, cost=0.1) as t:
        assert t.degraded and t.headers == {}
    assert gov.stats.fail_open_admits == 1
    await state.close()


async def test_policy_is_per_use() -> None:
    state = dead_redis()
    cfg = GovernanceConfig(limits_on_state_error="fail_open")  # budgets stay fail_closed
    gov = Governor(state, cfg, clock=Clock(T0))
    t = await gov.admit([KEY], tokens=10)  # only limits apply: open
    assert t.degraded
    with pytest.raises(StateUnavailable):
        await gov.admit([KEY, TEAM], tokens=10, cost=0.1)  # a budget applies: closed
    await state.close()


async def test_breaker_fails_open() -> None:
    state = dead_redis()
    br = CircuitBreaker(state, clock=Clock(T0))
    p = await br.acquire("d")
    assert p.allowed
    assert await br.record(p, False) is None
    assert br.state_errors == 2
    await state.close()


class FlakyState(MemoryState):
    """A MemoryState whose settle fails while ``down`` is set (a Redis blip after admission)."""

    down = False

    async def settle(
        self,
        reservation_id: str,
        budgets: Sequence[BudgetSettle],
        rates: Sequence[RateAdjust] = (),
        *,
        now: float,
    ) -> None:
        if self.down:
            raise StateUnavailable("blip")
        await super().settle(reservation_id, budgets, rates, now=now)


async def test_failed_settle_is_retried_later() -> None:
    state = FlakyState()
    gov = Governor(state, clock=Clock(T0))
    t = await gov.admit([TEAM], tokens=10, cost=0.5)
    state.down = True
    await t.settle(cost=0.2)  # does not raise into the request
    assert gov.stats.settle_errors == 1 and gov.stats.pending_settles == 1
    state.down = False
    assert await gov.retry_pending() == 1
    [st] = await gov.budgets.status(TEAM)
    assert (st.spent, st.reserved) == (0.2, 0.0)


async def test_pending_settles_flush_after_next_admission() -> None:
    state = FlakyState()
    gov = Governor(state, clock=Clock(T0))
    t = await gov.admit([TEAM], tokens=10, cost=0.5)
    state.down = True
    await t.release()
    state.down = False
    await (await gov.admit([TEAM], tokens=10, cost=0.1)).settle(cost=0.1)
    await asyncio.sleep(0.01)
    assert gov.stats.pending_settles == 0
    [st] = await gov.budgets.status(TEAM)
    assert (st.spent, st.reserved) == (0.1, 0.0)


def test_backends_satisfy_protocol() -> None:
    assert isinstance(MemoryState(), StateBackend)
    assert isinstance(RedisState(), StateBackend)
