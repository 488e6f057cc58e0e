"""Agents over HTTP: ``model: agent/<name>`` with the official openai SDK, ``/v1/agents`` runs
(202 + poll), approvals through ``/v1/reviews``; a real server on loopback (SQLite)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from lockgate.testing.stub_upstream import StubUpstream
from tests.agents.conftest import MASTER, agent_config, call
from tests.gateway.conftest import Gateway, ServerThread

AGENTS = """
  grants: {teams: {ops: ["*"]}}
  agents:
    watcher:
      model: brain
      tools: [rag__*, sql__plant, ask_human]
      mode: read_only
      description: Answers from the plant database.
    operator:
      model: brain
      tools: [submit_job, sql__plant]
      mode: approve_writes
      reviewers: [ops]
  tools:
    sql:
      plant: {url: "sqlite:///PLANTDB", row_cap: 2}
"""


@pytest.fixture(scope="module")
def plant_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    import sqlite3

    path = tmp_path_factory.mktemp("plant") / "plant.db"
    con = sqlite3.connect(path)
    con.execute("create table pumps (id text, temp real)")
    con.executemany("insert into pumps values (?, ?)", [("p1", 91.5), ("p2", 60.0),
                                                        ("p3", 55.0)])
    con.commit()
    con.close()
    return str(path)


@pytest.fixture(scope="module")
def brain() -> str:
    return "agent-http-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def gw(stub: StubUpstream, brain: str, plant_db: str,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("agents-home")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = agent_config(stub.base_url, Path(home), db, brain,
                        AGENTS.replace("PLANTDB", plant_db))
    server = ServerThread(text, Path(home))
    url = server.start()
    try:
        yield Gateway(url, MASTER, text, Path(home), db)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ops_key(gw: Gateway) -> str:
    return gw.new_key(team="ops")


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def poll(gw: Gateway, key: str, path: str, until: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as c:
        while True:
            doc = c.get(path).json()
            if doc.get("status") in until or time.monotonic() > deadline:
                return doc  # type: ignore[no-any-return]
            time.sleep(0.05)


def test_agent_as_a_model_non_stream(gw: Gateway, stub: StubUpstream, brain: str,
                                     ops_key: str) -> None:
    stub.script_replies(brain, [
        {"tool_calls": [call("sql__plant", query="select id, temp from pumps order by temp desc")]},
        {"content": "p1 runs hot (91.5)"}])
    resp = client(gw, ops_key).chat.completions.create(
        model="agent/watcher", messages=[{"role": "user", "content": "which pump is hot?"}])
    assert resp.choices[0].message.content == "p1 runs hot (91.5)"
    ext = (resp.model_extra or {})["lockgate_agent"]
    assert ext["status"] == "succeeded"
    tool = next(s for s in ext["steps"] if s["kind"] == "tool")
    # read-only SQL, capped at 2 rows
    assert tool["result"] == {"columns": ["id", "temp"], "rows": [["p1", 91.5], ["p2", 60.0]],
                              "truncated": True}
    assert resp.usage is not None and resp.usage.total_tokens > 0


def test_sql_tool_refuses_writes(gw: Gateway, stub: StubUpstream, brain: str,
                                 ops_key: str) -> None:
    stub.script_replies(brain, [
        {"tool_calls": [call("sql__plant", query="delete from pumps")]},
        {"tool_calls": [call("sql__plant", query="select 1; delete from pumps")]},
        {"content": "cannot"}])
    resp = client(gw, ops_key).chat.completions.create(
        model="agent/watcher", messages=[{"role": "user", "content": "wipe"}])
    steps = [s for s in (resp.model_extra or {})["lockgate_agent"]["steps"]
             if s["kind"] == "tool"]
    assert [s["status"] for s in steps] == ["error", "error"]
    assert all("only one SELECT" in s["result"] for s in steps)


def test_agent_as_a_model_stream(gw: Gateway, stub: StubUpstream, brain: str,
                                 ops_key: str) -> None:
    stub.script_replies(brain, [
        {"tool_calls": [call("sql__plant", query="select count(*) from pumps")]},
        {"content": "three pumps"}])
    stream = client(gw, ops_key).chat.completions.create(
        model="agent/watcher", messages=[{"role": "user", "content": "how many?"}],
        stream=True, stream_options={"include_usage": True})
    steps, text, final, usage = [], "", None, None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if "lockgate_agent_step" in extra:
            steps.append(extra["lockgate_agent_step"])
        if "lockgate_agent" in extra:
            final = extra["lockgate_agent"]
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == "three pumps"
    assert [s["kind"] for s in steps] == ["model", "tool", "model"]
    assert steps[1]["result"]["rows"] == [[3]]
    assert final is not None and final["status"] == "succeeded"
    assert usage is not None and usage.total_tokens > 0


def test_unknown_agent_is_404_and_models_lists_agents(gw: Gateway, ops_key: str) -> None:
    c = client(gw, ops_key)
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="agent/nope",
                                  messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "agent_not_found"
    ids = {m.id for m in c.models.list()}
    assert {"agent/watcher", "agent/operator"} <= ids
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {ops_key}"}) as h:
        r = h.post("/v1/agents/nope/runs", json={"input": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "agent_not_found"
        r = h.get("/v1/agents/watcher/runs/run_nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "run_not_found"
        r = h.post("/v1/agents/watcher/runs", json={"input": ""})
        assert r.status_code == 400
        r = h.get("/v1/agents")
        assert {a["id"] for a in r.json()["data"]} == {"watcher", "operator"}


def test_key_without_the_agent_model_is_refused(gw: Gateway, stub: StubUpstream,
                                                brain: str) -> None:
    key = gw.new_key(team="ops", models=["brain"])
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, key).chat.completions.create(
            model="agent/watcher", messages=[{"role": "user", "content": "hi"}])
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as h:
        assert h.post("/v1/agents/watcher/runs", json={"input": "x"}).status_code == 403
        assert h.get("/v1/agents").json()["data"] == []


def test_runs_202_poll_and_approval_over_http(gw: Gateway, stub: StubUpstream, brain: str,
                                              ops_key: str) -> None:
    # submit_job writes: in approve_writes it waits for a reviewer of team ops
    stub.script_replies(brain, [
        {"tool_calls": [call("submit_job", task="summarize", input={"text": "pump log"})]},
        {"content": "queued"}])
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {ops_key}"}) as h:
        r = h.post("/v1/agents/operator/runs", json={"input": "summarize the pump log"})
        assert r.status_code == 202, r.text
        run = r.json()
        assert r.headers["location"] == f"/v1/agents/operator/runs/{run['id']}"
        doc = poll(gw, ops_key, r.headers["location"], {"awaiting_approval", "failed"})
        assert doc["status"] == "awaiting_approval", doc
        review_id = doc["review_id"]
        item = h.get(f"/v1/reviews/{review_id}").json()
        assert item["source"] == "agent" and item["recommendation"]["task"] == "summarize"
        r = h.post(f"/v1/reviews/{review_id}/decide", json={"action": "approve"})
        assert r.status_code == 200, r.text
        doc = poll(gw, ops_key, f"/v1/agents/operator/runs/{run['id']}",
                   {"succeeded", "failed", "stopped"})
        assert doc["status"] == "succeeded", doc
        tool = next(s for s in doc["steps"] if s["kind"] == "tool")
        assert tool["status"] == "ok" and tool["result"]["job_id"]
        listed = h.get("/v1/agents/operator/runs").json()["data"]
        assert run["id"] in {x["id"] for x in listed}
    other = gw.new_key(team="elsewhere")
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {other}"}) as h:
        assert h.get(f"/v1/agents/operator/runs/{run['id']}").status_code == 404


def test_agents_defined_over_the_admin_api(gw: Gateway, stub: StubUpstream, brain: str,
                                           ops_key: str) -> None:
    with gw.admin() as admin:
        r = admin.put("/admin/agents/dyn", json={"model": "brain", "mode": "read_only",
                                                 "tools": ["sql__plant"], "max_steps": 3})
        assert r.status_code == 200, r.text
        assert r.json()["source"] == "api" and r.json()["max_steps"] == 3
        assert admin.put("/admin/agents/watcher", json={"model": "brain"}).status_code == 409
        bad = admin.put("/admin/agents/dyn2", json={"model": "brain", "mode": "yolo"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] in (None, "name",
                                                                          "model", "mode")
        assert admin.put("/admin/agents/dyn2", json={"model": "nope"}).status_code == 400
        assert admin.put("/admin/agents/a__b", json={"model": "brain"}).status_code == 400
        listed = {a["id"]: a["source"] for a in admin.get("/admin/agents").json()["data"]}
        assert listed["dyn"] == "api" and listed["watcher"] == "config"
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {ops_key}"}) as h:
        assert h.put("/admin/agents/x", json={"model": "brain"}).status_code == 403
    stub.script_replies(brain, [{"content": "dynamic answer"}])
    resp = client(gw, ops_key).chat.completions.create(
        model="agent/dyn", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "dynamic answer"
    with gw.admin() as admin:
        assert admin.delete("/admin/agents/dyn").status_code == 200
        assert admin.delete("/admin/agents/dyn").status_code == 404
        assert admin.delete("/admin/agents/watcher").status_code == 409
    with pytest.raises(openai.NotFoundError):
        client(gw, ops_key).chat.completions.create(
            model="agent/dyn", messages=[{"role": "user", "content": "hi"}])


def test_revoked_key_ends_a_waiting_run(gw: Gateway, stub: StubUpstream, brain: str) -> None:
    key = gw.new_key(team="ops")
    stub.script_replies(brain, [
        {"tool_calls": [call("submit_job", task="summarize", input={"text": "x"})]},
        {"content": "never"}])
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as h:
        run = h.post("/v1/agents/operator/runs", json={"input": "go", "wait": True}).json()
    assert run["status"] == "awaiting_approval"
    with gw.admin() as admin:
        key_id = next(k["id"] for k in admin.get("/admin/keys").json()["data"]
                      if key.startswith(k.get("key_prefix", "~")))
        assert admin.post(f"/admin/keys/{key_id}/revoke").status_code == 200
        assert admin.post(f"/v1/reviews/{run['review_id']}/decide",
                          json={"action": "approve"}).status_code == 200
    doc = poll(gw, gw.master, f"/v1/agents/operator/runs/{run['id']}", {"failed", "succeeded"})
    assert doc["status"] == "failed" and "revoked" in doc["error"]
    assert not any(s["kind"] == "tool" for s in doc["steps"])


def test_run_list_filters_pages_and_cancel_over_http(gw: Gateway, stub: StubUpstream,
                                                     brain: str) -> None:
    """``GET /v1/agents/{name}/runs`` filters (status, level, since/until) and pages with
    ``next_before`` as the console does; ``POST .../cancel`` stops a waiting run for the
    master key only (403 for a team key, 409 once ended), audited with ``via: api``."""
    key = gw.new_key(team="ops")
    stub.replies.pop(brain, None)  # answers earlier tests' parked runs never used
    ids = []
    for _ in range(3):  # three runs parked on an approval (none is approved)
        stub.script_replies(brain, [
            {"tool_calls": [call("submit_job", task="summarize", input={"text": "x"})]}])
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as h:
            run = h.post("/v1/agents/operator/runs", json={"input": "go", "wait": True}).json()
        assert run["status"] == "awaiting_approval", run
        ids.append(run["id"])
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}) as h:
        waiting = h.get("/v1/agents/operator/runs",
                        params={"status": "awaiting_approval", "level": "top"}).json()
        assert set(ids) <= {r["id"] for r in waiting["data"]}
        assert all(r["status"] == "awaiting_approval" for r in waiting["data"])
        # paging: one run per page, newest first, every run once
        seen: list[str] = []
        params: dict[str, Any] = {"status": "awaiting_approval", "limit": 1}
        while True:
            got = h.get("/v1/agents/operator/runs", params=params).json()
            seen += [r["id"] for r in got["data"]]
            if not got["has_more"]:
                break
            params["before"] = got["next_before"]
        assert seen == [r["id"] for r in waiting["data"]] and len(set(seen)) == len(seen)
        assert h.get("/v1/agents/operator/runs", params={"since": "2099-01-01"}).json()[
            "data"] == []
        for bad in ({"status": "sleeping"}, {"level": "deep"}, {"before": "x~y"},
                    {"until": "yesterday"}, {"limit": "0"}):
            r = h.get("/v1/agents/operator/runs", params=bad)
            assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(bad)), r.text
        # a team key may read its runs but not cancel them
        r = h.post(f"/v1/agents/operator/runs/{ids[0]}/cancel", json={"reason": "mine"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "agent_not_allowed"
    with gw.admin() as admin:
        assert admin.post(f"/v1/agents/watcher/runs/{ids[0]}/cancel").status_code == 404
        assert admin.post("/v1/agents/operator/runs/run_ffff/cancel").status_code == 404
        assert admin.post(f"/v1/agents/operator/runs/{ids[0]}/cancel",
                          json={"reason": 5}).status_code == 400
        r = admin.post(f"/v1/agents/operator/runs/{ids[0]}/cancel",
                       json={"reason": "stuck pump"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "stopped" and r.json()["stopped"] == [ids[0]]
        assert admin.post(f"/v1/agents/operator/runs/{ids[1]}/cancel").status_code == 200
        again = admin.post(f"/v1/agents/operator/runs/{ids[0]}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "agent_conflict"
        audit = admin.get("/admin/audit", params={"action": "agent_run.cancel"}).json()["data"]
        mine = [a for a in audit if a["target"] in ids[:2]]
        assert len(mine) == 2 and all(a["changes"]["via"] == "api" for a in mine)
        assert any(a["changes"]["reason"] == "stuck pump" for a in mine)
        stopped = admin.get("/v1/agents/operator/runs", params={"status": "stopped"}).json()
        assert set(ids[:2]) <= {r["id"] for r in stopped["data"]}
        assert ids[2] not in {r["id"] for r in stopped["data"]}
