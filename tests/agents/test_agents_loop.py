"""The step loop with scripted tool-call sequences from the stand-in upstream."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.agents import AgentPaused
from lockgate.agents.store import RunStore
from tests.agents.conftest import OPERATOR, OPS, MakeEnv, call

BASIC = """
  grants: {teams: {ops: ["*"]}}
  agents:
    watcher:
      model: brain
      instructions: You watch pumps.
      tools: [read_pump, set_point]
      mode: read_only
      max_steps: 4
    fixer:
      model: brain
      tools: [read_pump, set_point]
      mode: autonomous
      max_steps: 6
"""


async def test_tool_call_then_answer(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    env.script({"tool_calls": [call("read_pump", pump="p1")]},
               {"content": "p1 runs hot"})
    run = await env.run("watcher", "which pump is hot?")
    assert run.state == "succeeded", run.error
    assert run.output == "p1 runs hot"
    assert env.rec.calls == [("read_pump", {"pump": "p1"})]
    steps = await RunStore(env.rt.store).steps(run.id)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("model", "brain", "ok"), ("tool", "read_pump", "ok"), ("model", "brain", "ok")]
    assert steps[1].result == {"ok": True, "tool": "read_pump", "args": {"pump": "p1"}}
    assert run.cost > 0  # priced by the pipeline's deployment
    # the model saw the tool result and only the permitted tools (no write in read_only)
    reqs = [r["body"] for r in env.stub.requests if r["model"] == env.brain]
    assert [t["function"]["name"] for t in reqs[0]["tools"]] == ["read_pump"]
    assert reqs[1]["messages"][-1]["role"] == "tool"
    assert reqs[0]["messages"][0] == {"role": "system", "content": "You watch pumps."}


async def test_read_only_never_executes_a_write(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    env.script({"tool_calls": [call("set_point", pump="p1", value=10)]},
               {"content": "could not"})
    run = await env.run("watcher", "lower p1")
    assert run.state == "succeeded"
    assert env.rec.calls == []
    steps = await RunStore(env.rt.store).steps(run.id)
    assert steps[1].status == "denied" and "not available" in steps[1].result


async def test_schema_violation_is_a_tool_error_to_the_model(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    env.script({"tool_calls": [call("set_point", pump="p1", value=500)]},
               {"tool_calls": [call("set_point", pump="p1", value="x")]},
               {"content": "gave up"})
    run = await env.run("fixer", "set p1")
    assert run.state == "succeeded"
    assert env.rec.calls == []
    steps = await RunStore(env.rt.store).steps(run.id)
    tool_steps = [s for s in steps if s.kind == "tool"]
    assert [s.status for s in tool_steps] == ["error", "error"]
    assert "maximum" in tool_steps[0].result
    # the error reached the model as the tool message
    reqs = [r["body"] for r in env.stub.requests if r["model"] == env.brain]
    assert "schema" in reqs[1]["messages"][-1]["content"]


async def test_tool_not_offered_is_never_executed(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    env.script({"tool_calls": [call("delete_account", account="a1")]}, {"content": "ok"})
    run = await env.run("fixer", "delete")
    assert run.state == "succeeded"
    assert env.rec.calls == []


async def test_max_steps_stops_the_run(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    env.script(*[{"tool_calls": [call("read_pump", pump=f"p{i}")]} for i in range(10)])
    run = await env.run("watcher", "loop")
    assert run.state == "stopped"
    assert "max_steps (4)" in (run.error or "")
    assert run.turns == 4


async def test_loop_detector_stops_identical_calls(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    env.script(*[{"tool_calls": [call("read_pump", pump="p1")]} for _ in range(5)])
    run = await env.run("fixer", "loop")
    assert run.state == "stopped"
    assert "loop detected" in (run.error or "")
    assert len(env.rec.calls) == 2  # the third identical call never ran


async def test_max_cost_stops_the_run(make_env: MakeEnv) -> None:
    env = await make_env(BASIC.replace("max_steps: 6", "max_steps: 6\n      max_cost: 0.001"))
    env.script(*[{"tool_calls": [call("read_pump", pump=f"p{i}")]} for i in range(6)])
    run = await env.run("fixer", "spend")
    assert run.state == "stopped"
    assert "max_cost" in (run.error or "")
    assert run.turns < 6


async def test_grants_default_deny_for_a_team_without_grant(make_env: MakeEnv) -> None:
    env = await make_env(BASIC.replace("teams: {ops:", "teams: {other:"))
    env.script({"tool_calls": [call("read_pump", pump="p1")]}, {"content": "no tools"})
    run = await env.run("watcher", "hi", principal=OPS)
    assert run.state == "succeeded"
    assert env.rec.calls == []
    reqs = [r["body"] for r in env.stub.requests if r["model"] == env.brain]
    assert "tools" not in reqs[0]


async def test_tool_failure_feeds_breaker_and_alerts(make_env: MakeEnv) -> None:
    env = await make_env(BASIC + "  breaker: {window_s: 60, min_calls: 2, error_rate: 0.5, "
                         "pause_s: 60}\n")
    env.rec.fail.add("read_pump")
    env.script({"tool_calls": [call("read_pump", pump="p1")]},
               {"tool_calls": [call("read_pump", pump="p2")]},
               {"tool_calls": [call("read_pump", pump="p3")]},
               {"content": "down"})
    run = await env.run("fixer", "check")
    # two failures out of two: the tool's and the agent's breakers open; the run stops
    assert run.state == "stopped"
    assert "paused by its error-rate breaker" in (run.error or "")
    assert env.rec.names() == ["read_pump", "read_pump"]
    assert env.rt.agents is not None
    with pytest.raises(AgentPaused):
        await env.rt.agents.start("fixer", "again", OPERATOR)
    assert env.rt.alerts is not None
    kinds: set[str] = set()
    for _ in range(50):
        kinds = {a.kind for a in await env.rt.alerts.list()}
        if {"agent_tool_breaker", "agent_breaker"} <= kinds:
            break
        await asyncio.sleep(0.05)
    assert {"agent_tool_breaker", "agent_breaker"} <= kinds


async def test_open_tool_breaker_refuses_the_tool(make_env: MakeEnv) -> None:
    env = await make_env(BASIC + "  breaker: {window_s: 60, min_calls: 2, error_rate: 0.5, "
                         "pause_s: 60}\n")
    assert env.rt.agents is not None
    tool_breaker = env.rt.agents.breakers.tool("read_pump")
    await tool_breaker.record(False)
    await tool_breaker.record(False)
    env.script({"tool_calls": [call("read_pump", pump="p1")]}, {"content": "down"})
    run = await env.run("fixer", "check")
    assert run.state == "succeeded"
    assert env.rec.calls == []
    steps = await RunStore(env.rt.store).steps(run.id)
    assert "temporarily disabled" in steps[1].result


CONTRACT = """
  grants: {teams: {ops: ["*"]}}
  agents:
    reporter:
      model: brain
      tools: []
      mode: read_only
      output_contract: {type: object, required: [answer], properties: {answer: {type: string}}}
"""


async def test_output_contract_gets_one_repair(make_env: MakeEnv) -> None:
    env = await make_env(CONTRACT)
    env.script({"content": "p1 is hot"}, {"content": '{"answer": "p1 is hot"}'})
    run = await env.run("reporter", "report")
    assert run.state == "succeeded" and run.output == {"answer": "p1 is hot"}
    reqs = [r["body"] for r in env.stub.requests if r["model"] == env.brain]
    assert "must be JSON matching this schema" in reqs[1]["messages"][-1]["content"]
    env.script({"content": "nope"}, {"content": '{"answer": 5}'})
    run = await env.run("reporter", "report again")
    assert run.state == "failed" and "output contract" in (run.error or "")


async def test_a_run_whose_process_died_is_marked_lost(make_env: MakeEnv) -> None:
    env = await make_env(BASIC)
    svc = env.rt.agents
    assert svc is not None
    run = await svc.start("watcher", "never stepped", OPERATOR)
    assert (await svc.get(run.id, OPERATOR)).state == "running"  # fresh: left alone
    run.updated_at -= 10_000  # as if its process stopped long ago
    store = RunStore(env.rt.store)
    await store.save(run)
    async with env.rt.store.transaction(write=True) as conn:
        from lockgate.store.tables import agent_runs

        await conn.execute(agent_runs.update().where(agent_runs.c.id == run.id)
                           .values(updated_at=run.updated_at - 10_000))
    got = await svc.get(run.id, OPERATOR)
    assert got.state == "failed" and "lost" in (got.error or "")
