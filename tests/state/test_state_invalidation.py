"""Invalidations: a revoke announced on one gateway reaches the others."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.state_backends import REDIS_URL

from lockgate.state import MemoryState, StateBackend
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
    inv = Invalidations(MemoryState(), on_message=lambda m: None, on_reset=lambda: None)
    await inv.start()
    await inv.stop()
