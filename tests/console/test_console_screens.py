"""The request log, the review queue, the RAG playground, and axe-core on the main pages."""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest

from lockgate.review import NewReview, ReviewRepository
from lockgate.store import Store
from tests.console.conftest import ConsoleGateway, shot, sign_in
from tests.console.test_console_browser import _client, _run


def test_request_log_filters_and_detail(console_gateway: ConsoleGateway, context: Any) -> None:
    gw = console_gateway
    team, key = gw.new_team_key("log-" + uuid.uuid4().hex[:6])
    client = _client(gw, key)
    client.chat.completions.create(model="other", messages=[{"role": "user", "content": "a"}])
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "c"}])
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    rows: list[str] = []
    deadline = time.monotonic() + 30  # audit rows land in 50 ms batches; slower on a busy box
    while time.monotonic() < deadline:
        page.goto(gw.url + "/console/requests")
        page.select_option("#f-team", label=team)
        page.click("text=Filter")
        rows = page.locator("tbody tr").all_inner_texts()
        if len(rows) == 3:
            break
    assert len(rows) == 3
    shot(page, "requests")
    page.select_option("#f-status", "error")
    page.click("text=Filter")
    rows = page.locator("tbody tr").all_inner_texts()
    assert len(rows) == 1 and "broken" in rows[0]
    page.select_option("#f-status", "")
    page.select_option("#f-model", "other")
    page.click("text=Filter")
    rows = page.locator("tbody tr").all_inner_texts()
    assert len(rows) == 1 and "other" in rows[0]
    page.click("tbody tr a")
    assert "/console/requests/req_" in page.url
    assert "other" in page.inner_text("dl.kv")
    assert "stub reply: a" in page.inner_text("main")  # bodies are stored (log_bodies)
    # a team user does not see another team's calls, even by id
    detail_url = page.url
    _other_team, other_key = gw.new_team_key()
    other = context.browser.new_context().new_page()
    sign_in(other, gw.url, other_key)
    resp = other.goto(detail_url)
    assert resp is not None and resp.status == 404
    other.goto(gw.url + "/console/requests")
    assert "No requests match." in other.inner_text("tbody")


async def _seed_review(database_url: str, team: str) -> str:
    store = await Store.open(database_url)
    try:
        item = await ReviewRepository(store).insert(NewReview(
            task="refund", source="http", input={"ticket": "<b>T-1</b> wants money back"},
            output={"refund": 40}, reasons=["amount over 25"], team=team, confidence=0.42,
            rationale="Customer was double charged."))
        return item.id
    finally:
        await store.close()


def test_review_queue_list_and_decide(console_gateway: ConsoleGateway, context: Any) -> None:
    gw = console_gateway
    team, key = gw.new_team_key("reviewers-" + uuid.uuid4().hex[:6])
    item_id = _run(_seed_review(gw.database_url, team))
    page = context.new_page()
    sign_in(page, gw.url, key)  # a key of the item's team may decide it
    page.goto(gw.url + "/console/reviews")
    assert item_id in page.inner_text("tbody")
    shot(page, "reviews")
    page.click(f"text={item_id}")
    assert "<b>T-1</b>" in page.inner_text("pre")  # the input is shown as text
    page.check("input[value='approve']")
    page.click("text=Submit decision")
    page.wait_for_url(gw.url + f"/console/reviews/{item_id}")
    assert page.inner_text("#review-state") == "approved"
    with gw.admin() as c:
        got = c.get(f"/v1/reviews/{item_id}").json()
    assert got["state"] == "approved"


def test_rag_playground_shows_citations_and_the_acl_principals(
        console_gateway: ConsoleGateway, context: Any) -> None:
    gw = console_gateway
    coll = "play-" + uuid.uuid4().hex[:6]
    with gw.admin() as c:
        r = c.post(f"/v1/rag/{coll}/documents", json={"documents": [
            {"id": "travel.md", "title": "<script>alert(1)</script>Travel policy",
             "text": "Trains are booked in second class. Flights need approval.",
             "acl": ["group:travel"]},
            {"id": "secret.md", "title": "Board minutes",
             "text": "Trains for the board are booked in first class.", "acl": ["user:ceo"]}]})
        assert r.status_code == 200, r.text
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + f"/console/rag/{coll}")
    assert "travel.md" in page.inner_text("table")
    page.fill("#q", "How are trains booked?")
    page.fill("#q-user", "alice")
    page.fill("#q-groups", "travel")
    page.click("text=Ask")
    page.wait_for_selector("#rag-answer .citations")
    principals = page.inner_text("#rag-answer .muted")
    assert "group:travel" in principals and "user:alice" in principals
    cites = page.inner_text("#rag-answer .citations")
    assert "<script>alert(1)</script>Travel policy" in cites
    assert "Board minutes" not in cites  # alice may not see the CEO's document
    shot(page, "rag")
    assert dialogs == []


PAGES = ["/console", "/console/requests", "/console/teams", "/console/keys",
         "/console/controls", "/console/jobs", "/console/alerts", "/console/reviews",
         "/console/rag", "/console/playground", "/console/budgets", "/console/agents"]


def test_axe_finds_no_serious_violations_on_the_main_pages(console_gateway: ConsoleGateway,
                                                          context: Any) -> None:
    axe_mod = pytest.importorskip("axe_playwright_python.sync_playwright")
    axe = axe_mod.Axe()
    gw = console_gateway
    page = context.new_page()
    page.goto(gw.url + "/console/login")
    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        result = axe.run(page)
        bad = [f"{v['id']} ({v['impact']}): {v['help']}" for v in
               result.response["violations"] if v["impact"] in ("serious", "critical")]
        if bad:
            found[name] = bad

    check("/console/login")
    sign_in(page, gw.url, gw.master)
    for path in PAGES:
        page.goto(gw.url + path)
        if path == "/console":
            page.wait_for_selector(".chart[data-drawn='1']")
        check(path)
    assert found == {}
    # the checker does find what it should (a test of the test): an unlabelled field
    page.set_content("<html lang='en'><head><title>t</title></head><body><main>"
                     "<input id='x'></main></body></html>")
    bad = [v["id"] for v in axe.run(page).response["violations"]]
    assert "label" in bad


async def _raise_alert(database_url: str, subject: str) -> None:
    from prometheus_client import CollectorRegistry

    from lockgate.alerts import AlertCenter, AlertCounter

    store = await Store.open(database_url)
    try:
        center = AlertCenter(store.engine, counter=AlertCounter(CollectorRegistry()))
        assert await center.raise_once("queue_depth", subject,
                                       f"<i>{subject}</i> is 900 jobs deep", {"depth": 900})
    finally:
        await store.close()


def test_alerts_list_acknowledge_and_resolve(console_gateway: ConsoleGateway,
                                             context: Any) -> None:
    gw = console_gateway
    subject = "queue-" + uuid.uuid4().hex[:6]
    _run(_raise_alert(gw.database_url, subject))
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/alerts?state=open")
    row = page.locator("tbody tr", has_text=subject)
    assert f"<i>{subject}</i> is 900 jobs deep" in row.inner_text()  # text, not markup
    row.locator("button:has-text('Acknowledge')").click()
    page.goto(gw.url + "/console/alerts?state=acked")
    row = page.locator("tbody tr", has_text=subject)
    assert "acked" in row.inner_text()
    row.locator("button:has-text('Resolve')").click()
    page.goto(gw.url + "/console/alerts?state=resolved")
    assert subject in page.inner_text("tbody")


def test_pages_read_without_javascript(console_gateway: ConsoleGateway, browser: Any) -> None:
    gw = console_gateway
    ctx = browser.new_context(java_script_enabled=False)
    try:
        page = ctx.new_page()
        sign_in(page, gw.url, gw.master)
        for path in ("/console?window=24h", "/console/requests", "/console/keys",
                     "/console/teams"):
            page.goto(gw.url + path)
            assert page.locator("main table").count() >= 1, path
        page.goto(gw.url + "/console?window=24h")
        assert page.inner_text("#total-requests").strip()
        # a form posts without htmx too: the playground answers on a full page
        page.goto(gw.url + "/console/playground")
        page.select_option("#p-model", "fast")
        page.fill("#p-prompt", "no script here")
        page.click("text=Send")
        assert page.inner_text("#chat-answer .answer-text") == "stub reply: no script here"
    finally:
        ctx.close()


def test_teams_page_shows_budget_use_now(console_gateway: ConsoleGateway,
                                         context: Any) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key("budgeted")
    client = _client(gw, key)
    for i in range(3):
        client.chat.completions.create(model="fast",
                                       messages=[{"role": "user", "content": f"count me {i}"}])
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/teams")
    row = page.locator("tbody tr", has_text="budgeted")
    text = row.locator("td.budget").inner_text()
    assert "day tokens" in text or "tokens" in text
    spent = float(text.split(" spent")[0].split(":")[-1].replace(",", ""))
    assert spent > 0
    assert "of 100,000 " in text
    shot(page, "teams")


def test_request_detail_shows_bodies_with_pii_redacted(console_gateway: ConsoleGateway,
                                                       context: Any) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key()
    raw = _client(gw, key).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "mail me at jane.doe@example.com"}])
    assert "jane.doe@example.com" in (raw.parse().choices[0].message.content or "")
    rid = raw.headers["x-request-id"]
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    for _ in range(50):
        resp = page.goto(gw.url + f"/console/requests/{rid}")
        if resp is not None and resp.status == 200:
            break
    bodies = page.inner_text("main")
    assert "mail me at" in bodies
    assert "jane.doe@example.com" not in bodies
