"""The breaker's request-path shortcuts: a reused permit for a deployment seen closed, and a
record without a coroutine on the in-process state; both answer as the slow paths do."""

from __future__ import annotations

import pytest
from gov_support import Clock

from lockgate.governance import CircuitBreaker
from lockgate.settings import BreakerConfig
from lockgate.state.memory import MemoryState

T0 = 1_900_000_000.0
CFG = BreakerConfig(window_seconds=10, buckets=10, min_requests=4, failure_rate=0.5,
                    open_seconds=20, half_open_probes=1, local_cache_seconds=1.0)


async def test_a_closed_permit_only_while_seen_closed_recently() -> None:
    clock = Clock(T0)
    br = CircuitBreaker(MemoryState(), CFG, clock=clock)
    assert br.closed_permit("d") is None  # never seen: ask the state
    first = await br.acquire("d")
    br.record_now(first, True)  # seen closed now
    permit = br.closed_permit("d")
    assert permit is not None and permit.allowed and permit.state == "closed"
    assert br.closed_permit("d") is permit and await br.acquire("d") is permit
    clock.advance(1.5)
    assert br.closed_permit("d") is None  # the local view is stale: ask the state again
    await br.cooldown("d", 5)
    assert br.closed_permit("d") is None and not (await br.acquire("d")).allowed


async def test_record_now_trips_and_probes_like_record() -> None:
    clock = Clock(T0)
    fast = CircuitBreaker(MemoryState(), CFG, clock=clock)
    slow = CircuitBreaker(MemoryState(), CFG, clock=clock)
    assert fast.records_now and slow.records_now
    for ok in (True, True, False, False):
        a = fast.record_now(await fast.acquire("d"), ok)
        b = await slow.record(await slow.acquire("d"), ok)
        assert a == b
    assert fast.last_state("d") == slow.last_state("d") == "open" and fast.opened == 1
    clock.advance(21)
    probe = await fast.acquire("d")
    assert probe.probe_id and fast.record_now(probe, True).state == "closed"


async def test_record_now_needs_the_in_process_state() -> None:
    class Shared(MemoryState):
        in_process = False

    br = CircuitBreaker(Shared(), CFG, clock=Clock(T0))
    assert not br.records_now
    with pytest.raises(RuntimeError):
        br.record_now(await br.acquire("d"), True)
