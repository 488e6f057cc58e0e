"""Governance through the real gateway: limits, budgets, breaker, cache, kill switch, revocation.

Real Redis (own key prefix, deleted afterwards), the stand-in upstream, SQLite,
the official openai SDK as the client.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from lockgate.store import Store
from tests.gateway.conftest import MASTER, Gateway, ServerThread

REDIS_URL = "redis://127.0.0.1:6379/0"


def _drop_prefix(prefix: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def governance_config(upstream: str, home: Path, db: str, prefix: str, *,
                      redis_url: str = REDIS_URL) -> str:
    return f"""
master_key: {MASTER}
home: {home}
database_url: {db}
key_cache_ttl: 30
audit: {{flush_interval_ms: 50}}
redis_url: {redis_url}
redis_prefix: "{prefix}"
breaker: {{min_requests: 2, failure_rate: 0.5, open_seconds: 60, local_cache_seconds: 0}}
cache: {{enabled: true, ttl_seconds: 60}}
teams:
  rl-team: {{limits: {{rpm: 2}}}}
  budget-team: {{budget: {{daily_tokens: 100}}}}
  cut-team: {{budget: {{daily_tokens: 150}}}}
  gone-team: {{budget: {{daily_tokens: 150}}}}
  slow-team: {{budget: {{daily_tokens: 100}}}}
keys:
  one-rpm: {{limits: {{rpm: 1}}}}
tasks: {{legal: legal-model}}
model_policies:
  ks: {{fallback_model: fallback}}
  legal-model: {{limits: {{rpm: 1000}}}}
models:
  - {{name: fast, provider: openai, base_url: "{upstream}/v1", model: stub-fast,
      pricing: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
  - {{name: legal-model, provider: openai, base_url: "{upstream}/v1", model: stub-legal}}
  - {{name: ks, provider: openai, base_url: "{upstream}/v1", model: stub-ks}}
  - {{name: ks-nofb, provider: openai, base_url: "{upstream}/v1", model: stub-ks-nofb}}
  - {{name: fallback, provider: rules, rules: {{fixed: "The assistant is offline."}}}}
  - {{name: cuts, provider: openai, base_url: "{upstream}/v1", model: cut-mid, max_retries: 0}}
  - {{name: stalls-mid, provider: openai, base_url: "{upstream}/v1", model: "stall-mid:3",
      max_retries: 0}}
  - {{name: stalls, provider: openai, base_url: "{upstream}/v1", model: "stall-before:3",
      max_retries: 0, timeouts: {{first_token: 0.3, total: 2}}}}
  - {{name: brk, provider: openai, base_url: "{upstream}/v1", model: error-500,
      max_retries: 0, weight: 1, id: brk-primary}}
  - {{name: brk, provider: openai, base_url: "{upstream}/v1", model: stub-brk-backup,
      weight: 0, id: brk-backup}}
"""


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    p = "lgt-i1-" + uuid.uuid4().hex[:8] + ":"
    yield p
    _drop_prefix(p)


def _start(text: str, home: Path, db: str) -> tuple[ServerThread, Gateway]:
    server = ServerThread(text, home)
    url = server.start()
    return server, Gateway(url, MASTER, text, home, db)


@pytest.fixture(scope="module")
def pair(upstream: str, prefix: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateways (separate runtimes) sharing one database and one Redis."""
    home = tmp_path_factory.mktemp("govhome")
    db = f"sqlite:///{home / 'lockgate.db'}"
    text = governance_config(upstream, home, db, prefix)
    sa, ga = _start(text, home, db)
    sb, gb = _start(text, home, db)
    try:
        yield ga, gb
    finally:
        sa.stop()
        sb.stop()


@pytest.fixture(scope="module")
def gw(pair: tuple[Gateway, Gateway]) -> Gateway:
    return pair[0]


def client(gw: Gateway, key: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, **kw)


def stub_stats(upstream: str) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(upstream + "/_stats").json()
    return out


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def say(c: openai.OpenAI, model: str, text: str, **kw: Any) -> Any:
    return c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)


# ------------------------------------------------------------------ limits and budgets


def test_rate_limit_429_with_headers(gw: Gateway) -> None:
    c = client(gw, gw.new_key("rl-team"))
    first = say(c, "fast", "one")
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    say(c, "fast", "two")
    with pytest.raises(openai.RateLimitError) as err:
        say(c, "fast", "three")
    resp = err.value.response
    assert resp.headers["retry-after"].isdigit()
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.code == "rate_limit_exceeded"


def test_key_limit_by_key_name(gw: Gateway) -> None:
    with gw.admin() as a:
        a.post("/admin/teams", json={"name": "named-keys"})
        r = a.post("/admin/keys", json={"team": "named-keys", "name": "one-rpm"})
        key = r.json()["key"]
    c = client(gw, key)
    say(c, "fast", "first")
    with pytest.raises(openai.RateLimitError) as err:
        say(c, "fast", "second")
    assert "key " in err.value.message
    say(client(gw, gw.new_key("named-keys")), "fast", "another key of the team is free")


def test_model_limit_headers(gw: Gateway) -> None:
    r = say(client(gw, gw.new_key()), "legal-model", "x " + uuid.uuid4().hex)
    assert r.headers["x-ratelimit-limit-requests"] == "1000"


def test_nothing_configured_means_no_governance_work(tmp_path: Path) -> None:
    from lockgate.governance import Governor
    from lockgate.pipeline.call import Call, Principal
    from lockgate.pipeline.quotas import Limits, scopes_for
    from lockgate.settings import parse_config
    from lockgate.state import MemoryState

    cfg = parse_config("models: [{name: m, provider: openai, base_url: http://x, model: y}]")
    assert cfg.guards is None and not cfg.cache.enabled and cfg.redis_url is None
    limits = Limits(cfg, Governor(MemoryState()))
    assert limits.active is False
    call = Call("chat", "m", {}, principal=Principal("k", "t"))
    assert scopes_for(cfg, call) == []
    assert asyncio.run(limits.admit(call, [])) is None


def test_budget_exceeded(gw: Gateway) -> None:
    c = client(gw, gw.new_key("budget-team"))
    say(c, "fast", "hello", max_tokens=60)  # reserves ~65 of 100 tokens, spends ~6
    with pytest.raises(openai.RateLimitError) as err:
        say(c, "fast", "again " * 60, max_tokens=60)  # needs ~140
    assert err.value.code == "budget_exceeded"
    assert "Budget exceeded for team" in err.value.message


def test_stream_cut_settles_budget_and_audits_failure(gw: Gateway) -> None:
    key = gw.new_key("cut-team")
    c = client(gw, key)
    with pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model="cuts", stream=True, max_tokens=60,
                                           messages=[{"role": "user", "content": "go"}]):
            pass
    # the cut call's 90-token reservation (30 prompt bound + 60) was settled at bounds (the
    # prompt as reserved + the bytes streamed, ~45) as no usage came, so another 92-token
    # call fits in the 150-token budget; a reservation still held would leave no room
    wait_for(lambda: _budget_fits(c), "the cut call to settle")

    async def rows() -> list[Any]:
        store = await Store.open(gw.database_url)
        try:
            return await store.recent_usage(limit=50, model="cuts")
        finally:
            await store.close()

    def has_cut() -> bool:
        return any(r.status >= 500 and r.stream for r in asyncio.run(rows()))

    wait_for(has_cut, "the audit record of the cut stream")


def test_client_disconnect_mid_stream_settles_budget(gw: Gateway) -> None:
    c = client(gw, gw.new_key("gone-team"))
    with httpx.Client(base_url=gw.v1, timeout=10,
                      headers={"Authorization": f"Bearer {c.api_key}"}) as h, h.stream(
            "POST", "/chat/completions",
            json={"model": "stalls-mid", "stream": True, "max_tokens": 60,
                  "messages": [{"role": "user", "content": "go"}]}) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # first chunk arrived, then the client hangs up
    wait_for(lambda: _budget_fits(c), "the disconnected stream to settle", timeout=5)


def test_upstream_timeout_releases_budget(gw: Gateway) -> None:
    c = client(gw, gw.new_key("slow-team"))
    with pytest.raises(openai.APIStatusError) as err:
        say(c, "stalls", "wait", max_tokens=60)
    assert err.value.status_code == 504
    wait_for(lambda: _budget_fits(c), "the timed-out call's reservation to be released")


def _budget_fits(c: openai.OpenAI) -> bool:
    try:
        say(c, "fast", "fits", max_tokens=60)
    except openai.RateLimitError:
        return False
    return True


# ------------------------------------------------------------------ breaker


def test_breaker_opens_and_is_shared(pair: tuple[Gateway, Gateway], upstream: str) -> None:
    ga, gb = pair
    ca, cb = client(ga, ga.new_key()), client(gb, gb.new_key())
    before = stub_stats(upstream)["by_model"].get("error-500", 0)
    for i in range(2):
        r = say(ca, "brk", f"x{i}")
        assert r.headers["x-lockgate-deployment"] == "brk-backup"  # fell back
    assert stub_stats(upstream)["by_model"].get("error-500", 0) - before == 2

    def opened() -> bool:
        with ga.admin() as a:
            return bool(a.get("/admin/controls").json()["breakers"].get("brk-primary") == 2)

    wait_for(opened, "the breaker of brk-primary to open")
    for i in range(3):  # the other gateway skips the open deployment without trying it
        r = say(cb, "brk", f"y{i}")
        assert r.headers["x-lockgate-deployment"] == "brk-backup"
    assert stub_stats(upstream)["by_model"].get("error-500", 0) - before == 2
    metrics = httpx.get(gb.url + "/metrics").text
    assert 'lockgate_breaker_state{deployment="brk-primary"} 2.0' in metrics
    assert 'lockgate_governance{stat="admitted"}' in metrics


# ------------------------------------------------------------------ cache


def test_cache_hit_per_team_and_no_cache(gw: Gateway, upstream: str) -> None:
    team = "cache-" + uuid.uuid4().hex[:6]
    c1, c2 = client(gw, gw.new_key(team)), client(gw, gw.new_key(team))
    other = client(gw, gw.new_key())
    text = "cache me " + uuid.uuid4().hex
    first = say(c1, "fast", text)
    assert first.headers["x-lockgate-cache"] == "miss"
    deadline = time.monotonic() + 3
    while True:  # the cache fill runs after the answer, off the request path
        n = stub_stats(upstream)["total"]
        hit = say(c2, "fast", text)  # same team, another key
        if hit.headers["x-lockgate-cache"] == "hit":
            break
        assert time.monotonic() < deadline, "no cache hit"
        time.sleep(0.02)
    assert hit.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert stub_stats(upstream)["total"] == n  # the hit never reached the upstream
    n = stub_stats(upstream)["total"]
    miss = say(other, "fast", text)  # another team: no cross-team hit
    assert miss.headers["x-lockgate-cache"] == "miss"
    bypass = c1.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": text}],
        extra_headers={"cache-control": "no-cache"})
    assert bypass.headers["x-lockgate-cache"] == "bypass"
    assert stub_stats(upstream)["total"] == n + 2  # other team and no-cache went upstream
    with gw.admin() as a:
        assert a.get("/admin/controls").json()["cache"]["hits"] >= 1
    assert 'lockgate_cache_total{result="hit"}' in httpx.get(gw.url + "/metrics").text
    rid = hit.headers["x-request-id"]

    async def row() -> Any:
        store = await Store.open(gw.database_url)
        try:
            rows = await store.recent_usage(limit=100, model="fast")
            return next((r for r in rows if r.request_id == rid), None)
        finally:
            await store.close()

    wait_for(lambda: asyncio.run(row()) is not None, "the cache hit's audit record")
    rec = asyncio.run(row())
    assert rec.cached is True and rec.cost == 0


# ------------------------------------------------------------------ routing and kill switch


def test_task_routing(gw: Gateway) -> None:
    c = client(gw, gw.new_key())
    r = say(c, "fast", "contract clause", extra_headers={"x-lockgate-task": "legal"})
    assert r.headers["x-lockgate-deployment"].startswith("legal-model/")
    r = say(c, "fast", "another clause", metadata={"task": "legal"})
    assert r.headers["x-lockgate-deployment"].startswith("legal-model/")


def test_kill_switch_admin_api(pair: tuple[Gateway, Gateway]) -> None:
    ga, gb = pair
    cb = client(gb, gb.new_key())
    with ga.admin() as a:
        assert a.post("/admin/controls/kill", json={"model": "ks"}).status_code == 200
        assert a.post("/admin/controls/kill", json={"model": "ks-nofb"}).status_code == 200
    try:
        def rerouted() -> bool:
            r = say(cb, "ks", "hi")
            return bool(r.headers.get("x-lockgate-kill-switch") == "model")

        wait_for(rerouted, "the kill switch to reach the other gateway")
        r = say(cb, "ks", "hi " + uuid.uuid4().hex)
        assert r.headers["x-lockgate-deployment"].startswith("fallback/rules")
        assert r.parse().choices[0].message.content == "The assistant is offline."
        with pytest.raises(openai.InternalServerError) as err:
            say(cb, "ks-nofb", "hi")
        assert err.value.status_code == 503 and err.value.code == "model_disabled"
    finally:
        with ga.admin() as a:
            a.post("/admin/controls/kill", json={"model": "ks", "off": False})
            a.post("/admin/controls/kill", json={"model": "ks-nofb", "off": False})
    wait_for(lambda: "x-lockgate-kill-switch" not in say(cb, "ks", "hi").headers,
             "the model to be switched back on")


def test_kill_switch_cli(gw: Gateway, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lockgate.cli.app import app

    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(gw.config_text)
    c = client(gw, gw.new_key())
    runner = CliRunner()
    res = runner.invoke(app, ["controls", "kill", "--model", "ks", "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    try:
        wait_for(lambda: say(c, "ks", "x").headers.get("x-lockgate-kill-switch") == "model",
                 "the CLI kill switch to reach the gateway")
    finally:
        res = runner.invoke(app, ["controls", "restore", "--model", "ks", "-c", str(cfg)])
        assert res.exit_code == 0, res.output


# ------------------------------------------------------------------ revocation


def test_revoked_key_rejected_on_other_gateway(pair: tuple[Gateway, Gateway]) -> None:
    ga, gb = pair
    key = ga.new_key()
    cb = client(gb, key)
    say(cb, "fast", "cached on b")  # b now holds the key in its 30 s cache
    with ga.admin() as a:
        kid = next(k["id"] for k in a.get("/admin/keys").json()["data"]
                   if key.startswith(k["key_prefix"]))
        r = a.post(f"/admin/keys/{kid}/revoke")
        assert r.status_code == 200
        assert r.json() == {"id": kid, "revoked": True, "announced": True}
        assert a.post(f"/admin/keys/{kid}/revoke").status_code == 404  # already revoked

    def rejected() -> bool:
        try:
            say(cb, "fast", "after revoke")
        except openai.AuthenticationError as exc:
            return exc.code == "revoked_api_key"
        return False

    wait_for(rejected, "the revocation to reach the other gateway", timeout=2.0)


# ------------------------------------------------------------------ usage by business unit


def test_usage_by_business_unit(gw: Gateway) -> None:
    bu = "bu-" + uuid.uuid4().hex[:6]
    team = "t-" + uuid.uuid4().hex[:6]
    with gw.admin() as a:
        assert a.post("/admin/teams", json={"name": team, "business_unit": bu}).status_code == 201
    c = client(gw, gw.new_key(team))
    say(c, "fast", "count me")

    def found() -> bool:
        with gw.admin() as a:
            r = a.get("/admin/usage", params={"group_by": "business_unit"})
            assert r.json()["group_by"] == "business_unit"
            rows = {row["business_unit"]: row for row in r.json()["data"]}
            return bu in rows and rows[bu]["requests"] == 1
    wait_for(found, "usage grouped by business unit")

    from typer.testing import CliRunner

    from lockgate.cli.app import app

    cfg = gw.home / "bu.yaml"
    cfg.write_text(gw.config_text)
    res = CliRunner().invoke(app, ["controls", "usage", "--by", "business-unit", "--json",
                                   "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    assert any(row["business_unit"] == bu and row["requests"] == 1
               for row in json.loads(res.stdout))


# ------------------------------------------------------------------ Redis down


def test_redis_down_budgets_fail_closed_cache_fails_open(
    upstream: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'lockgate.db'}"
    text = governance_config(upstream, tmp_path, db, "lgt-i1-down:",
                             redis_url="redis://127.0.0.1:1/0")
    server, g = _start(text, tmp_path, db)
    try:
        with pytest.raises(openai.InternalServerError) as err:
            say(client(g, g.new_key("budget-team")), "fast", "hi")
        assert err.value.status_code == 503 and err.value.code == "state_unavailable"
        r = say(client(g, g.new_key()), "fast", "no budget here")  # cache on, Redis down
        assert r.status_code == 200
        assert r.headers["x-lockgate-cache"] == "miss"
    finally:
        server.stop()
