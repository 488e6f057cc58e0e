"""Budgets through the Governor: windows, settle, release, tickets, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from gov_support import Clock

from lockgate.governance import (
    BudgetExceeded,
    BudgetGuard,
    Governor,
    Scope,
    estimate_call,
    tokens_for_text,
)
from lockgate.governance.estimate import PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS
from lockgate.settings import BudgetConfig, GovernanceConfig
from lockgate.state import StateBackend


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


async def test_settle_replaces_estimate(backend: StateBackend) -> None:
    clock = Clock(ts(2027, 5, 3, 10))
    gov = Governor(backend, clock=clock)
    team = Scope("team", "eng", budget=BudgetConfig(daily=1.0))
    t = await gov.admit([team], tokens=1000, cost=0.40)
    [st] = await gov.budgets.status(team)
    assert (st.spent, st.reserved, st.limit) == (0.0, 0.40, 1.0)
    await t.settle(tokens=300, cost=0.123456)
    [st] = await gov.budgets.status(team)
    assert (st.spent, st.reserved) == (0.123456, 0.0)
    assert st.period == "2027-05-03" and st.resets_at == "2027-05-04T00:00:00Z"


async def test_denial_names_scope_and_reset(backend: StateBackend) -> None:
    clock = Clock(ts(2027, 5, 3, 23, 0, 0))
    gov = Governor(backend, clock=clock)
    key = Scope("key", "k9", budget=BudgetConfig(daily=0.5))
    await (await gov.admit([key], tokens=1, cost=0.3)).settle()
    await gov.admit([key], tokens=1, cost=0.2)  # in flight, holds the rest
    with pytest.raises(BudgetExceeded) as info:
        await gov.admit([key], tokens=1, cost=0.01)
    err = info.value
    assert err.status == 429 and err.code == "budget_exceeded" and err.type == "insufficient_quota"
    assert err.headers["retry-after"] == "3600"
    assert "key k9" in err.message and "2027-05-04T00:00:00Z" in err.message
    assert gov.stats.budget_denials == 1


async def test_daily_window_rolls_over_at_utc_midnight(backend: StateBackend) -> None:
    clock = Clock(ts(2027, 1, 31, 23, 59, 59))
    gov = Governor(backend, clock=clock)
    key = Scope("key", "k", budget=BudgetConfig(daily=1.0, monthly=1.5))
    await (await gov.admit([key], tokens=1, cost=1.0)).settle()
    with pytest.raises(BudgetExceeded, match="daily"):
        await gov.admit([key], tokens=1, cost=0.01)
    clock.now = ts(2027, 2, 1, 0, 0, 0)  # new day and new month
    await (await gov.admit([key], tokens=1, cost=1.0)).settle()
    clock.now = ts(2027, 2, 2, 0, 0, 1)  # new day, same month: the monthly ceiling binds
    await (await gov.admit([key], tokens=1, cost=0.5)).settle()
    with pytest.raises(BudgetExceeded, match="monthly"):
        await gov.admit([key], tokens=1, cost=0.01)
    clock.now = ts(2027, 3, 1)
    await (await gov.admit([key], tokens=1, cost=0.5)).settle()


async def test_token_budget_and_team_scope(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(ts(2027, 6, 1, 8)))
    key = Scope("key", "k", budget=BudgetConfig(daily_tokens=10_000))
    team = Scope("team", "t", budget=BudgetConfig(monthly_tokens=1_500))
    t = await gov.admit([key, team], tokens=1_000)
    await t.settle(tokens=1_200)
    with pytest.raises(BudgetExceeded, match="team t"):
        await gov.admit([key, team], tokens=400)
    statuses = await gov.budgets.status(key)
    assert statuses[0].spent == 1_200  # the denied call reserved nothing on the key either


async def test_spent_budget_blocks_even_zero_cost_calls(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(ts(2027, 6, 1, 8)))
    key = Scope("key", "k", budget=BudgetConfig(daily=0.001))
    t = await gov.admit([key], tokens=1, cost=0.0)
    await t.settle(cost=0.002)  # the true cost overshot (bounded by this one in-flight call)
    with pytest.raises(BudgetExceeded):
        await gov.admit([key], tokens=1, cost=0.0)


async def test_hundred_concurrent_reservations_never_exceed(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(ts(2027, 6, 1, 8)))
    team = Scope("team", "t", budget=BudgetConfig(daily=5.0))

    async def one() -> bool:
        try:
            await gov.admit([team], tokens=10, cost=0.1)
        except BudgetExceeded:
            return False
        return True

    granted = await asyncio.gather(*(one() for _ in range(100)))
    assert sum(granted) == 50
    [st] = await gov.budgets.status(team)
    assert st.spent + st.reserved == pytest.approx(5.0)
    assert gov.stats.budget_denials == 50


async def test_ticket_context_manager_paths(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(ts(2027, 6, 1, 8)))
    team = Scope("team", "t", budget=BudgetConfig(daily=10.0))

    async def spent_reserved() -> tuple[float, float]:
        [st] = await gov.budgets.status(team)
        return st.spent, st.reserved

    # failure before any usage: released
    with pytest.raises(RuntimeError):
        async with await gov.admit([team], tokens=10, cost=1.0):
            raise RuntimeError("upstream down")
    assert await spent_reserved() == (0.0, 0.0)
    # stream cut after some usage: settles with what was recorded
    with pytest.raises(ConnectionError):
        async with await gov.admit([team], tokens=10, cost=1.0) as t:
            t.record(tokens=5, cost=0.25)
            raise ConnectionError("client went away")
    assert await spent_reserved() == (0.25, 0.0)
    # success without a reported usage: settles at the estimate
    async with await gov.admit([team], tokens=10, cost=1.0):
        pass
    assert await spent_reserved() == (1.25, 0.0)
    # explicit settle inside the block wins; exit does nothing more
    async with await gov.admit([team], tokens=10, cost=1.0) as t:
        await t.settle(cost=0.5)
    assert await spent_reserved() == (1.75, 0.0)


async def test_cancelled_task_still_settles(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(ts(2027, 6, 1, 8)))
    team = Scope("team", "t", budget=BudgetConfig(daily=10.0))
    started = asyncio.Event()

    async def handler() -> None:
        async with await gov.admit([team], tokens=10, cost=1.0) as t:
            t.record(cost=0.3)
            started.set()
            await asyncio.sleep(30)  # streaming; the client disconnects

    task = asyncio.create_task(handler())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    [st] = await gov.budgets.status(team)
    assert (st.spent, st.reserved) == (0.3, 0.0)


async def test_budget_guard_alone(backend: StateBackend) -> None:
    guard = BudgetGuard(backend, clock=Clock(ts(2027, 6, 1, 8)))
    scope = Scope("bu", "retail", budget=BudgetConfig(monthly=2.0))
    t = await guard.reserve([scope], tokens=1, cost=1.5)
    with pytest.raises(BudgetExceeded):
        await guard.reserve([scope], tokens=1, cost=1.0)
    await t.release()
    await (await guard.reserve([scope], tokens=1, cost=1.0)).settle()
    assert guard.denials == 1


def test_estimate_from_body() -> None:
    """Prompt: UTF-8 bytes of what the model reads + framing; completion: the cap (x n)."""
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    e = estimate_call(body, default_max_tokens=1024, prices=[(1.0, 2.0), (3.0, 1.0)])
    prompt = 400 + len("user") + PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS
    assert (e.prompt_tokens, e.completion_tokens, e.tokens) == (prompt, 50, prompt + 50)
    assert e.cost == pytest.approx((prompt * 3.0 + 50 * 2.0) / 1e6)
    e = estimate_call({"messages": [], "n": 2}, default_max_tokens=100)
    assert (e.tokens, e.cost) == (PER_REQUEST_TOKENS + 200, 0.0)
    e = estimate_call({"input": ["abcd" * 10]}, default_max_tokens=100)
    assert e.tokens == 40 + 2  # bytes + [CLS]/[SEP]; embeddings have no completion
    e = estimate_call(body, default_max_tokens=1024, prompt_tokens=7)  # an exact count wins
    assert (e.prompt_tokens, e.tokens) == (7, 57)
    assert GovernanceConfig().default_max_tokens == 1024


def test_text_estimate_rounds_up() -> None:
    """The preview estimate never counts fewer tokens than len // 4, nor 0 for some text."""
    assert [tokens_for_text("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
