"""Invalidations: a revoke announced on one gateway reaches the others."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.state_backends import REDIS_URL

from lockgate.state import MemoryState, StateBackend
from lockgate.state.base import RateCounter
from lockgate.state.invalidation import Invalidations
from lockgate.state.redis_state import RedisState


async def _wait_for(cond: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_announce_reaches_listener(backend: StateBackend) -> None:
    got: list[str] = []
    resets: list[int] = []
    inv = Invalidations(backend, "keys", on_message=got.append,
                        on_reset=lambda: resets.append(1))
    await inv.start()
    v = await inv.announce("key_123")
    assert v == 1
    await _wait_for(lambda: got == ["key_123"])
    await inv.stop()
    assert resets == []


async def test_version_catches_missed_messages(backend: StateBackend) -> None:
    resets: list[int] = []
    inv = Invalidations(backend, "keys", on_message=lambda m: None,
                        on_reset=lambda: resets.append(1))
    assert inv.observe_version(0) is False  # first sight: nothing to reset
    assert inv.observe_version(0) is False
    await inv.announce("k")  # nobody listening: the message is lost
    assert inv.observe_version(await backend.get_version("keys")) is True
    assert resets == [1]


@pytest.mark.redis
async def test_two_gateways(redis_prefix: str) -> None:
    a_state = RedisState(REDIS_URL, redis_prefix, timeout=2.0)
    b_state = RedisState(REDIS_URL, redis_prefix, timeout=2.0)
    got: list[str] = []
    a = Invalidations(a_state, on_message=lambda m: None, on_reset=lambda: None)
    b = Invalidations(b_state, on_message=got.append, on_reset=lambda: None)
    await b.start()
    try:
        await a.announce("revoked:key_9")
        await _wait_for(lambda: got == ["revoked:key_9"])
    finally:
        await b.stop()
        await a_state.close()
        await b_state.close()


async def test_memory_backend_is_process_local() -> None:
    """Two MemoryState instances (two gateways without Redis) share nothing."""
    a, b = MemoryState(), MemoryState()
    got_b: list[str] = []
    inv_a = Invalidations(a, on_message=lambda m: None, on_reset=lambda: None)
    inv_b = Invalidations(b, on_message=got_b.append, on_reset=lambda: None)
    await inv_b.start()
    try:
        assert await inv_a.announce("key_1") == 1
        await asyncio.sleep(0.05)
        assert got_b == []  # the announcement stays in a
        assert await b.get_version("keys") == 0
    finally:
        await inv_b.stop()
    counter = RateCounter("rl:key:k:rpm", limit=1, period=60.0, cost=1)
    for state in (a, b):  # each instance has its own full counter
        res = await state.admit([counter], [], now=1000.0, reservation_id=state.name + "r",
                                reservation_expires=1060.0)
        assert res.allowed
    again = await a.admit([counter], [], now=1000.0, reservation_id="r2",
                          reservation_expires=1060.0)
    assert not again.allowed and again.denied == "rate"
