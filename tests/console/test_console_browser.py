"""The console in real headless Chromium: sign in, charts from real data, keys, kill switch,
the DLQ, team users' limits, XSS as text. Screenshots of the main pages go to build/screenshots/
(docs/images/ with ``make screenshots``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from lockgate.jobs.backends import open_queue
from lockgate.jobs.model import NewJob
from tests.console.conftest import ConsoleGateway, shot, sign_in


def _client(gw: ConsoleGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def _usage_total(gw: ConsoleGateway, since: str = "1h") -> int:
    with gw.admin() as c:
        rows = c.get("/admin/usage", params={"since": since}).json()["data"]
    return sum(int(r["requests"]) for r in rows)


def test_sign_in_and_overview_charts_from_real_data(console_gateway: ConsoleGateway,
                                                    context: Any) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key("analytics")
    client = _client(gw, key)
    for i in range(6):
        client.chat.completions.create(model="fast",
                                       messages=[{"role": "user", "content": f"hello {i}"}])
    for i in range(3):
        client.chat.completions.create(model="other",
                                       messages=[{"role": "user", "content": f"slow {i}"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken",
                                       messages=[{"role": "user", "content": "boom"}])
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    expected = 0
    shown = -1
    for _ in range(50):  # the audit rows are batched (50 ms) and folded when a page is viewed
        expected = _usage_total(gw)
        page.goto(gw.url + "/console?window=1h")
        shown = int(page.inner_text("#total-requests").replace(",", ""))
        if shown == expected and expected >= 10:
            break
        time.sleep(0.2)
    assert shown == expected >= 10
    page.wait_for_selector(".chart[data-drawn='1'] canvas")
    assert page.locator(".chart[data-drawn='1']").count() == 4
    series = page.evaluate("JSON.parse(document.getElementById('overview-series').textContent)")
    total_from_chart = sum(series["requests"])
    assert total_from_chart == expected  # the chart is drawn from the same real rows
    assert any(v for v in series["error_rate"] if v)  # the 500 shows up as an error
    assert any(v for v in series["p95"] if v)
    table = page.inner_text("#split")
    assert "analytics" in table and "fast" in table and "other" in table
    shot(page, "overview")


def test_create_and_revoke_a_key(console_gateway: ConsoleGateway, context: Any) -> None:
    gw = console_gateway
    team, _ = gw.new_team_key("keys-" + uuid.uuid4().hex[:6])
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/keys")
    page.select_option("#k-team", label=team)
    page.fill("#k-name", "from-the-console")
    page.click("text=Create key")
    page.wait_for_selector("#new-key")
    plaintext = page.input_value("#new-key")
    assert plaintext.startswith("lg-")
    assert plaintext not in page.url
    page.eval_on_selector("#new-key", "e => { e.value = e.value.slice(0, 10) + '… (masked in "
                          "this screenshot)'; }")
    shot(page, "keys")
    reply = _client(gw, plaintext).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "new key works"}])
    assert "new key works" in (reply.choices[0].message.content or "")
    key_id = re.search(r"\((key_[0-9a-f]+)\)", page.inner_text(".created")).group(1)  # type: ignore[union-attr]
    page.goto(gw.url + "/console/keys")
    assert plaintext not in page.content()  # shown once only
    page.click(f"button[aria-label='Revoke key {key_id}']")
    page.wait_for_url(gw.url + "/console/keys")
    assert page.inner_text(f"#key-{key_id} .state").startswith("revoked")
    with pytest.raises(openai.AuthenticationError):
        _client(gw, plaintext).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "revoked now"}])
    with gw.admin() as c:
        audit = c.get("/admin/audit", params={"action": "key.revoke"}).json()["data"]
    assert any(a["target"] == key_id and a["changes"].get("via") == "console" for a in audit)


def test_kill_switch_makes_calls_fall_back(console_gateway: ConsoleGateway,
                                           context: Any) -> None:
    gw = console_gateway
    _team, key = gw.new_team_key("ks-" + uuid.uuid4().hex[:6])
    client = _client(gw, key)
    before = client.chat.completions.create(model="fast",
                                            messages=[{"role": "user", "content": "ping"}])
    assert before.choices[0].message.content == "stub reply: ping"
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/controls")
    page.click("button[aria-label='Switch off fast']")
    page.wait_for_url(gw.url + "/console/controls")
    assert page.inner_text("#model-fast .state") == "switched off"
    shot(page, "controls")
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "ping"}])
        fell_back = raw.parse()
        assert fell_back.choices[0].message.content == "The assistant is offline (fallback)."
        assert raw.headers.get("x-lockgate-kill-switch")
    finally:
        page.click("button[aria-label='Switch on fast']")
        page.wait_for_url(gw.url + "/console/controls")
    assert page.inner_text("#model-fast .state") == "on"
    after = client.chat.completions.create(model="fast",
                                           messages=[{"role": "user", "content": "ping"}])
    assert after.choices[0].message.content == "stub reply: ping"
    with gw.admin() as c:
        audit = c.get("/admin/audit", params={"action": "kill_switch.set"}).json()["data"]
    assert [a["changes"]["off"] for a in audit[:2]] == [False, True]


def _run(coro: Any) -> Any:
    """Run a coroutine on a thread of its own (Playwright's sync API owns this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _dead_job(queue_url: str) -> str:
    q = open_queue(queue_url)
    await q.open()
    try:
        res = await q.enqueue(NewJob(task="summarize", input={"text": "x"}, max_attempts=1))
        deliveries = []
        for _ in range(50):
            deliveries = [d for d in await q.claim("test-worker", limit=10, lease=30)
                          if d.job.id == res.job.id]
            if deliveries:
                break
        assert deliveries, "the job was not handed out"
        state = await q.fail(deliveries[0], "upstream said no", permanent=True)
        assert state == "dead"
        return res.job.id
    finally:
        await q.aclose()


async def _job_state(queue_url: str, job_id: str) -> str:
    q = open_queue(queue_url)
    await q.open()
    try:
        return (await q.get(job_id)).state
    finally:
        await q.aclose()


def test_retry_a_dlq_job(console_gateway: ConsoleGateway, context: Any) -> None:
    gw = console_gateway
    cfg = gw.runtime.config
    queue_url = cfg.jobs.effective_queue_url(cfg.effective_database_url, cfg.home_path)
    job_id = _run(_dead_job(queue_url))
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/jobs")
    assert "upstream said no" in page.inner_text(f"#job-{job_id}")
    shot(page, "jobs")
    page.click(f"button[aria-label='Retry job {job_id}']")
    page.wait_for_url(gw.url + "/console/jobs")
    assert page.locator(f"#job-{job_id}").count() == 0
    assert _run(_job_state(queue_url, job_id)) in ("queued", "running")
    doomed = _run(_dead_job(queue_url))
    page.goto(gw.url + "/console/jobs")
    page.click(f"button[aria-label='Purge job {doomed}']")
    page.wait_for_url(gw.url + "/console/jobs")
    assert page.locator(f"#job-{doomed}").count() == 0
    with gw.admin() as c:
        audit = c.get("/admin/audit", params={"action": "dlq.retry"}).json()["data"]
    assert any(a["target"] == job_id for a in audit)


def test_team_user_sees_its_team_and_no_admin_actions(console_gateway: ConsoleGateway,
                                                      context: Any) -> None:
    gw = console_gateway
    team, key = gw.new_team_key("readers-" + uuid.uuid4().hex[:6])
    other_team, _other = gw.new_team_key("others-" + uuid.uuid4().hex[:6])
    page = context.new_page()
    sign_in(page, gw.url, key)
    nav = page.inner_text("header nav")
    assert "Kill switch" not in nav and "Jobs" not in nav and "Alerts" not in nav
    assert f"team {team}" in page.inner_text(".who")
    for path in ("/console/controls", "/console/jobs", "/console/alerts"):
        resp = page.goto(gw.url + path)
        assert resp is not None and resp.status == 403, path
    page.goto(gw.url + "/console/keys")
    keys_text = page.inner_text("table")
    assert team in keys_text and other_team not in keys_text
    assert page.locator("button:has-text('Revoke')").count() == 0
    assert page.locator("form[action='/console/keys']").count() == 0
    page.goto(gw.url + "/console/teams")
    assert other_team not in page.inner_text("table")
    # forging the admin form with this session's own valid CSRF token is still refused
    csrf = page.get_attribute("body", "data-csrf")
    resp = page.request.post(gw.url + "/console/keys",
                             form={"csrf": csrf or "", "team": team, "name": "sneaky"})
    assert resp.status == 403
    resp = page.request.post(gw.url + "/console/controls/kill",
                             form={"csrf": csrf or "", "what": "model", "name": "fast",
                                   "off": "true"})
    assert resp.status == 403
    with gw.admin() as c:
        names = [k["name"] for k in c.get("/admin/keys").json()["data"]]
        assert "sneaky" not in names
        assert "fast" not in (c.get("/admin/controls").json()["kill_switch"] or {}).get(
            "models", [])


def test_xss_in_team_names_and_model_output_renders_as_text(console_gateway: ConsoleGateway,
                                                            context: Any) -> None:
    gw = console_gateway
    evil = "<script>alert('team')</script>" + uuid.uuid4().hex[:4]
    with gw.admin() as c:
        assert c.post("/admin/teams", json={"name": evil}).status_code == 201
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/teams")
    assert evil in page.inner_text("table")  # shown as the literal text
    assert "&lt;script&gt;alert('team')&lt;/script&gt;" in page.content()
    assert page.locator("td.team-name script").count() == 0
    page.goto(gw.url + "/console/playground")
    page.select_option("#p-model", "fast")
    payload = "<img src=x onerror=alert('model')>"
    page.fill("#p-prompt", "echo:" + payload)
    page.click("text=Send")
    page.wait_for_selector("#chat-answer .answer-text")
    assert page.inner_text("#chat-answer .answer-text") == payload
    assert page.locator("#chat-answer img").count() == 0
    shot(page, "playground")
    assert dialogs == []


def test_session_cookie_flags_and_logout(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        form = c.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        r = c.post("/console/login", data={"key": gw.master, "csrf": token, "next": "/console"})
        assert r.status_code == 303
        cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("lg_console="))
        low = cookie.lower()
        assert "httponly" in low and "samesite=strict" in low and "max-age=28800" in low
        assert "path=/console" in low
        assert gw.master not in r.text and gw.master not in (r.headers.get("location") or "")
        page = c.get("/console")
        assert page.status_code == 200 and gw.master not in page.text
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        out = c.post("/console/logout", data={"csrf": csrf})
        assert out.status_code == 303
        again = c.get("/console")
        assert again.status_code == 303 and again.headers["location"].startswith("/console/login")
