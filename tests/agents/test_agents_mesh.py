"""The agent mesh: an orchestrator delegates to specialists; depth and fan-out bounded;
the run tree (who called whom, with what, at what cost) is stored and shown."""

from __future__ import annotations

from lockgate.agents.store import RunStore
from tests.agents.conftest import OPERATOR, MakeEnv, call

MESH = """
  grants: {teams: {ops: ["*"]}}
  agents:
    lead:
      model: brain
      tools: [delegate]
      delegates: [pumps, lead]
      mode: read_only
      max_depth: 1
      max_fanout: 2
    pumps:
      model: brain
      tools: [read_pump]
      mode: read_only
"""


async def test_delegation_builds_a_run_tree(make_env: MakeEnv) -> None:
    env = await make_env(MESH)
    env.script({"tool_calls": [call("delegate", agent="pumps", task="read p1")]},
               {"tool_calls": [call("read_pump", pump="p1")]},   # the specialist's turns
               {"content": "p1 at 91C"},
               {"content": "p1 is hot (91C)"})
    run = await env.run("lead", "status of p1?")
    assert run.state == "succeeded", run.error
    assert run.output == "p1 is hot (91C)"
    assert env.rec.calls == [("read_pump", {"pump": "p1"})]
    assert env.rt.agents is not None
    doc = await env.rt.agents.show(run.id, OPERATOR)
    [child] = doc["children"]
    assert child["agent"] == "pumps" and child["input"] == "read p1"
    assert child["output"] == "p1 at 91C" and child["cost"] > 0
    assert doc["cost"] > child["cost"]  # the parent's cost includes the sub-run's
    tree = await RunStore(env.rt.store).tree(run.id)
    assert {r.agent for r in tree} == {"lead", "pumps"}
    sub = next(r for r in tree if r.agent == "pumps")
    assert sub.parent_id == run.id and sub.depth == 1 and sub.root_id == run.id
    delegate_step = next(s for s in doc["steps"] if s["kind"] == "tool")
    assert delegate_step["result"]["run_id"] == sub.id


async def test_depth_and_fanout_are_bounded(make_env: MakeEnv) -> None:
    env = await make_env(MESH)
    env.script(
        # lead -> lead (depth 1) whose own delegation would be depth 2: refused
        {"tool_calls": [call("delegate", agent="lead", task="go deeper")]},
        {"tool_calls": [call("delegate", agent="pumps", task="deeper still")]},
        {"content": "inner done"},
        # then two more delegations: the fan-out of 2 allows one more only
        {"tool_calls": [call("delegate", agent="pumps", task="a"),
                        call("delegate", agent="pumps", task="b")]},
        {"content": "pumps a"},
        {"content": "all done"})
    run = await env.run("lead", "plan")
    assert run.state == "succeeded", run.error
    steps = await RunStore(env.rt.store).steps(run.id)
    tools = [s for s in steps if s.kind == "tool"]
    assert [s.status for s in tools] == ["ok", "ok", "error"]
    assert "at most 2 delegations" in tools[2].result
    inner = await RunStore(env.rt.store).tree(run.id)
    nested = next(r for r in inner if r.agent == "lead" and r.depth == 1)
    inner_steps = await RunStore(env.rt.store).steps(nested.id)
    assert "depth 1 reached" in next(s for s in inner_steps if s.kind == "tool").result
    assert {r.depth for r in inner} == {0, 1}
