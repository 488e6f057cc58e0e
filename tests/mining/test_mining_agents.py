"""The ``agents`` event source: real agent runs (the stand-in model answering with scripted
tool calls, as in tests/agents), mined; every count below is worked out by hand from the
runs' scripts. SQLite and PostgreSQL (the agents fixtures' ``db_kind``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lockgate.agents.store import RunStore
from tests.agents.conftest import (  # noqa: F401  (fixtures used by name)
    OPERATOR,
    MakeEnv,
    call,
    database_url,
    db_kind,
    make_env,
    stub,
)

AGENTS = """
  grants: {teams: {ops: ["*"]}}
  agents:
    plant:
      model: brain
      tools: [read_pump, set_point]
      mode: approve_writes
    lead:
      model: brain
      tools: [delegate]
      delegates: [pumps]
      mode: read_only
    pumps:
      model: brain
      tools: [read_pump]
      mode: read_only
"""


def _edges(doc: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(e["source"], e["target"]): e["count"] for e in doc["dfg"]["edges"]}


async def _five_runs(env: Any) -> dict[str, str]:
    """A: one read; B: two reads in one turn; C: a write approved by a person; D: the mesh
    (lead delegates to pumps); E: a read that fails. Returns run ids by letter."""
    ids: dict[str, str] = {}
    env.script({"tool_calls": [call("read_pump", pump="p1")]}, {"content": "p1 ok"})
    ids["A"] = (await env.run("plant", "status of p1?")).id
    env.script({"tool_calls": [call("read_pump", pump="p1"), call("read_pump", pump="p2")]},
               {"content": "both ok"})
    ids["B"] = (await env.run("plant", "status of p1 and p2?")).id
    env.script({"tool_calls": [call("set_point", pump="p1", value=40)]}, {"content": "done"})
    run = await env.run("plant", "cool p1")
    assert run.state == "awaiting_approval"
    ids["C"] = run.id
    await env.rt.review.decide(run.review_id, OPERATOR, "approve")
    await env.rt.agents.wait_idle()
    assert (await RunStore(env.rt.store).get(run.id)).state == "succeeded"
    env.script({"tool_calls": [call("delegate", agent="pumps", task="read p1")]},
               {"tool_calls": [call("read_pump", pump="p1")]},
               {"content": "p1 at 91C"},
               {"content": "p1 is hot"})
    ids["D"] = (await env.run("lead", "how is p1?")).id
    env.rec.fail = {"read_pump"}
    env.script({"tool_calls": [call("read_pump", pump="p9")]}, {"content": "cannot read p9"})
    ids["E"] = (await env.run("plant", "status of p9?")).id
    env.rec.fail = set()
    return ids


async def test_agent_runs_mined_with_hand_counted_dfg(make_env: MakeEnv) -> None:  # noqa: F811
    env = await make_env(AGENTS)
    ids = await _five_runs(env)
    assert env.rt.mining is not None
    ev, label = await env.rt.mining.event_log(sources=["agents"])
    doc = (await env.rt.mining.analyze(ev, label)).to_dict(max_variants=None)

    # A: mt rp mt (3) | B: mt rp rp mt (4) | C: mt approval set_point mt (4)
    # D: lead mt, pumps mt, pumps rp, pumps mt, lead delegate, lead mt (6) | E: mt rp-failed mt (3)
    assert doc["overview"]["cases"] == 5 and doc["overview"]["events"] == 20
    assert _edges(doc) == {
        ("plant: model turn", "plant: read_pump"): 2,               # A, B
        ("plant: read_pump", "plant: read_pump"): 1,                # B
        ("plant: read_pump", "plant: model turn"): 2,               # A, B
        ("plant: model turn", "plant: approval set_point"): 1,      # C
        ("plant: approval set_point", "plant: set_point"): 1,       # C
        ("plant: set_point", "plant: model turn"): 1,               # C
        ("lead: model turn", "pumps: model turn"): 1,               # D: the sub-run joins
        ("pumps: model turn", "pumps: read_pump"): 1,               # D
        ("pumps: read_pump", "pumps: model turn"): 1,               # D
        ("pumps: model turn", "lead: delegate pumps"): 1,           # D
        ("lead: delegate pumps", "lead: model turn"): 1,            # D
        ("plant: model turn", "plant: read_pump failed"): 1,        # E
        ("plant: read_pump failed", "plant: model turn"): 1,        # E
    }
    assert doc["dfg"]["start"] == {"plant: model turn": 4, "lead: model turn": 1}
    assert doc["dfg"]["end"] == {"plant: model turn": 4, "lead: model turn": 1}
    assert len(doc["variants"]) == 5 and all(v["count"] == 1 for v in doc["variants"])

    events = ev.events()
    by_case: dict[str, list[str]] = {}
    for e in events:
        by_case.setdefault(e.case_id, []).append(e.activity)
    assert set(by_case) == set(ids.values())  # one case per run tree: D's sub-run is inside
    assert by_case[ids["D"]] == ["lead: model turn", "pumps: model turn", "pumps: read_pump",
                                 "pumps: model turn", "lead: delegate pumps", "lead: model turn"]
    resources = {(e.activity, e.resource) for e in events}
    assert ("plant: read_pump", "read_pump") in resources          # tool calls: the tool
    assert ("plant: model turn", "plant") in resources             # model turns: the agent
    assert ("lead: delegate pumps", "pumps") in resources          # delegation: the delegate
    assert all(e.start is not None and e.start <= e.timestamp for e in events
               if "model turn" in e.activity)                      # durations give start times


async def test_agent_approvals_join_the_reviews_source(make_env: MakeEnv) -> None:  # noqa: F811
    env = await make_env(AGENTS)
    ids = await _five_runs(env)
    assert env.rt.mining is not None
    ev, _ = await env.rt.mining.event_log(sources=["agents", "reviews"])
    seq = [e.activity for e in ev.events() if e.case_id == ids["C"]]
    # the person's decision sits between the agent asking and the write running
    assert seq[:4] == ["plant: model turn", "plant: approval set_point", "review queued",
                       "review approved"]
    assert seq.index("review approved") < seq.index("plant: set_point")
    assert seq[-1] == "plant: model turn"
    assert {e.case_id for e in ev.events()} == set(ids.values())  # no review-only case


async def test_window_selects_whole_run_trees(make_env: MakeEnv) -> None:  # noqa: F811
    env = await make_env(AGENTS)
    ids = await _five_runs(env)
    assert env.rt.mining is not None
    store = RunStore(env.rt.store)
    d = await store.get(ids["D"])
    e = await store.get(ids["E"])
    ev, _ = await env.rt.mining.event_log(sources=["agents"], since=d.created_at,
                                          until=e.created_at)
    cases = {x.case_id for x in ev.events()}
    assert cases == {ids["D"]} and len(ev) == 6  # the mesh whole, its sub-run included


async def test_cli_reads_the_agents_source(make_env: MakeEnv, database_url: str,  # noqa: F811
                                           tmp_path: Path) -> None:
    env = await make_env(AGENTS)
    await _five_runs(env)
    await env.rt.audit.flush()
    envvars = {**os.environ, "LOCKGATE_HOME": str(tmp_path / "cli"),
               "LOCKGATE_DATABASE_URL": database_url}
    envvars.pop("LOCKGATE_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "lockgate", "mine", "--source", "agents",
                           "--json", "-"], capture_output=True, text=True, env=envvars,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["overview"]["cases"] == 5 and doc["overview"]["events"] == 20
    assert _edges(doc)[("plant: model turn", "plant: read_pump")] == 2
