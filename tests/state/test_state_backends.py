"""Same behaviour from MemoryState and RedisState: limits, budgets, breaker, cache, signals."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from lockgate.state import (
    AdmitResult,
    BreakerParams,
    BudgetLine,
    BudgetSettle,
    RateAdjust,
    RateCounter,
    StateBackend,
    StateUnavailable,
)
from lockgate.state.redis_state import RedisState

NOW = 1_800_000_000.0
FAR = NOW + 86_400


def rid() -> str:
    return uuid.uuid4().hex


async def admit(
    b: StateBackend,
    rates: list[RateCounter],
    budgets: list[BudgetLine] | None = None,
    now: float = NOW,
    res: str | None = None,
) -> AdmitResult:
    return await b.admit(
        rates, budgets or [], now=now, reservation_id=res or rid(), reservation_expires=now + 600
    )


# -- rate limits -------------------------------------------------------------


async def test_exactly_n_then_deny_with_retry_after(backend: StateBackend) -> None:
    c = RateCounter("rl:k:rpm", limit=7, period=60.0, cost=1)
    for i in range(7):
        r = await admit(backend, [c])
        assert r.allowed, i
        assert r.rates[0].remaining == 6 - i
    r = await admit(backend, [c])
    assert not r.allowed and r.denied == "rate" and r.index == 0
    assert r.rates[0].remaining == 0
    assert r.rates[0].retry_after == pytest.approx(60 / 7, abs=1e-3)
    assert r.rates[0].reset == pytest.approx(60.0, abs=1e-3)
    # one emission interval later exactly one more fits
    later = NOW + 60 / 7 + 1e-4
    assert (await admit(backend, [c], now=later)).allowed
    assert not (await admit(backend, [c], now=later)).allowed
    # a full period later the whole burst is back
    r = await admit(backend, [c], now=NOW + 200)
    assert r.allowed and r.rates[0].remaining == 6


async def test_multi_counter_all_or_nothing(backend: StateBackend) -> None:
    key = RateCounter("rl:key:a:rpm", limit=5, period=60.0, cost=1)
    team = RateCounter("rl:team:t:rpm", limit=2, period=60.0, cost=1)
    tok = RateCounter("rl:model:m:tpm", limit=1000, period=60.0, cost=100)
    assert (await admit(backend, [key, team, tok])).allowed
    assert (await admit(backend, [key, team, tok])).allowed
    r = await admit(backend, [key, team, tok])
    assert not r.allowed and r.denied == "rate" and r.index == 1
    # nothing was taken from the other counters by the denied call
    assert r.rates[0].remaining == 3
    assert r.rates[2].remaining == 800
    r = await admit(backend, [key, tok])
    assert r.allowed and r.rates[0].remaining == 2 and r.rates[1].remaining == 700


async def test_token_refund_and_charge(backend: StateBackend) -> None:
    tpm = RateCounter("rl:k:tpm", limit=100, period=60.0, cost=60)
    assert (await admit(backend, [tpm])).allowed
    r = await admit(backend, [tpm])
    assert not r.allowed and r.rates[0].remaining == 40
    assert r.rates[0].retry_after == pytest.approx(12.0, abs=1e-3)
    # the call really used 20 tokens: refund 40
    await backend.settle("x", [], [RateAdjust(tpm.key, 100, 60.0, -40)], now=NOW)
    r = await admit(backend, [tpm])
    assert r.allowed and r.rates[0].remaining == 20
    # it really used 80: charge 20 more, which may push below zero (no denial on charge)
    await backend.settle("x", [], [RateAdjust(tpm.key, 100, 60.0, 50)], now=NOW)
    r = await admit(backend, [RateCounter(tpm.key, 100, 60.0, 1)])
    assert not r.allowed and r.rates[0].retry_after == pytest.approx(18.6, abs=1e-3)


async def test_cost_above_limit_never_fits(backend: StateBackend) -> None:
    r = await admit(backend, [RateCounter("rl:k:tpm", limit=10, period=60.0, cost=11)])
    assert not r.allowed and r.rates[0].retry_after == -1


# -- budgets -----------------------------------------------------------------


async def test_budget_reserve_settle_release(backend: StateBackend) -> None:
    line = BudgetLine("bg:key:a:usd:d:2027-01-15", limit=1000, amount=400, expire_at=FAR)
    r1, r2, r3 = rid(), rid(), rid()
    assert (await admit(backend, [], [line], res=r1)).allowed
    r = await admit(backend, [], [line], res=r2)
    assert r.allowed and r.budgets[0].reserved == 800
    r = await admit(backend, [], [line], res=r3)
    assert not r.allowed and r.denied == "budget" and r.index == 0
    assert (r.budgets[0].spent, r.budgets[0].reserved) == (0, 800)
    # settle r1 at its true cost (less than the estimate): spent 150
    await backend.settle(r1, [BudgetSettle(line.key, 150, FAR)], now=NOW)
    u = await backend.budget_usage(line.key, now=NOW)
    assert (u.spent, u.reserved) == (150, 400)
    # settle twice is harmless for the reservation part
    await backend.settle(r2, [BudgetSettle(line.key, None, FAR)], now=NOW)
    await backend.settle(r2, [BudgetSettle(line.key, None, FAR)], now=NOW)
    u = await backend.budget_usage(line.key, now=NOW)
    assert (u.spent, u.reserved) == (150, 0)
    assert (await admit(backend, [], [line], res=r3)).allowed


async def test_budget_lines_all_or_nothing_with_rates(backend: StateBackend) -> None:
    rpm = RateCounter("rl:k:rpm", limit=10, period=60.0, cost=1)
    key_line = BudgetLine("bg:key:a:tok:d:x", limit=100, amount=60, expire_at=FAR)
    team_line = BudgetLine("bg:team:t:tok:d:x", limit=1000, amount=60, expire_at=FAR)
    assert (await admit(backend, [rpm], [team_line, key_line])).allowed
    r = await admit(backend, [rpm], [team_line, key_line])
    assert not r.allowed and r.denied == "budget" and r.index == 1
    assert r.budgets[0].reserved == 60  # team line untouched by the denied call
    assert r.rates[0].remaining == 9  # and the request counter too


async def test_abandoned_reservation_expires(backend: StateBackend) -> None:
    line = BudgetLine("bg:key:a:usd:m:x", limit=100, amount=100, expire_at=FAR)
    assert (await admit(backend, [], [line])).allowed
    assert not (await admit(backend, [], [line], now=NOW + 599)).allowed
    # reservations expire at now+600: a crashed gateway does not hold budget forever
    assert (await admit(backend, [], [line], now=NOW + 601)).allowed


async def test_hundred_concurrent_reservations(backend: StateBackend) -> None:
    line = BudgetLine("bg:team:t:usd:d:x", limit=500, amount=10, expire_at=FAR)
    results = await asyncio.gather(*(admit(backend, [], [line]) for _ in range(100)))
    assert sum(r.allowed for r in results) == 50
    u = await backend.budget_usage(line.key, now=NOW)
    assert (u.spent, u.reserved) == (0, 500)


async def test_version_read_in_admit(backend: StateBackend) -> None:
    c = RateCounter("rl:k:rpm", limit=100, period=60.0, cost=1)
    r = await backend.admit(
        [c], [], now=NOW, reservation_id=rid(), reservation_expires=NOW, version_key="keys"
    )
    assert r.version == 0
    assert await backend.bump_version("keys") == 1
    assert await backend.get_version("keys") == 1
    r = await backend.admit(
        [c], [], now=NOW, reservation_id=rid(), reservation_expires=NOW, version_key="keys"
    )
    assert r.version == 1


# -- circuit breaker ---------------------------------------------------------

P = BreakerParams(window=10.0, buckets=5, min_requests=4, failure_rate=0.5,
                  open_seconds=30.0, half_open_probes=2, half_open_successes=2)


async def test_breaker_opens_on_error_rate(backend: StateBackend) -> None:
    d = "dep-a"
    for ok in (True, False, True):
        v = await backend.breaker_record(d, P, ok=ok, now=NOW)
        assert v.state == "closed"
    assert (v.successes, v.failures) == (2, 1)
    v = await backend.breaker_record(d, P, ok=False, now=NOW + 1)
    assert v.state == "open" and v.open_until == pytest.approx(NOW + 31)
    v = await backend.breaker_acquire(d, P, now=NOW + 2, probe_id="p0")
    assert not v.allowed and v.retry_after == pytest.approx(29.0)


async def test_breaker_old_failures_leave_the_window(backend: StateBackend) -> None:
    d = "dep-b"
    for _ in range(3):
        await backend.breaker_record(d, P, ok=False, now=NOW)
    # 20 s later those failures are outside the 10 s window
    v = await backend.breaker_record(d, P, ok=False, now=NOW + 20)
    assert v.state == "closed" and v.failures == 1


async def test_breaker_half_open_probes_then_close(backend: StateBackend) -> None:
    d = "dep-c"
    await backend.breaker_cooldown(d, P, seconds=5.0, now=NOW)
    assert not (await backend.breaker_acquire(d, P, now=NOW + 1, probe_id="x")).allowed
    t = NOW + 6
    a = await backend.breaker_acquire(d, P, now=t, probe_id="p1")
    b = await backend.breaker_acquire(d, P, now=t, probe_id="p2")
    c = await backend.breaker_acquire(d, P, now=t, probe_id="p3")
    assert a.allowed and a.probe and a.state == "half_open"
    assert b.allowed and b.probe
    assert not c.allowed and c.state == "half_open" and c.retry_after > 0
    v = await backend.breaker_record(d, P, ok=True, now=t, probe_id="p1")
    assert v.state == "half_open"
    # a freed slot can be taken again
    assert (await backend.breaker_acquire(d, P, now=t, probe_id="p4")).probe
    v = await backend.breaker_record(d, P, ok=True, now=t, probe_id="p2")
    assert v.state == "closed"
    v = await backend.breaker_acquire(d, P, now=t, probe_id="p5")
    assert v.allowed and not v.probe and v.state == "closed"


async def test_breaker_failed_probe_reopens(backend: StateBackend) -> None:
    d = "dep-d"
    await backend.breaker_cooldown(d, P, seconds=5.0, now=NOW)
    assert (await backend.breaker_acquire(d, P, now=NOW + 6, probe_id="p1")).probe
    v = await backend.breaker_record(d, P, ok=False, now=NOW + 7, probe_id="p1")
    assert v.state == "open" and v.open_until == pytest.approx(NOW + 37)


async def test_breaker_cooldown_extends_only(backend: StateBackend) -> None:
    d = "dep-e"
    v = await backend.breaker_cooldown(d, P, seconds=60.0, now=NOW)
    assert v.open_until == pytest.approx(NOW + 60)
    v = await backend.breaker_cooldown(d, P, seconds=5.0, now=NOW + 1)
    assert v.open_until == pytest.approx(NOW + 60)
    v = await backend.breaker_view(d, P, now=NOW + 2)
    assert v.state == "open"


async def test_breaker_probe_lease_expires(backend: StateBackend) -> None:
    d = "dep-f"
    p = BreakerParams(half_open_probes=1, probe_ttl=10.0, open_seconds=1.0)
    await backend.breaker_cooldown(d, p, seconds=1.0, now=NOW)
    assert (await backend.breaker_acquire(d, p, now=NOW + 2, probe_id="lost")).probe
    assert not (await backend.breaker_acquire(d, p, now=NOW + 3, probe_id="q")).allowed
    # the instance holding "lost" died: its slot frees itself after probe_ttl
    assert (await backend.breaker_acquire(d, p, now=NOW + 13, probe_id="q")).probe


# -- cache and signals -------------------------------------------------------


async def test_cache_roundtrip_and_ttl(backend: StateBackend) -> None:
    assert await backend.cache_get("team:t:abc") is None
    await backend.cache_set("team:t:abc", b"\x00payload", 30.0)
    assert await backend.cache_get("team:t:abc") == b"\x00payload"
    await backend.cache_delete("team:t:abc")
    assert await backend.cache_get("team:t:abc") is None
    await backend.cache_set("short", b"v", 0.05)
    await asyncio.sleep(0.15)
    assert await backend.cache_get("short") is None


async def test_publish_subscribe(backend: StateBackend) -> None:
    sub = await backend.subscribe("keys")
    got: list[str] = []

    async def reader() -> None:
        async for msg in sub:
            got.append(msg)
            if len(got) == 2:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    await backend.publish("keys", "revoked:k1")
    await backend.publish("keys", "revoked:k2")
    await asyncio.wait_for(task, 5.0)
    await sub.close()
    assert got == ["revoked:k1", "revoked:k2"]


# -- Redis only --------------------------------------------------------------


@pytest.mark.redis
async def test_noscript_reload(redis_prefix: str) -> None:
    from lockgate.state import lua
    from lockgate.state.redis_state import _Script

    state = RedisState(prefix=redis_prefix, timeout=2.0)
    # a script body the server has never seen: EVALSHA answers NOSCRIPT, we load and retry
    state._usage = _Script(lua.USAGE + f"\n-- {uuid.uuid4().hex}\n")
    u = await state.budget_usage("bg:none", now=NOW)
    assert (u.spent, u.reserved) == (0, 0)
    assert state._usage.loads == 1
    await state.budget_usage("bg:none", now=NOW)
    assert state._usage.loads == 1
    await state.close()


@pytest.mark.redis
async def test_breaker_shared_between_instances(redis_prefix: str) -> None:
    a = RedisState(prefix=redis_prefix, timeout=2.0)
    b = RedisState(prefix=redis_prefix, timeout=2.0)
    try:
        p = BreakerParams(min_requests=2, failure_rate=0.5, half_open_probes=1)
        await a.breaker_record("d", p, ok=False, now=NOW)
        v = await b.breaker_record("d", p, ok=False, now=NOW)
        assert v.state == "open"
        assert not (await a.breaker_acquire("d", p, now=NOW + 1, probe_id="x")).allowed
        t = NOW + p.open_seconds + 1
        assert (await a.breaker_acquire("d", p, now=t, probe_id="pa")).probe
        assert not (await b.breaker_acquire("d", p, now=t, probe_id="pb")).allowed
        await a.breaker_record("d", p, ok=True, now=t, probe_id="pa")
        assert (await b.breaker_acquire("d", p, now=t, probe_id="pb")).state == "closed"
    finally:
        await a.close()
        await b.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def test_redis_down_raises_state_unavailable_and_cache_misses() -> None:
    state = RedisState(f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.2)
    with pytest.raises(StateUnavailable) as info:
        await admit(state, [RateCounter("rl:x", 1, 1.0, 1)])
    assert info.value.status == 503 and "unreachable" in info.value.message
    with pytest.raises(StateUnavailable):
        await state.breaker_acquire("d", P, now=NOW, probe_id="p")
    assert await state.cache_get("k") is None
    await state.cache_set("k", b"v", 10)
    assert state.cache_errors == 2
    await state.close()


async def test_redis_blackhole_times_out() -> None:
    # a server that accepts the connection but never answers: the op timeout fires
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = RedisState(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        with pytest.raises(StateUnavailable):
            await admit(state, [RateCounter("rl:x", 1, 1.0, 1)])
    finally:
        server.close()
        await state.close()


@pytest.mark.redis
async def test_noscript_reload_inside_a_pipelined_batch(redis_prefix: str) -> None:
    from lockgate.state import lua
    from lockgate.state.redis_state import _Script

    state = RedisState(prefix=redis_prefix, timeout=2.0)
    state._admit = _Script(lua.ADMIT + f"\n-- {uuid.uuid4().hex}\n")
    line = BudgetLine("bg:batch", limit=30, amount=1, expire_at=FAR)
    results = await asyncio.gather(*(admit(state, [], [line]) for _ in range(40)))
    assert sum(r.allowed for r in results) == 30
    assert state._conn.pipelined_writes >= 1  # the calls went out pipelined
    await state.close()
