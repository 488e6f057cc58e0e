"""Backends for governance tests: every test runs on MemoryState and on the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from gov_support import REDIS_UP, REDIS_URL, drop_prefix, unique_prefix

from lockgate.state import MemoryState, StateBackend
from lockgate.state.redis_state import RedisState


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "redis",
            marks=[pytest.mark.redis, pytest.mark.skipif(not REDIS_UP, reason="no Redis")],
        ),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    if request.param == "memory":
        yield MemoryState()
        return
    prefix = unique_prefix()
    state = RedisState(REDIS_URL, prefix, timeout=2.0)
    try:
        yield state
    finally:
        await state.close()
        drop_prefix(prefix)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    if not REDIS_UP:
        pytest.skip("no Redis")
    prefix = unique_prefix()
    yield prefix
    drop_prefix(prefix)

