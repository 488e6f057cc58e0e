"""Budgets and limits with their use now, per team and per key, after real calls: read from
the governor's state backend (process memory; and Redis shared by two gateways, where the
gateway showing the page is not the one that served the calls)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.console.conftest import ConsoleGateway, console_config, shot, sign_in
from tests.gateway.conftest import MASTER, ServerThread
from tests.support.state_backends import REDIS_UP, REDIS_URL, drop_prefix, unique_prefix

LOGIN_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


def _key(url: str, team: str) -> tuple[str, str, str]:
    """(team id, key id, key) of a new key of ``team`` (created when missing)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER}"},
                      timeout=20) as c:
        c.post("/admin/teams", json={"name": team})
        team_id = next(t["id"] for t in c.get("/admin/teams").json()["data"]
                       if t["name"] == team)
        r = c.post("/admin/keys", json={"team": team, "name": "k-" + uuid.uuid4().hex[:6]})
        assert r.status_code == 201, r.text
        return team_id, r.json()["id"], r.json()["key"]


def _calls(url: str, key: str, n: int) -> int:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)
    total = 0
    for i in range(n):
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": f"count my tokens {i}"}])
        assert reply.usage is not None
        total += reply.usage.total_tokens
    return total


def _lines(html: str, row_id: str, cls: str) -> dict[str, dict[str, str]]:
    """data-* of the budget/rate lines in one row of the budgets page, by metric/unit."""
    row = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', html, re.S)
    assert row, f"no row {row_id}"
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(rf'<li class="{cls}"([^>]*)>', row.group(1)):
        attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
        out[attrs.get("unit") or f"{attrs['window']}-{attrs['metric']}"] = attrs
    return out


def test_per_key_and_team_use_after_real_calls(console_gateway: ConsoleGateway,
                                               context: Any) -> None:
    gw = console_gateway
    team_id, key_id, key = _key(gw.url, "keyed")
    tokens = _calls(gw.url, key, 3)
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    row = page.locator(f"#use-key-{key_id}")
    budget = row.locator("li.budget-line[data-metric='tokens']")
    for _ in range(20):  # each call's settle lands right after its answer
        page.goto(gw.url + "/console/budgets")
        if float(budget.get_attribute("data-spent") or "nan") == tokens:
            break
        time.sleep(0.1)
    assert page.inner_text("#state-backend") == "memory"
    assert float(budget.get_attribute("data-spent") or "nan") == tokens
    assert float(budget.get_attribute("data-limit") or "nan") == 50000
    assert f"{tokens:,} spent" in budget.inner_text()
    rpd = row.locator("li.rate-line[data-unit='rpd']")
    assert rpd.get_attribute("data-used") == "3"
    assert "3 of 10 requests per day used, 7 left" in rpd.inner_text()
    assert row.locator("li.rate-line[data-unit='rpm']").count() == 1
    assert "teams.keyed.key_limits" in row.inner_text()
    model_row = page.locator("#use-model-other")  # model_policies (admins only)
    assert model_row.locator("li.budget-line[data-metric='cost']").get_attribute("data-limit") \
        == "50.0"
    assert model_row.locator("li.rate-line[data-unit='rpd']").get_attribute("data-limit") \
        == "100000"
    shot(page, "budgets")
    team_rpd = page.locator(f"#use-team-{team_id} li.rate-line[data-unit='rpd']")
    assert team_rpd.get_attribute("data-used") == "3"
    # reading did not consume anything: a second look shows the same numbers
    page.reload()
    assert page.locator(f"#use-key-{key_id} li.rate-line[data-unit='rpd']").get_attribute(
        "data-used") == "3"
    # the key's team sees its key; another team's user does not
    other = context.browser.new_context().new_page()
    _t, _k, outsider = _key(gw.url, "outsiders-" + uuid.uuid4().hex[:4])
    sign_in(other, gw.url, outsider)
    other.goto(gw.url + "/console/budgets")
    assert other.locator(f"#use-key-{key_id}").count() == 0
    assert other.locator("#model-use").count() == 0
    insider = context.browser.new_context().new_page()
    sign_in(insider, gw.url, key)
    insider.goto(gw.url + "/console/budgets")
    assert insider.locator(f"#use-key-{key_id} li.rate-line[data-unit='rpd']").get_attribute(
        "data-used") == "3"
    # the teams page shows the team's headroom too
    page.goto(gw.url + "/console/teams")
    assert "rpd:" in page.locator("tbody tr", has_text="keyed").locator("td.rates").inner_text()


@pytest.fixture
def two_gateways_on_redis(upstream: str, host_port: int, tmp_path: Path
                          ) -> Iterator[tuple[str, str]]:
    if not REDIS_UP:
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = unique_prefix("console")
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    extra = f"redis_url: {REDIS_URL}\nredis_prefix: '{prefix}'"
    servers = []
    try:
        for name in ("one", "two"):
            home = tmp_path / name
            home.mkdir()
            s = ServerThread(console_config(upstream, home, db,
                                            f"http://127.0.0.1:{host_port}", extra), home)
            servers.append((s, s.start()))
        yield servers[0][1], servers[1][1]
    finally:
        for s, _url in servers:
            s.stop()
        drop_prefix(prefix)


def _budgets_html(url: str) -> str:
    with httpx.Client(base_url=url, timeout=20) as c:
        token = LOGIN_TOKEN.search(c.get("/console/login").text).group(1)  # type: ignore[union-attr]
        assert c.post("/console/login", data={"key": MASTER, "csrf": token}).status_code == 303
        return c.get("/console/budgets").text


def test_use_comes_from_redis_shared_by_gateways(two_gateways_on_redis: tuple[str, str]
                                                 ) -> None:
    one, two = two_gateways_on_redis
    _team_id, key_id, key = _key(one, "keyed")
    tokens = _calls(one, key, 4)  # every call served by gateway one
    html = ""
    for _ in range(20):  # settles are written right after each answer
        html = _budgets_html(two)
        budgets = _lines(html, f"use-key-{key_id}", "budget-line")
        if float(budgets["daily-tokens"]["spent"]) == tokens:
            break
        time.sleep(0.1)
    assert 'id="state-backend">redis<' in html
    assert float(budgets["daily-tokens"]["spent"]) == tokens
    rates = _lines(html, f"use-key-{key_id}", "rate-line")
    assert rates["rpd"]["used"] == "4" and rates["rpd"]["limit"] == "10"
    assert rates["rpm"]["limit"] == "600"


def test_keys_are_paged_and_every_governed_key_is_on_one_page(
        console_gateway: ConsoleGateway, context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past one page of governed keys the page links to the next ones (it used to stop at the
    first 500 keys, governed or not, and only say how many were left out)."""
    from lockgate.console import pages_admin

    gw = console_gateway
    monkeypatch.setattr(pages_admin, "_MAX_KEYS", 2)  # the server runs in this process
    mine = {_key(gw.url, "keyed")[1] for _ in range(3)}
    _key(gw.url, "ungoverned-" + uuid.uuid4().hex[:4])  # no limits: never listed
    page = context.new_page()
    sign_in(page, gw.url, gw.master)
    page.goto(gw.url + "/console/budgets")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        rows = page.locator("#key-use tbody tr[id^='use-key-']")
        ids = [str(rows.nth(i).get_attribute("id"))[len("use-key-"):] for i in range(rows.count())]
        assert 1 <= len(ids) <= 2
        seen += ids
        assert f"page {pages} of" in page.inner_text("#key-range")
        if page.locator("#keys-next").count() == 0:
            break
        page.click("#keys-next")
        page.wait_for_url(f"**/console/budgets?page={pages + 1}**")
    assert len(seen) == len(set(seen))  # no key on two pages
    assert mine <= set(seen)
    total = int(page.inner_text("#key-range").split(" of ")[1].split()[0])
    assert total == len(seen) and pages == -(-total // 2)
    assert page.locator("#keys-prev").count() == 1
    # a page number out of range or not a number shows the last or the first page
    page.goto(gw.url + "/console/budgets?page=99999")
    assert f"page {pages} of {pages}" in page.inner_text("#key-range")
    for bad in ("abc", "0", "-3", "1e9", "9" * 40, "%C2%B2", "%00"):
        r = page.goto(gw.url + "/console/budgets?page=" + bad)
        assert r is not None and r.status == 200
        assert f"page 1 of {pages}" in page.inner_text("#key-range")
    shot(page, "budgets-paged")
