"""End to end against the plant twin: OpenAPI-imported HTTP tools (live readings), RAG over
the maintenance manual with the caller's ACL, a set-point change that waits for approval
and, once approved, changes the twin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.plant_twin.twin import Twin, run_twin_in_thread

from lockgate.agents.store import RunStore
from lockgate.pipeline import EndUser, Principal
from tests.agents.conftest import OPERATOR, MakeEnv, call

ROOT = Path(__file__).resolve().parents[2]
OPERATORS = Principal(key_id="key-opr", team_id="team-opr", team_name="operators",
                      key_name="opr")

PLANT = """
  grants:
    teams: {operators: ["twin__*", "rag__manual"]}
  tools:
    openapi:
      twin:
        spec: "ROOT/examples/plant_twin/openapi.json"
        base_url: "TWIN"
        auth: {header: Authorization, value: "env:LG_TEST_PLANT_SECRET", prefix: "Bearer "}
    rag:
      manual: {collection: plant-manual, k: 3}
  agents:
    plant:
      model: brain
      instructions: You look after the pumps of plant 7.
      tools: ["twin__*", "rag__manual"]
      mode: approve_writes
      reviewers: [shift-leads]
      max_steps: 8
"""


@pytest.fixture
def twin() -> Iterator[tuple[str, Twin]]:
    with run_twin_in_thread(Twin(time_scale=600.0)) as t:  # 10 simulated minutes a second
        yield t


@pytest.fixture(autouse=True)
def twin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_TEST_PLANT_SECRET", "twin-secret-1")


async def test_plant_twin_agent_end_to_end(make_env: MakeEnv,
                                           twin: tuple[str, Twin]) -> None:
    url, state = twin
    env = await make_env(PLANT.replace("ROOT", str(ROOT)).replace("TWIN", url), tools=False)
    rt = env.rt
    assert rt.agents is not None and rt.review is not None
    await rt.rag.ingest_paths("plant-manual", [ROOT / "examples/plant_twin/manual.md"],
                              acl=("team:operators",))
    names = {t.name for t in rt.agents.stepper("plant").permitted(OPERATORS, None)}
    assert names == {"twin__listPumps", "twin__getPump", "twin__setSetpoint", "rag__manual"}
    assert rt.agents.catalog.tools["twin__setSetpoint"].klass == "write"
    assert rt.agents.catalog.tools["twin__listPumps"].klass == "read"

    env.script(
        {"tool_calls": [call("twin__listPumps")]},
        {"tool_calls": [call("rag__manual", query="pump running hot high vibration")]},
        {"content": "p2 runs hot: worn bearing (vibration 8 mm/s). Proposing 60 %.",
         "tool_calls": [call("twin__setSetpoint", pump_id="p2", body={"value": 60},
                             _rationale="manual: reduce to 60 % when the bearing is worn",
                             _impact="p2 throughput -25 %")]},
        {"content": "p2 was running hot because of a worn bearing; set-point lowered to 60 %."})
    run = await env.run("plant", "Which pump is running hot and why?", principal=OPERATORS)
    assert run.state == "awaiting_approval", run.error
    steps = await RunStore(rt.store).steps(run.id)
    readings = next(s for s in steps if s.name == "twin__listPumps").result
    hot = [p for p in readings if p["temperature_c"] > 85]
    assert [p["id"] for p in hot] == ["p2"] and hot[0]["vibration_mm_s"] > 7
    passages = next(s for s in steps if s.name == "rag__manual").result["passages"]
    assert any("bearing is worn" in p["text"] for p in passages)
    # nothing changed in the plant yet
    assert state.history == [] and state.pumps["p2"].setpoint == 85.0
    item = await rt.review.repo.get(run.review_id or "")
    assert item.team == "shift-leads"
    assert item.output == {"pump_id": "p2", "body": {"value": 60}}
    assert item.impact == "p2 throughput -25 %"

    await rt.review.decide(item.id, OPERATOR, "approve")
    await rt.agents.wait_idle()
    run = await RunStore(rt.store).get(run.id)
    assert run.state == "succeeded", run.error
    assert "worn bearing" in str(run.output)
    assert [h["to"] for h in state.history] == [60.0]
    assert set(state.auth_seen) == {"Bearer twin-secret-1"}  # the env: secret, every call
    for _ in range(100):  # the twin cools down after the change
        if state.reading(state.pumps["p2"])["temperature_c"] < 85:
            break
        await asyncio.sleep(0.05)
    assert state.reading(state.pumps["p2"])["temperature_c"] < 85


async def test_rag_tool_searches_with_the_callers_principals(
        make_env: MakeEnv, twin: tuple[str, Twin], tmp_path: Path) -> None:
    url, _ = twin
    env = await make_env(PLANT.replace("ROOT", str(ROOT)).replace("TWIN", url)
                         .replace('"rag__manual"]}', '"rag__manual"]}\n    end_users: '
                                  '{"group:engineers": ["rag__manual"]}'), tools=False)
    rt = env.rt
    secret = tmp_path / "secret.md"
    secret.write_text("# Bearing supplier contract\n\nThe bearing contract price is 900 EUR.")
    await rt.rag.ingest_paths("plant-manual", [secret], acl=("group:engineers",))
    await rt.rag.ingest_paths("plant-manual", [ROOT / "examples/plant_twin/manual.md"],
                              acl=("team:operators",))

    async def search(principal: Principal, end_user: EndUser | None) -> str:
        env.script({"tool_calls": [call("rag__manual", query="bearing contract price")]},
                   {"content": "ok"})
        run = await env.run("plant", "bearing price?", principal=principal, end_user=end_user)
        steps = await RunStore(rt.store).steps(run.id)
        return str(next(s for s in steps if s.kind == "tool").result)

    assert "900 EUR" not in await search(OPERATORS, None)  # the team cannot read it
    assert "900 EUR" in await search(OPERATORS, EndUser("eve", ("engineers",)))


async def test_twin_http_errors_reach_the_model(make_env: MakeEnv,
                                                twin: tuple[str, Twin]) -> None:
    url, _ = twin
    env = await make_env(PLANT.replace("ROOT", str(ROOT)).replace("TWIN", url)
                         .replace("approve_writes", "autonomous"), tools=False)
    env.script({"tool_calls": [call("twin__setSetpoint", pump_id="p1", body={"value": 150})]},
               {"tool_calls": [call("twin__getPump", pump_id="p9")]},
               {"content": "done"})
    run = await env.run("plant", "max out p1", principal=OPERATORS)
    assert run.state == "succeeded"
    steps = [s for s in await RunStore(env.rt.store).steps(run.id) if s.kind == "tool"]
    assert steps[0].status == "error" and "maximum" in steps[0].result  # schema, not sent
    assert steps[1].status == "error"  # p9 is not in the enum either
