"""Agent runs in the console, in real headless Chromium, from real scripted runs: the stand-in
upstream answers the agents' model turns with tool calls (as tests/agents do); the runs are
started over ``/v1/agents`` with team keys. List, filters and paging, the run detail (steps,
bounds, the mesh's run tree, approvals linked to the review queue), cancelling (admin only,
CSRF, audited), team isolation, XSS in tool arguments/results/model output, axe."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lockgate.agents import Tool, ToolContext
from tests.console.conftest import BRAIN, ConsoleGateway, shot, sign_in

EVIL_ARG = "<img src=x onerror=alert('args')>"
EVIL_RESULT = "<script>alert('result')</script>"
EVIL_MODEL = "<b onmouseover=alert('model')>p1 runs hot</b>"


@pytest.fixture(scope="module")
def tools(console_gateway: ConsoleGateway) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """In-process tools of the gateway: a read that echoes an evil note, a write."""
    calls: list[tuple[str, dict[str, Any]]] = []

    async def read_pump(args: dict[str, Any], ctx: ToolContext) -> Any:
        calls.append(("read_pump", args))
        return {"pump": args["pump"], "temp_c": 91.5, "note": EVIL_RESULT}

    async def set_point(args: dict[str, Any], ctx: ToolContext) -> Any:
        calls.append(("set_point", args))
        return {"ok": True}

    async def read_slow(args: dict[str, Any], ctx: ToolContext) -> Any:
        calls.append(("read_slow", args))
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            calls.append(("read_slow cancelled", args))
            raise
        calls.append(("read_slow finished", args))
        return {"pump": args["pump"]}

    svc = console_gateway.runtime.agents
    assert svc is not None
    svc.add_tool(Tool(name="read_slow", description="Read a pump slowly", klass="read",
                      parameters={"type": "object", "properties": {"pump": {"type": "string"}},
                                  "required": ["pump"]}, call=read_slow))
    svc.add_tool(Tool(name="read_pump", description="Read a pump", klass="read",
                      parameters={"type": "object", "properties": {"pump": {"type": "string"}},
                                  "required": ["pump"]}, call=read_pump))
    svc.add_tool(Tool(name="set_point", description="Set a pump's set point", klass="write",
                      parameters={"type": "object", "properties": {
                          "pump": {"type": "string"}, "value": {"type": "number"}},
                          "required": ["pump", "value"]}, call=set_point))
    yield calls


def script(gw: ConsoleGateway, *replies: dict[str, Any]) -> None:
    upstream = gw.runtime.config.models[0].base_url.rsplit("/v1", 1)[0]
    r = httpx.post(upstream + "/_replies", json={"model": BRAIN, "replies": list(replies)})
    assert r.status_code == 200, r.text


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "arguments": args}


def start(gw: ConsoleGateway, key: str, agent: str, text: str) -> dict[str, Any]:
    r = httpx.post(f"{gw.url}/v1/agents/{agent}/runs", json={"input": text, "wait": True},
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def team_a(console_gateway: ConsoleGateway) -> str:
    return console_gateway.new_team_key("agents-a")[1]


@pytest.fixture(scope="module")
def team_b(console_gateway: ConsoleGateway) -> str:
    return console_gateway.new_team_key("agents-b")[1]


@pytest.fixture(scope="module")
def mesh_run(console_gateway: ConsoleGateway, team_a: str, tools: Any) -> dict[str, Any]:
    """lead -> delegate to pumps -> read_pump (evil arguments, evil result) -> answers."""
    gw = console_gateway
    script(gw, {"tool_calls": [call("delegate", agent="pumps", task="read p1 " + EVIL_ARG)]},
           {"tool_calls": [call("read_pump", pump=EVIL_ARG)]},
           {"content": EVIL_MODEL},
           {"content": "p1 is hot (91.5C)"})
    run = start(gw, team_a, "lead", "How is pump p1?")
    assert run["status"] == "succeeded", run
    return run


def _dialogs(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(d.message), d.dismiss()))
    return seen


def test_run_list_and_detail_of_a_mesh_run(console_gateway: ConsoleGateway, context: Any,
                                           mesh_run: dict[str, Any]) -> None:
    gw = console_gateway
    [child] = mesh_run["children"]
    page = context.new_page()
    dialogs = _dialogs(page)
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/agents")
    assert "Agent runs" in page.inner_text("header nav")
    row = page.locator(f"#run-{mesh_run['id']}")
    assert "lead" in row.inner_text() and "succeeded" in row.inner_text()
    assert "agents-a" in row.inner_text()
    assert page.locator(f"#run-{child['id']}").count() == 1  # sub-runs are listed too
    page.select_option("#f-level", "top")
    page.click("text=Filter")
    assert page.locator(f"#run-{child['id']}").count() == 0
    assert page.locator(f"#run-{mesh_run['id']}").count() == 1
    page.click(f"#run-{mesh_run['id']} a")
    page.wait_for_url(gw.url + f"/console/agents/runs/{mesh_run['id']}")
    assert page.inner_text("#run-status") == "succeeded"
    # bounds: 2 model turns of max_steps 6; cost (sub-run included) of max_cost $5
    assert page.inner_text("#bound-steps").split("\t")[1:] == ["2", "6"]
    cost_cells = page.inner_text("#bound-cost")
    assert f"${mesh_run['cost']:,.4f}" in cost_cells and "$5.0000" in cost_cells
    assert page.inner_text("#bound-fanout").split("\t")[1:] == ["1", "4"]
    # the run tree: lead -> pumps, with each run's cost
    tree = page.locator("#run-tree")
    assert tree.locator(f"#tree-{child['id']}").count() == 1
    assert f"${child['cost']:,.4f}" in tree.locator(f"#tree-{child['id']}").inner_text()
    assert "pumps" in tree.inner_text()
    # steps: model turn (asked for delegate), the delegate call with its sub-run, model turn
    kinds = page.locator("#steps tbody tr td:nth-child(2)").all_inner_texts()
    assert kinds == ["model", "tool", "model"]
    assert page.locator("#step-1 a", has_text=child["id"]).count() == 1
    assert page.locator("#step-0 a[href^='/console/requests/']").count() == 1
    shot(page, "agent-run")
    # the sub-run: the tool call with its (evil) arguments and result, the model's (evil) text
    page.click(f"#step-1 a[href='/console/agents/runs/{child['id']}']")
    page.wait_for_url(gw.url + f"/console/agents/runs/{child['id']}")
    assert mesh_run["id"] in page.inner_text("#run-facts")  # called by
    tool_row = page.locator("#step-1")
    assert "read_pump" in tool_row.inner_text() and "ok" in tool_row.inner_text()
    assert EVIL_ARG in tool_row.locator("pre.args").inner_text()
    assert EVIL_RESULT in tool_row.locator("pre.result").inner_text()
    assert " ms" in tool_row.inner_text()
    assert page.inner_text("#step-2 .model-text") == EVIL_MODEL
    assert page.locator("#steps img, #steps script, #steps b").count() == 0
    assert page.locator("#run-tree script, #run-input img").count() == 0
    page.hover("#step-2 .model-text")
    assert dialogs == []


def test_filters_and_paging(console_gateway: ConsoleGateway, context: Any, team_a: str,
                            tools: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lockgate.console import pages_agents

    gw = console_gateway
    marker = uuid.uuid4().hex[:6]
    ids = []
    for i in range(3):
        script(gw, {"content": f"answer {marker} {i}"})
        ids.append(start(gw, team_a, "pumps", f"question {marker} {i}")["id"])
    script(gw, {"tool_calls": [call("read_pump", pump="p9")]},
           {"tool_calls": [call("read_pump", pump="p9")]},
           {"tool_calls": [call("read_pump", pump="p9")]})  # the third identical call stops it
    looped = start(gw, team_a, "pumps", "loop please")
    assert looped["status"] == "stopped", looped
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/agents?status=stopped&agent=pumps")
    assert page.locator(f"#run-{looped['id']}").count() == 1
    assert all(page.locator(f"#run-{i}").count() == 0 for i in ids)
    assert "loop detected" in page.inner_text(f"#run-{looped['id']} .preview")
    page.goto(gw.url + "/console/agents?until=2000-01-01")
    assert "No agent runs match." in page.inner_text("#runs tbody")
    page.goto(gw.url + "/console/agents?team=agents-b")
    assert page.locator(f"#run-{ids[0]}").count() == 0
    resp = page.goto(gw.url + "/console/agents?status=exploded")
    assert resp is not None and resp.status == 400
    # paging: two runs a page, newest first, every run exactly once
    monkeypatch.setattr(pages_agents, "PAGE", 2)
    page.goto(gw.url + "/console/agents?agent=pumps&status=succeeded&since=1h")
    seen: list[str] = []
    for _ in range(50):
        seen += [r.split("-", 1)[1] for r in page.eval_on_selector_all(
            "#runs tbody tr[id]", "rows => rows.map(r => r.id)")]
        if page.locator("#older").count() == 0:
            break
        page.click("#older")
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
    assert seen.index(ids[2]) < seen.index(ids[1]) < seen.index(ids[0])


def test_approval_links_to_the_review_and_admin_cancels(
        console_gateway: ConsoleGateway, context: Any, team_a: str, tools: Any) -> None:
    gw = console_gateway
    script(gw, {"tool_calls": [call("set_point", pump="p1", value=55,
                                    _rationale="cool it down")]})
    run = start(gw, team_a, "pumps", "cool p1")
    assert run["status"] == "awaiting_approval", run
    review_id = run["review_id"]
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + f"/console/agents/runs/{run['id']}")
    assert page.inner_text("#run-status") == "awaiting approval"
    approval = page.locator("#steps tr.step-approval")
    assert "set_point" in approval.inner_text() and "pending" in approval.inner_text()
    approval.locator(f"a[href='/console/reviews/{review_id}']").click()
    page.wait_for_url(gw.url + f"/console/reviews/{review_id}")
    assert "agent:pumps" in page.inner_text("dl.kv")
    page.goto(gw.url + f"/console/agents/runs/{run['id']}")
    page.fill("#c-reason", "wrong pump")
    page.click(f"button[aria-label='Cancel run {run['id']}']")
    page.wait_for_url(gw.url + f"/console/agents/runs/{run['id']}")
    assert page.inner_text("#run-status") == "stopped"
    assert "cancelled by" in page.inner_text("#run-error")
    assert "wrong pump" in page.inner_text("#run-error")
    assert page.locator("button:has-text('Cancel run')").count() == 0
    with httpx.Client(base_url=gw.url, timeout=20,
                      headers={"Authorization": f"Bearer {team_a}"}) as c:
        assert c.get(f"/v1/agents/pumps/runs/{run['id']}").json()["status"] == "stopped"
        # deciding the stale review item resumes nothing: the write never runs
        r = c.post(f"/v1/reviews/{review_id}/decide", json={"action": "approve"})
        assert r.status_code in (200, 409), r.text
        assert c.get(f"/v1/agents/pumps/runs/{run['id']}").json()["status"] == "stopped"
    assert ("set_point", {"pump": "p1", "value": 55}) not in tools
    with gw.admin() as c:
        audit = c.get("/admin/audit", params={"action": "agent_run.cancel"}).json()["data"]
    assert any(a["target"] == run["id"] and a["changes"]["via"] == "console"
               and a["changes"]["stopped"] == [run["id"]] for a in audit)


def test_team_keys_see_only_their_runs_and_no_admin_actions(
        console_gateway: ConsoleGateway, context: Any, team_a: str, team_b: str,
        mesh_run: dict[str, Any]) -> None:
    gw = console_gateway
    script(gw, {"tool_calls": [call("set_point", pump="p2", value=10)]})
    paused = start(gw, team_a, "pumps", "set p2")
    assert paused["status"] == "awaiting_approval"
    script(gw, {"content": "b's answer"})
    b_run = start(gw, team_b, "pumps", "team b question")
    # team B: its own run only; team A's runs are 404 even by id; no cancel anywhere
    page = context.new_page()
    sign_in(page, gw.url, team_b)
    page.goto(gw.url + "/console/agents")
    assert page.locator(f"#run-{b_run['id']}").count() == 1
    assert page.locator(f"#run-{mesh_run['id']}").count() == 0
    assert page.locator(f"#run-{paused['id']}").count() == 0
    assert page.locator("#f-team").count() == 0
    page.goto(gw.url + "/console/agents?team=agents-a")  # ignored for a team key
    assert page.locator(f"#run-{paused['id']}").count() == 0
    for rid in (mesh_run["id"], paused["id"], mesh_run["children"][0]["id"]):
        resp = page.goto(gw.url + f"/console/agents/runs/{rid}")
        assert resp is not None and resp.status == 404, rid
    page.goto(gw.url + f"/console/agents/runs/{b_run['id']}")
    assert page.inner_text("#run-status") == "succeeded"
    assert page.locator("button:has-text('Cancel run')").count() == 0
    csrf = page.get_attribute("body", "data-csrf") or ""
    resp = page.request.post(gw.url + f"/console/agents/runs/{paused['id']}/cancel",
                             form={"csrf": csrf})
    assert resp.status == 403
    # team A sees its own paused run, but cannot cancel it either
    page_a = context.browser.new_context().new_page()
    sign_in(page_a, gw.url, team_a)
    page_a.goto(gw.url + f"/console/agents/runs/{paused['id']}")
    assert page_a.inner_text("#run-status") == "awaiting approval"
    assert page_a.locator("button:has-text('Cancel run')").count() == 0
    csrf_a = page_a.get_attribute("body", "data-csrf") or ""
    resp = page_a.request.post(gw.url + f"/console/agents/runs/{paused['id']}/cancel",
                               form={"csrf": csrf_a})
    assert resp.status == 403
    # and the master key without the CSRF token: refused, nothing changes
    admin = context.browser.new_context().new_page()
    sign_in(admin, gw.url, gw.master)
    resp = admin.request.post(gw.url + f"/console/agents/runs/{paused['id']}/cancel",
                              form={"csrf": "forged"})
    assert resp.status == 403
    with httpx.Client(base_url=gw.url, timeout=20,
                      headers={"Authorization": f"Bearer {team_a}"}) as c:
        assert c.get(f"/v1/agents/pumps/runs/{paused['id']}").json()["status"] == \
            "awaiting_approval"


def test_axe_on_the_agent_screens(console_gateway: ConsoleGateway, context: Any,
                                  mesh_run: dict[str, Any]) -> None:
    axe_mod = pytest.importorskip("axe_playwright_python.sync_playwright")
    axe = axe_mod.Axe()
    gw = console_gateway
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    found: dict[str, list[str]] = {}
    for path in ("/console/agents", f"/console/agents/runs/{mesh_run['id']}",
                 f"/console/agents/runs/{mesh_run['children'][0]['id']}", "/console/budgets"):
        page.goto(gw.url + path)
        result = axe.run(page)
        bad = [f"{v['id']} ({v['impact']}): {v['help']}" for v in
               result.response["violations"] if v["impact"] in ("serious", "critical")]
        if bad:
            found[path] = bad
    assert found == {}


def test_cancelling_a_running_mesh_run_stops_it_and_its_sub_run(
        console_gateway: ConsoleGateway, team_a: str, tools: list[Any]) -> None:
    gw = console_gateway
    pump = "p-" + uuid.uuid4().hex[:6]
    script(gw, {"tool_calls": [call("delegate", agent="pumps", task=f"hold {pump}")]},
           {"tool_calls": [call("read_slow", pump=pump)]})
    r = httpx.post(f"{gw.url}/v1/agents/lead/runs", json={"input": "go"},
                   headers={"Authorization": f"Bearer {team_a}"}, timeout=30)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    for _ in range(300):  # until the sub-run sits in its slow tool
        if ("read_slow", {"pump": pump}) in tools:
            break
        time.sleep(0.05)
    assert ("read_slow", {"pump": pump}) in tools
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").text)
        assert token
        assert c.post("/console/login", data={"key": gw.master, "csrf": token.group(1)}
                      ).status_code == 303
        page = c.get(f"/console/agents/runs/{run_id}").text
        assert 'id="run-status">running<' in page
        csrf = re.search(r'data-csrf="([^"]+)"', page)
        assert csrf
        r = c.post(f"/console/agents/runs/{run_id}/cancel",
                   data={"csrf": csrf.group(1), "reason": "stuck"})
        assert r.status_code == 303
        again = c.post(f"/console/agents/runs/{run_id}/cancel", data={"csrf": csrf.group(1)})
        assert again.status_code == 409  # ended already
    with httpx.Client(base_url=gw.url, timeout=20,
                      headers={"Authorization": f"Bearer {team_a}"}) as c:
        doc = c.get(f"/v1/agents/lead/runs/{run_id}").json()
        [child] = doc["children"]
        assert doc["status"] == "stopped" and "stuck" in doc["error"]
        assert child["status"] == "stopped" and "stuck" in child["error"]
        for _ in range(100):  # the gateway's task was cancelled: the tool never finishes
            if ("read_slow cancelled", {"pump": pump}) in tools:
                break
            time.sleep(0.05)
        assert ("read_slow cancelled", {"pump": pump}) in tools
        assert ("read_slow finished", {"pump": pump}) not in tools
        assert c.get(f"/v1/agents/lead/runs/{run_id}").json()["status"] == "stopped"
    with gw.admin() as c:
        audit = c.get("/admin/audit", params={"action": "agent_run.cancel"}).json()["data"]
    entry = next(a for a in audit if a["target"] == run_id)
    assert sorted(entry["changes"]["stopped"]) == sorted([run_id, child["id"]])
