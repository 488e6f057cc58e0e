"""Random operation sequences give the same answers from MemoryState and RedisState.

The Lua scripts mirror the Python logic; this property test keeps them in step.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.state_backends import REDIS_URL

from lockgate.state import (
    BreakerParams,
    BudgetLine,
    BudgetSettle,
    MemoryState,
    RateAdjust,
    RateCounter,
    StateBackend,
)
from lockgate.state.redis_state import RedisState

NOW = 1_800_000_000.0
FAR = NOW + 10 * 86_400
COUNTERS = [
    RateCounter("rl:a:rpm", 3, 10.0, 1),
    RateCounter("rl:b:tpm", 100, 60.0, 0),
    RateCounter("rl:c:rpm", 7, 60.0, 1),
]
LINES = [("bg:x", 50), ("bg:y", 200)]
PARAMS = BreakerParams(window=10.0, buckets=5, min_requests=3, failure_rate=0.5,
                       open_seconds=5.0, half_open_probes=2, half_open_successes=2,
                       probe_ttl=20.0)

op = st.one_of(
    st.tuples(st.just("admit"), st.sets(st.integers(0, 2)), st.integers(0, 60),
              st.sets(st.integers(0, 1)), st.integers(1, 40)),
    st.tuples(st.just("settle"), st.integers(0, 30), st.one_of(st.none(), st.integers(0, 60)),
              st.integers(-50, 50)),
    st.tuples(st.just("advance"), st.floats(0.0, 8.0, allow_nan=False)),
    st.tuples(st.just("acquire"), st.integers(0, 1)),
    st.tuples(st.just("record"), st.integers(0, 1), st.booleans(), st.booleans()),
    st.tuples(st.just("cooldown"), st.integers(0, 1), st.floats(0.5, 10.0, allow_nan=False)),
)


async def run(state: StateBackend, ops: list[tuple[Any, ...]]) -> list[Any]:
    now = NOW
    out: list[Any] = []
    reservations: list[tuple[str, list[str]]] = []
    probes: list[tuple[str, str]] = []
    for n, o in enumerate(ops):
        kind = o[0]
        if kind == "admit":
            _, rates, tokens, lines, amount = o
            counters = [
                RateCounter(c.key, c.limit, c.period, tokens if c.cost == 0 else 1)
                for i, c in enumerate(COUNTERS) if i in rates
            ]
            blines = [BudgetLine(LINES[j][0], LINES[j][1], amount, FAR) for j in sorted(lines)]
            rid = f"r{n}"
            r = await state.admit(counters, blines, now=now, reservation_id=rid,
                                  reservation_expires=now + 15.0)
            if r.allowed:
                reservations.append((rid, [b.key for b in blines]))
            out.append((r.allowed, r.denied, r.index,
                        [(s.remaining, round(s.reset, 6), round(s.retry_after, 6))
                         for s in r.rates],
                        [(u.spent, u.reserved) for u in r.budgets]))
        elif kind == "settle":
            _, pick, actual, delta = o
            if not reservations:
                continue
            rid, keys = reservations[pick % len(reservations)]
            await state.settle(
                rid, [BudgetSettle(k, actual, FAR) for k in keys],
                [RateAdjust(COUNTERS[1].key, 100, 60.0, delta)], now=now,
            )
            usage = [await state.budget_usage(k, now=now) for k, _ in LINES]
            out.append([(u.spent, u.reserved) for u in usage])
        elif kind == "advance":
            now += o[1]
        elif kind == "acquire":
            dep = f"d{o[1]}"
            pid = f"p{n}"
            v = await state.breaker_acquire(dep, PARAMS, now=now, probe_id=pid)
            if v.probe:
                probes.append((dep, pid))
            out.append(("acq", v.state, v.allowed, v.probe, round(v.retry_after, 6), v.probes))
        elif kind == "record":
            _, d, ok, use_probe = o
            dep = f"d{d}"
            pid = None
            if use_probe:
                mine = [p for p in probes if p[0] == dep]
                if mine:
                    pid = mine[0][1]
                    probes.remove(mine[0])
            v = await state.breaker_record(dep, PARAMS, ok=ok, now=now, probe_id=pid)
            out.append(("rec", v.state, round(v.open_until, 6), v.successes, v.failures,
                        v.probes))
        elif kind == "cooldown":
            v = await state.breaker_cooldown(f"d{o[1]}", PARAMS, seconds=o[2], now=now)
            out.append(("cool", v.state, round(v.open_until, 6)))
    return out


async def compare(ops: list[tuple[Any, ...]]) -> None:
    prefix = f"lgtest:eq:{uuid.uuid4().hex[:10]}:"
    redis_state = RedisState(REDIS_URL, prefix, timeout=2.0)
    try:
        expected = await run(MemoryState(), ops)
        got = await run(redis_state, ops)
    finally:
        keys = [k async for k in redis_state.client.scan_iter(match=prefix + "*")]
        if keys:
            await redis_state.client.delete(*keys)
        await redis_state.close()
    assert got == expected


@pytest.mark.redis
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(op, min_size=5, max_size=40))
def test_memory_and_redis_agree(ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(compare(ops))
