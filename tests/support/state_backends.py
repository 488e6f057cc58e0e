"""Shared by the state and governance tests: the Redis under test, isolated key
prefixes, and fixtures that run each test on MemoryState and on the real Redis.

A conftest re-exports the fixtures with ``from tests.support.state_backends import
backend, redis_prefix``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from lockgate.state import MemoryState, StateBackend
from lockgate.state.redis_state import RedisState

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


REDIS_UP = _redis_up()


def unique_prefix(area: str = "state") -> str:
    return f"lgtest:{area}:{uuid.uuid4().hex[:12]}:"


def drop_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


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
