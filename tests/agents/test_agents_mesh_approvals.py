"""A write inside a delegated sub-run parks the sub-run AND its parent chain durably; after
the decision the sub-run resumes once, hands its result up, and the parent resumes once
(also when the gateway restarted between the park and the decision)."""

from __future__ import annotations

import asyncio
import time

from lockgate.agents.model import CHILD_PREFIX, Run
from lockgate.agents.store import RunStore
from tests.agents.conftest import OPERATOR, AgentEnv, MakeEnv, call

MESH = """
  grants: {teams: {ops: ["*"]}}
  agents:
    lead:
      model: brain
      tools: [delegate]
      delegates: [middle, writer]
      mode: read_only
      max_depth: 2
    middle:
      model: brain
      tools: [delegate]
      delegates: [writer]
      mode: read_only
    writer:
      model: brain
      tools: [set_point, read_pump]
      mode: approve_writes
      reviewers: [ops]
"""


async def _final(env: AgentEnv, run_id: str, timeout: float = 20.0) -> Run:
    store = RunStore(env.rt.store)
    deadline = time.monotonic() + timeout
    while True:
        run = await store.get(run_id)
        if run.final or time.monotonic() > deadline:
            return run
        await asyncio.sleep(0.05)


async def _children(env: AgentEnv, run: Run) -> list[Run]:
    return [r for r in await RunStore(env.rt.store).tree(run.root_id) if r.id != run.id]


def _brain_calls(env: AgentEnv) -> int:
    return sum(1 for r in env.stub.requests if r["model"] == env.brain)


async def test_write_in_a_sub_run_parks_the_parent_and_both_resume_once(
        make_env: MakeEnv) -> None:
    env = await make_env(MESH)
    env.script({"tool_calls": [call("delegate", agent="writer", task="cool p1")]},  # lead
               {"content": "p1 is hot", "tool_calls": [call("set_point", pump="p1",
                                                            value=40)]},          # writer
               {"content": "p1 set to 40"},                                       # writer
               {"content": "done: p1 runs at 40"})                                # lead
    lead = await env.run("lead", "cool the hottest pump")
    assert lead.state == "awaiting_approval"
    [writer] = await _children(env, lead)
    assert writer.state == "awaiting_approval" and writer.review_id
    assert lead.review_id == CHILD_PREFIX + writer.id
    assert env.rec.calls == []  # nothing written before a person decided
    assert _brain_calls(env) == 2
    stored = await RunStore(env.rt.store).get(lead.id)  # the park is durable
    assert stored.state == "awaiting_approval" and stored.pending[0]["child"] == writer.id

    assert env.rt.review is not None and env.rt.agents is not None
    review_id = writer.review_id
    await env.rt.review.decide(review_id, OPERATOR, "approve")
    lead = await _final(env, lead.id)
    assert lead.state == "succeeded", lead.error
    assert lead.output == "done: p1 runs at 40"
    assert env.rec.calls == [("set_point", {"pump": "p1", "value": 40})]
    assert _brain_calls(env) == 4
    writer = await RunStore(env.rt.store).get(writer.id)
    assert writer.state == "succeeded" and writer.output == "p1 set to 40"
    steps = await RunStore(env.rt.store).steps(lead.id)
    result = next(s for s in steps if s.kind == "tool" and s.name == "delegate").result
    assert result == {"agent": "writer", "run_id": writer.id, "answer": "p1 set to 40"}
    assert lead.cost > writer.cost > 0  # the sub-run's cost is the parent's too
    # a decision seen again, the review sweeper and the run recovery resume nothing twice
    item = await env.rt.review.repo.get(review_id)
    assert env.rt.agents.approvals is not None
    await env.rt.agents.approvals.resume(item)
    await env.rt.review.sweep()
    await env.rt.agents.recover()
    await env.rt.agents.wait_idle()
    assert len(env.rec.calls) == 1 and _brain_calls(env) == 4
    assert [s.kind for s in steps].count("delegate") == 1  # one park step


async def test_rejection_flows_back_to_the_parent_as_the_reviewers_reason(
        make_env: MakeEnv) -> None:
    env = await make_env(MESH)
    env.script({"tool_calls": [call("delegate", agent="writer", task="stop p2")]},
               {"tool_calls": [call("set_point", pump="p2", value=0)]},
               {"content": "could not stop p2"},
               {"content": "p2 keeps running: the boiler needs it"})
    lead = await env.run("lead", "stop p2")
    [writer] = await _children(env, lead)
    assert env.rt.review is not None
    await env.rt.review.decide(writer.review_id or "", OPERATOR, "reject",
                               reason="p2 feeds the boiler")
    lead = await _final(env, lead.id)
    assert lead.state == "succeeded", lead.error
    assert env.rec.calls == []
    tool_msgs = [m["content"] for m in lead.messages if m["role"] == "tool"]
    assert "p2 feeds the boiler" in tool_msgs[0]  # the parent's model reads the reason
    steps = await RunStore(env.rt.store).steps(lead.id)
    result = next(s for s in steps if s.kind == "tool" and s.name == "delegate").result
    assert result["rejected"] == [{"tool": "set_point", "reason": "p2 feeds the boiler"}]


async def test_a_chain_of_three_parks_and_resumes_across_a_gateway_restart(
        make_env: MakeEnv) -> None:
    env = await make_env(MESH)
    env.script({"tool_calls": [call("delegate", agent="middle", task="handle p3")]},  # lead
               {"tool_calls": [call("delegate", agent="writer", task="lower p3")]},   # middle
               {"tool_calls": [call("set_point", pump="p3", value=55)]},              # writer
               {"content": "p3 at 55"},                                               # writer
               {"content": "middle: p3 handled"},                                     # middle
               {"content": "lead: all good"})                                         # lead
    lead = await env.run("lead", "look after p3")
    tree = await _children(env, lead)
    middle = next(r for r in tree if r.agent == "middle")
    writer = next(r for r in tree if r.agent == "writer")
    assert (lead.state, middle.state, writer.state) == ("awaiting_approval",) * 3
    assert lead.review_id == CHILD_PREFIX + middle.id
    assert middle.review_id == CHILD_PREFIX + writer.id
    await env.rt.aclose()  # the gateway goes away between the park and the decision

    env2 = await make_env(MESH, brain=env.brain)  # another gateway on the same store
    assert env2.rt.review is not None
    await env2.rt.review.decide(writer.review_id or "", OPERATOR, "approve")
    lead = await _final(env2, lead.id)
    assert lead.state == "succeeded", lead.error
    assert lead.output == "lead: all good"
    assert env2.rec.calls == [("set_point", {"pump": "p3", "value": 55})]
    assert env.rec.calls == []
    middle = await RunStore(env2.rt.store).get(middle.id)
    assert middle.output == "middle: p3 handled"
    assert _brain_calls(env) == 6  # every turn once
    doc = await env2.rt.agents.show(lead.id, OPERATOR)  # type: ignore[union-attr]
    assert doc["children"][0]["children"][0]["status"] == "succeeded"


async def test_a_parent_parked_on_a_finished_child_is_woken_by_recovery(
        make_env: MakeEnv) -> None:
    """The hand-off from a finished sub-run to its parent is durable: if the process dies
    between the sub-run's end and the parent's wake-up, recovery wakes the parent."""
    env = await make_env(MESH)
    env.script({"tool_calls": [call("delegate", agent="writer", task="cool p4")]},
               {"tool_calls": [call("set_point", pump="p4", value=30)]},
               {"content": "p4 at 30"},
               {"content": "lead: p4 done"})
    lead = await env.run("lead", "cool p4")
    [writer] = await _children(env, lead)
    svc = env.rt.agents
    assert svc is not None and env.rt.review is not None
    wake = svc._wake_parent

    async def lost(child: Run) -> None:  # the process "dies" before waking the parent
        return None

    svc._wake_parent = lost  # type: ignore[method-assign]
    await env.rt.review.decide(writer.review_id or "", OPERATOR, "approve")
    assert (await _final(env, writer.id)).state == "succeeded"
    await svc.wait_idle()
    assert (await RunStore(env.rt.store).get(lead.id)).state == "awaiting_approval"
    svc._wake_parent = wake  # type: ignore[method-assign]
    await svc.recover()
    lead = await _final(env, lead.id)
    assert lead.state == "succeeded" and lead.output == "lead: p4 done"
    assert _brain_calls(env) == 4
