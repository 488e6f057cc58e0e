"""Tool sources and grants over the admin API: created on one gateway, persisted, audited,
validated with clear 4xx errors, effective on another gateway on the same store without a
restart; ``lockgate.yaml``'s sources and grants cannot be changed there (409)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockgate.testing.stub_upstream import StubUpstream
from tests.agents.conftest import MASTER, agent_config, call
from tests.agents.test_agents_takeover import Plant
from tests.gateway.conftest import Gateway, ServerThread

AGENTS = """
  grants: {teams: {ops: ["sql__*"]}}
  tools:
    sql: {plantdb: {url: "sqlite:///PLANTDB"}}
  agents:
    bot: {model: brain, tools: ["plant__*", "sql__*"], mode: autonomous}
"""


@pytest.fixture(scope="module")
def plant() -> Iterator[Plant]:
    p = Plant()
    p.hold = False
    yield p
    p.close()


@pytest.fixture(scope="module")
def brain() -> str:
    return "agent-admin-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def gws(stub: StubUpstream, brain: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Gateway, Gateway]]:
    home = tmp_path_factory.mktemp("agents-admin")
    db = f"sqlite:///{home / 'lockgate.db'}"
    servers: list[ServerThread] = []
    out: list[Gateway] = []
    try:
        for i in range(2):  # two gateways on one store
            h = home / f"gw{i}"
            h.mkdir()
            text = agent_config(stub.base_url, h, db, brain,
                                AGENTS.replace("PLANTDB", str(home / "plant.db")))
            servers.append(ServerThread(text, h))
            out.append(Gateway(servers[-1].start(), MASTER, text, h, db))
        yield out[0], out[1]
    finally:
        for s in servers:
            s.stop()


def _run(gw: Gateway, key: str, text: str) -> dict[str, Any]:
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as c:
        r = c.post("/v1/agents/bot/runs", json={"input": text, "wait": True})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _tool_step(doc: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s["kind"] == "tool")


def test_sources_and_grants_over_the_api_reach_every_gateway(
        gws: tuple[Gateway, Gateway], plant: Plant, stub: StubUpstream, brain: str,
        tmp_path: Path) -> None:
    a, b = gws
    spec = plant.spec(tmp_path / "plant.json")
    with a.admin() as admin:
        r = admin.put("/admin/agents/tools/openapi/plant", json={
            "spec": str(spec), "auth": {"header": "X-Token", "value": "s3cret"},
            "classes": {"closeValve": "write"}})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["source"] == "api" and doc["kind"] == "openapi"
        assert doc["tools"] == ["plant__closeValve", "plant__getReading"]
        assert doc["spec"]["auth"]["value"] == "***"  # a literal secret is never shown
        r = admin.put("/admin/agents/grants/teams/field", json={"tools": ["plant__get*"]})
        assert r.status_code == 200, r.text
        listed = admin.get("/admin/agents/tools").json()["data"]
        assert {(s["kind"], s["id"], s["source"]) for s in listed} >= {
            ("openapi", "plant", "api"), ("sql", "plantdb", "config")}
        grants = admin.get("/admin/agents/grants").json()["data"]
        assert {"part": "teams", "subject": "field", "tools": ["plant__get*"],
                "source": "api", "object": "agent.grant"} in grants
        assert any(g["subject"] == "ops" and g["source"] == "config" for g in grants)
        actions = [row["action"] for row in admin.get("/admin/audit").json()["data"]]
        assert "agent_tool_source.put" in actions and "agent_grant.put" in actions

    key = b.new_key(team="field")
    # gateway B sees A's source and grant without a restart (within its 2 s refresh)
    deadline = time.monotonic() + 10
    while True:
        stub.script_replies(brain, [{"tool_calls": [call("plant__getReading", pump="p1")]},
                                    {"content": "p1 at 91 C"}])
        doc = _run(b, key, "how hot is p1?")
        if _tool_step(doc)["status"] == "ok" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert _tool_step(doc)["status"] == "ok", doc
    assert doc["output"] == "p1 at 91 C"
    assert ("read", "/readings/p1") in plant.calls
    # the grant narrows: closeValve is not granted to team 'field'
    stub.script_replies(brain, [{"tool_calls": [call("plant__closeValve", pump="p1")]},
                                {"content": "not allowed"}])
    doc = _run(b, key, "close p1")
    assert _tool_step(doc)["status"] == "denied"
    assert not any(k == "write" for k, _ in plant.calls)

    with a.admin() as admin:  # the grant goes: on B the tool is denied from now on
        assert admin.delete("/admin/agents/grants/teams/field").status_code == 200
        assert admin.delete("/admin/agents/grants/teams/field").status_code == 404
    time.sleep(2.2)
    stub.script_replies(brain, [{"tool_calls": [call("plant__getReading", pump="p2")]},
                                {"content": "no access"}])
    doc = _run(b, key, "how hot is p2?")
    assert _tool_step(doc)["status"] == "denied"
    assert ("read", "/readings/p2") not in plant.calls
    with a.admin() as admin:
        assert admin.delete("/admin/agents/tools/openapi/plant").status_code == 200
        listed = admin.get("/admin/agents/tools").json()["data"]
        assert ("openapi", "plant") not in {(s["kind"], s["id"]) for s in listed}
        actions = [row["action"] for row in admin.get("/admin/audit").json()["data"]]
        assert "agent_tool_source.delete" in actions and "agent_grant.delete" in actions


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), [
    ("put", "/admin/agents/tools/ftp/x", {"url": "ftp://x"}, 400, "Unknown tool source kind"),
    ("put", "/admin/agents/tools/openapi/x", {"base_url": "http://x"}, 400, "spec"),
    ("put", "/admin/agents/tools/openapi/x", {"spec": "/nonexistent/o.json"}, 400,
     "cannot be used"),
    ("put", "/admin/agents/tools/openapi/a__b", {"spec": "x.json"}, 400, "names"),
    ("put", "/admin/agents/tools/mcp/m", {"transport": "stdio"}, 400, "command"),
    ("put", "/admin/agents/tools/openapi/plantdb", {"spec": "x.json"}, 409, "lockgate.yaml"),
    ("put", "/admin/agents/tools/sql/q", {"url": "nonsense://"}, 400, "SQL source"),
    ("put", "/admin/agents/tools/rag/r", [1, 2], 400, "object"),
    ("delete", "/admin/agents/tools/openapi/never", None, 404, "No openapi tool source"),
    ("delete", "/admin/agents/tools/sql/plantdb", None, 409, "lockgate.yaml"),
    ("put", "/admin/agents/grants/teams/ops", {"tools": ["x"]}, 409, "lockgate.yaml"),
    ("put", "/admin/agents/grants/groups/g", {"tools": ["x"]}, 400, "Unknown grant part"),
    ("put", "/admin/agents/grants/end_users/alice", {"tools": ["x"]}, 400, "'user:'"),
    ("put", "/admin/agents/grants/keys/k", {"tools": ["bad pattern!"]}, 400, "pattern"),
    ("put", "/admin/agents/grants/keys/k", {"tools": "x"}, 400, "tools"),
    ("put", "/admin/agents/grants/keys/k", {"tools": [], "more": 1}, 400, "tools"),
    ("delete", "/admin/agents/grants/keys/nobody", None, 404, "No grant"),
])
def test_bad_input_is_a_precise_4xx(gws: tuple[Gateway, Gateway], method: str, path: str,
                                    body: Any, status: int, needle: str) -> None:
    a, _ = gws
    with a.admin() as admin:
        r = admin.request(method, path, json=body) if body is not None else \
            admin.request(method, path)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err


def test_only_the_master_key_may_change_sources_and_grants(gws: tuple[Gateway, Gateway]
                                                           ) -> None:
    a, _ = gws
    key = a.new_key(team="ops")
    with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.get("/admin/agents/tools").status_code == 403
        assert c.put("/admin/agents/grants/teams/x", json={"tools": ["*"]}).status_code == 403
