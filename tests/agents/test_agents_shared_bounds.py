"""Circuit breakers and tool rate limits live on the state backend: two gateways on one
Redis share one sliding window (errors on one trip the breaker the other sees)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lockgate.agents import AgentPaused
from lockgate.agents.store import RunStore
from tests.agents.conftest import OPERATOR, AgentEnv, MakeEnv, call
from tests.support.state_backends import REDIS_UP, REDIS_URL, drop_prefix, unique_prefix

pytestmark = pytest.mark.skipif(not REDIS_UP, reason="needs the Redis on 127.0.0.1:6379")

AGENTS = """
  grants: {teams: {ops: ["*"]}}
  breaker: {window_s: 60, min_calls: 2, error_rate: 0.5, pause_s: 60}
  agents:
    fixer: {model: brain, tools: [read_pump], mode: read_only}
    reader: {model: brain, tools: [read_pump], mode: read_only}
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    p = unique_prefix("agents")
    yield p
    drop_prefix(p)


async def _two(make_env: MakeEnv, prefix: str) -> tuple[AgentEnv, AgentEnv]:
    extra = f"redis_url: {REDIS_URL}\nredis_prefix: '{prefix}'\n"
    a = await make_env(AGENTS, extra)
    b = await make_env(AGENTS, extra, brain=a.brain)
    return a, b


async def test_errors_on_one_gateway_trip_the_breaker_the_other_sees(
        make_env: MakeEnv, prefix: str) -> None:
    a, b = await _two(make_env, prefix)
    assert b.rt.agents is not None
    b.script({"tool_calls": [call("read_pump", pump="p0")]}, {"content": "p0 fine"})
    run = await b.run("reader", "p0?")
    assert run.state == "succeeded" and b.rec.names() == ["read_pump"]  # closed at first

    a.rec.fail.add("read_pump")  # the system behind gateway A fails
    a.script({"tool_calls": [call("read_pump", pump="p1")]}, {"content": "down"})
    run = await a.run("fixer", "check")
    assert a.rec.names() == ["read_pump"]
    # B's success + A's failure: 2 calls, 50 % errors in the one shared window: the tool's
    # breaker opens (each process alone saw 1 call, under min_calls)
    b.script({"tool_calls": [call("read_pump", pump="p3")]}, {"content": "cannot read"})
    run = await b.run("reader", "p3?")
    assert b.rec.names() == ["read_pump"]  # B did not call the tool again
    steps = await RunStore(b.rt.store).steps(run.id)
    assert "temporarily disabled" in next(s for s in steps if s.kind == "tool").result

    # the agent's breaker: one failure of 'fixer' on A (above) and one more on A
    assert a.rt.agents is not None
    await b.rt.agents.start("fixer", "still allowed", OPERATOR)
    assert await a.rt.agents.breakers.agent("fixer").record(False)  # 2 of 2 failed: open
    with pytest.raises(AgentPaused):  # seen from B
        await b.rt.agents.start("fixer", "again", OPERATOR)
    a.script({"content": "the reader answers"})
    run = await a.rt.agents.start("reader", "other agents go on", OPERATOR)
    assert (await a.rt.agents.advance(run)).state == "succeeded"

async def test_a_tool_rate_limit_is_one_window_across_gateways(make_env: MakeEnv,
                                                                prefix: str) -> None:
    a, b = await _two(make_env, prefix)
    for env in (a, b):
        assert env.rt.agents is not None
        env.rt.agents.catalog.tools["read_pump"].rate_per_minute = 2
    a.script({"tool_calls": [call("read_pump", pump="p1")]},
             {"tool_calls": [call("read_pump", pump="p2")]}, {"content": "two read"})
    assert (await a.run("reader", "read two")).state == "succeeded"
    assert a.rec.names() == ["read_pump", "read_pump"]
    b.script({"tool_calls": [call("read_pump", pump="p3")]}, {"content": "limited"})
    run = await b.run("reader", "read one more")
    assert b.rec.calls == []  # the third call in the minute is refused on B too
    steps = await RunStore(b.rt.store).steps(run.id)
    assert "rate limited (2/minute)" in next(s for s in steps if s.kind == "tool").result
