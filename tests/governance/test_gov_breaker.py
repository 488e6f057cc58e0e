"""CircuitBreaker: error rate, half-open probes, cooldowns, sharing across instances."""

from __future__ import annotations

import pytest
from gov_support import REDIS_URL, Clock

from lockgate.governance import CircuitBreaker
from lockgate.settings import BreakerConfig
from lockgate.state import StateBackend
from lockgate.state.redis_state import RedisState

T0 = 1_900_000_000.0
CFG = BreakerConfig(window_seconds=10, buckets=10, min_requests=4, failure_rate=0.5,
                    open_seconds=20, half_open_probes=1, local_cache_seconds=0)


async def test_opens_on_error_rate_then_probes_and_closes(backend: StateBackend) -> None:
    clock = Clock(T0)
    br = CircuitBreaker(backend, CFG, clock=clock)
    for ok in (True, True, False):
        p = await br.acquire("d1")
        assert p.allowed
        await br.record(p, ok)
    p = await br.acquire("d1")
    await br.record_error(p, "server_error")  # 2 of 4 failed: open
    assert br.last_state("d1") == "open" and br.opened == 1
    p = await br.acquire("d1")
    assert not p.allowed and p.retry_after == pytest.approx(20.0)
    assert br.rejected == 1
    clock.advance(21)
    probe = await br.acquire("d1")
    assert probe.allowed and probe.probe_id and probe.state == "half_open"
    second = await br.acquire("d1")
    assert not second.allowed  # only one probe at a time
    await br.record(probe, True)
    assert br.last_state("d1") == "closed"
    assert (await br.acquire("d1")).allowed
    assert br.state_codes() == {"d1": 0}


async def test_failed_probe_reopens(backend: StateBackend) -> None:
    clock = Clock(T0)
    br = CircuitBreaker(backend, CFG, clock=clock)
    await br.cooldown("d2", 5)
    clock.advance(6)
    probe = await br.acquire("d2")
    assert probe.probe_id
    view = await br.record_error(probe, "timeout_first_token")
    assert view is not None and view.state == "open"
    assert not (await br.acquire("d2")).allowed


async def test_below_min_requests_stays_closed(backend: StateBackend) -> None:
    br = CircuitBreaker(backend, CFG, clock=Clock(T0))
    for _ in range(3):
        await br.record(await br.acquire("d3"), False)
    assert br.last_state("d3") == "closed"


async def test_upstream_errors_map_to_cooldowns(backend: StateBackend) -> None:
    clock = Clock(T0)
    br = CircuitBreaker(backend, CFG, clock=clock)
    v = await br.record_error(await br.acquire("d4"), "rate_limited", retry_after=7)
    assert v is not None and v.state == "open" and v.open_until == pytest.approx(T0 + 7)
    v = await br.record_error(await br.acquire("d5"), "payment")
    assert v is not None and v.open_until == pytest.approx(T0 + CFG.auth_cooldown)
    v = await br.record_error(await br.acquire("d6"), "bad_request")  # client's fault
    assert v is not None and v.state == "closed" and v.successes == 1 and v.failures == 0
    v = await br.record_error(await br.acquire("d7"), "rate_limited", retry_after=1e9)
    assert v is not None and v.open_until == pytest.approx(T0 + CFG.max_cooldown)


async def test_local_cache_skips_backend_while_closed(backend: StateBackend) -> None:
    clock = Clock(T0)
    br = CircuitBreaker(backend, CFG.model_copy(update={"local_cache_seconds": 1.0}),
                        clock=clock)
    other = CircuitBreaker(backend, CFG, clock=clock)
    await br.record(await br.acquire("d8"), True)  # seen closed now
    await other.cooldown("d8", 30)  # another gateway opens it
    assert (await br.acquire("d8")).allowed  # trusted for local_cache_seconds
    clock.advance(1.5)
    assert not (await br.acquire("d8")).allowed


@pytest.mark.redis
async def test_shared_between_two_redis_instances(redis_prefix: str) -> None:
    clock = Clock(T0)
    a_state = RedisState(REDIS_URL, redis_prefix, timeout=2.0)
    b_state = RedisState(REDIS_URL, redis_prefix, timeout=2.0)
    a = CircuitBreaker(a_state, CFG, clock=clock)
    b = CircuitBreaker(b_state, CFG, clock=clock)
    try:
        for br in (a, b, a, b):  # failures reported by two gateways add up
            await br.record(await br.acquire("shared"), False)
        assert not (await b.acquire("shared")).allowed
        assert not (await a.acquire("shared")).allowed
        clock.advance(21)
        pa = await a.acquire("shared")
        pb = await b.acquire("shared")
        assert pa.probe_id and not pb.allowed  # one probe slot across both
        await a.record(pa, True)
        assert (await b.acquire("shared")).state == "closed"
    finally:
        await a_state.close()
        await b_state.close()
