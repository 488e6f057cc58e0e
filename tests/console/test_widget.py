"""The embeddable assistant panel in real Chromium, on a host page of another origin.

The host page (examples/widget/host.py) mints a widget token with its team key for every
view; the panel streams a RAG answer with citations, a thumbs-down lands as feedback, an
expired token and a wrong origin are refused, document titles render as text.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from tests.console.conftest import ConsoleGateway, free_port, serve_host_page, shot

HR_DOC = {"id": "hr/leave.md", "title": "<img src=x onerror=alert('title')>Leave policy",
          "text": "Employees get 25 days of paid annual leave. Unused leave carries over "
                  "until March. Parental leave is 16 weeks.", "acl": ["group:hr"]}
SECRET_DOC = {"id": "exec/bonus.md", "title": "Executive bonus plan",
              "text": "The executive bonus pool for annual leave season is secret.",
              "acl": ["user:bob"]}


@pytest.fixture(scope="module")
def rag_env(console_gateway: ConsoleGateway) -> dict[str, str]:
    gw = console_gateway
    coll = "handbook-" + uuid.uuid4().hex[:6]
    with gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents", json={"documents": [HR_DOC, SECRET_DOC]})
        assert r.status_code == 200, r.text
    team, key = gw.new_team_key("hr-" + uuid.uuid4().hex[:6])
    return {"collection": coll, "team": team, "key": key}


def _mint(gw: ConsoleGateway, key: str, **body: Any) -> httpx.Response:
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        return c.post("/v1/widget/tokens", headers={"Authorization": f"Bearer {key}"},
                      json=body)


def _feedback_rows(gw: ConsoleGateway, request_id: str) -> list[dict[str, Any]]:
    url = gw.database_url
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT source, thumbs, comment, given_by, team_id FROM feedback "
                "WHERE request_id = :r ORDER BY id"), {"r": request_id}).mappings().all()
            return [dict(r) for r in rows]
    finally:
        eng.dispose()


def test_widget_streams_a_rag_answer_with_citations_and_thumbs_down_is_feedback(
        console_gateway: ConsoleGateway, rag_env: dict[str, str], context: Any) -> None:
    gw = console_gateway
    host = serve_host_page(gw.host_port, gw.url, rag_env["key"],
                           collection=rag_env["collection"], user="alice", groups=["hr"],
                           ttl_seconds=300)
    try:
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        events: list[str] = []
        page.on("response", lambda r: events.append(r.headers.get("content-type", ""))
                if r.url.endswith("/v1/widget/chat") else None)
        page.goto(gw.host_origin + "/")
        page.fill("lockgate-assistant textarea", "How much annual leave do employees get?")
        page.keyboard.press("Enter")  # keyboard only
        page.wait_for_selector("lockgate-assistant ol.cites li", timeout=20_000)
        answer = page.inner_text("lockgate-assistant .msg.bot")
        assert "25 days" in answer
        assert any(e.startswith("text/event-stream") for e in events)
        link = page.locator("lockgate-assistant ol.cites a").first
        assert link.inner_text() == HR_DOC["title"]  # the title is text, not markup
        assert link.get_attribute("href") == gw.host_origin + "/handbook/hr%2Fleave.md"
        assert page.locator("lockgate-assistant ol.cites img").count() == 0
        assert "Executive bonus" not in page.inner_text("lockgate-assistant")  # bob's only
        # the host page's CSS does not leak in: the panel's answer keeps its own colour
        colour = page.eval_on_selector("lockgate-assistant", "e => getComputedStyle("
                                       "e.shadowRoot.querySelector('.msg.bot')).color")
        assert colour == "rgb(27, 31, 36)"
        rid = page.evaluate("""() => new Promise(res => {
            const el = document.querySelector('lockgate-assistant');
            el.addEventListener('lockgate-feedback', e => res(e.detail.request_id));
            el.shadowRoot.querySelector("button[aria-label='Not helpful']").click();
        })""")
        page.wait_for_selector("lockgate-assistant textarea.comment")
        page.fill("lockgate-assistant textarea.comment", "It forgot the carry-over rule")
        page.click("lockgate-assistant >> text=Send comment")
        page.wait_for_selector("lockgate-assistant >> text=Comment sent.")
        shot(page, "widget")
        axe = pytest.importorskip("axe_playwright_python.sync_playwright").Axe()
        serious = [v["id"] for v in axe.run(page).response["violations"]
                   if v["impact"] in ("serious", "critical")]
        assert serious == []
        rows = _feedback_rows(gw, rid)
        assert [(r["source"], r["thumbs"], r["given_by"]) for r in rows][:1] == [
            ("widget", "down", "widget:alice")]
        assert rows[-1]["comment"] == "It forgot the carry-over rule"
        assert dialogs == []
    finally:
        host.shutdown()
        host.server_close()


def test_widget_stream_sends_several_deltas_then_done(console_gateway: ConsoleGateway,
                                                     rag_env: dict[str, str]) -> None:
    gw = console_gateway
    tok = _mint(gw, rag_env["key"], origin=gw.host_origin, collection=rag_env["collection"],
                user="alice", groups=["hr"]).json()["token"]
    events = []
    with httpx.Client(base_url=gw.url, timeout=20) as c, c.stream(
            "POST", "/v1/widget/chat", headers={"Authorization": f"Bearer {tok}",
                                                "Origin": gw.host_origin},
            json={"messages": [{"role": "user", "content": "annual leave days?"}]}) as r:
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == gw.host_origin
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("delta") >= 2
    assert events[-1]["citations"] and events[-1]["citations"][0]["doc_id"] == "hr/leave.md"


def test_expired_widget_token_is_refused(console_gateway: ConsoleGateway,
                                         rag_env: dict[str, str], context: Any) -> None:
    gw = console_gateway
    host = serve_host_page(gw.host_port, gw.url, rag_env["key"],
                           collection=rag_env["collection"], user="alice", ttl_seconds=1)
    try:
        page = context.new_page()
        page.goto(gw.host_origin + "/")
        token = page.get_attribute("lockgate-assistant", "token")
        time.sleep(1.2)  # the token's whole life is one second
        page.fill("lockgate-assistant textarea", "annual leave?")
        page.click("lockgate-assistant button.send")
        page.wait_for_selector("lockgate-assistant .msg.err")
        assert "expired" in page.inner_text("lockgate-assistant .msg.err")
    finally:
        host.shutdown()
        host.server_close()
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        r = c.post("/v1/widget/chat", headers={"Authorization": f"Bearer {token}",
                                               "Origin": gw.host_origin},
                   json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "widget_token_expired"


def test_wrong_origin_is_refused(console_gateway: ConsoleGateway, rag_env: dict[str, str],
                                 context: Any) -> None:
    gw = console_gateway
    # a page on another origin that got hold of a token minted for the allowed origin
    port = free_port()
    host = serve_host_page(port, gw.url, rag_env["key"], collection=rag_env["collection"],
                           user="alice", origin=gw.host_origin)
    try:
        page = context.new_page()
        refused: list[int] = []
        page.on("response", lambda r: refused.append(r.status)
                if "/v1/widget/" in r.url else None)
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("lockgate-assistant textarea", "annual leave?")
        page.click("lockgate-assistant button.send")
        page.wait_for_selector("lockgate-assistant .msg.err")
        assert "unavailable" in page.inner_text("lockgate-assistant .msg.err")
        assert 200 not in refused  # the browser never got an answer (preflight refused)
    finally:
        host.shutdown()
        host.server_close()
    tok = _mint(gw, rag_env["key"], origin=gw.host_origin, collection=rag_env["collection"],
                user="alice").json()["token"]
    evil = "http://evil.example"
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        pre = c.options("/v1/widget/chat", headers={"Origin": evil,
                                                    "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        ok = c.options("/v1/widget/chat", headers={"Origin": gw.host_origin,
                                                   "Access-Control-Request-Method": "POST"})
        assert ok.headers["access-control-allow-origin"] == gw.host_origin
        r = c.post("/v1/widget/chat", headers={"Authorization": f"Bearer {tok}", "Origin": evil},
                   json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers
        r = c.post("/v1/widget/chat", headers={"Authorization": f"Bearer {tok}"},
                   json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 403  # no Origin at all (not a browser page of that origin)
    bad = _mint(gw, rag_env["key"], origin=evil, collection=rag_env["collection"], user="a")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "origin_not_allowed"


def test_token_minting_rules(console_gateway: ConsoleGateway, rag_env: dict[str, str]) -> None:
    gw = console_gateway
    coll = rag_env["collection"]
    master = _mint(gw, gw.master, origin=gw.host_origin, collection=coll, user="alice")
    assert master.status_code == 403  # a widget acts for a team
    _team, limited = gw.new_team_key(models=["fast"])
    r = _mint(gw, limited, origin=gw.host_origin, collection=coll, user="alice")
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = _mint(gw, rag_env["key"], origin=gw.host_origin, collection=coll, user="alice",
              ttl_seconds=10_000)
    assert r.status_code == 400
    r = _mint(gw, rag_env["key"], origin=gw.host_origin, collection="nope", user="alice")
    assert r.status_code == 404
    r = _mint(gw, rag_env["key"], origin=gw.host_origin, model="fast", collection=coll,
              user="alice")
    assert r.status_code == 400
    r = _mint(gw, rag_env["key"], origin=gw.host_origin, model="fast", user="a b")
    assert r.status_code == 400
    ok = _mint(gw, rag_env["key"], origin=gw.host_origin, model="fast", user="alice")
    assert ok.status_code == 201 and ok.json()["token"].startswith("lgw_")
    # feedback only on calls made with a token of the same key
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        other_call = c.post("/v1/chat/completions",
                            headers={"Authorization": f"Bearer {gw.master}"},
                            json={"model": "fast",
                                  "messages": [{"role": "user", "content": "x"}]})
        rid = other_call.headers["x-request-id"]
        r = c.post("/v1/widget/feedback",
                   headers={"Authorization": f"Bearer {ok.json()['token']}",
                            "Origin": gw.host_origin},
                   json={"request_id": rid, "thumbs": "down"})
        assert r.status_code == 404


def test_revoking_the_minting_key_stops_its_widget_tokens(console_gateway: ConsoleGateway
                                                          ) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key()
    tok = _mint(gw, key, origin=gw.host_origin, model="fast", user="carol").json()["token"]
    headers = {"Authorization": f"Bearer {tok}", "Origin": gw.host_origin}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        assert c.post("/v1/widget/chat", headers=headers, json=body).status_code == 200
        with gw.admin() as a:
            key_id = next(k["id"] for k in a.get("/admin/keys").json()["data"]
                          if k["key_prefix"] == key[:10])
            assert a.post(f"/admin/keys/{key_id}/revoke").status_code == 200
        r = c.post("/v1/widget/chat", headers=headers, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"


def test_the_panel_says_so_when_the_model_is_down(console_gateway: ConsoleGateway,
                                                  context: Any) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key()
    host = serve_host_page(gw.host_port, gw.url, key, model="broken", user="dave")
    try:
        page = context.new_page()
        page.goto(gw.host_origin + "/")
        page.fill("lockgate-assistant textarea", "anyone there?")
        page.keyboard.press("Enter")
        page.wait_for_selector("lockgate-assistant .msg.err")
        assert "unavailable right now" in page.inner_text("lockgate-assistant .msg.err")
        assert page.get_attribute("lockgate-assistant .msg.err", "role") == "alert"
    finally:
        host.shutdown()
        host.server_close()
