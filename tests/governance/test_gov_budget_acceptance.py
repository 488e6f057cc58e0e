"""Acceptance: budgets are exact, not estimated (issue 11).

Two gateway OS processes (``lockgate serve``) share PostgreSQL and Redis. One team has a
daily **money** budget over a deployment with real prompt and completion pricing. 100
concurrent calls, split over both gateways, send prompts the old 4-characters-a-token
estimate undercounts (one-letter words: the stand-in upstream bills one token a word) and
give no ``max_tokens`` (the stand-in would otherwise answer far past the reserved default).

Documented bound (docs/governance.md): for an upstream whose tokens each cover at least one
UTF-8 byte, and for models lockgate tokenises itself, the overshoot is **0**. Before this
change the same run spent three times the budget (0.15 of 0.05).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis
from tests.gateway.conftest import MASTER, free_port
from tests.support.postgres import fresh_database

from lockgate.store import Store
from lockgate.testing.stub_upstream import run_stub_in_thread

REDIS_URL = "redis://127.0.0.1:6379/0"
BUDGET = 0.05  # currency units a day
PRICE_IN, PRICE_OUT = 10.0, 30.0  # per million tokens
DEFAULT_MAX = 40
CALLS = 100

pytestmark = pytest.mark.redis


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _config(upstream: str, db: str, prefix: str) -> str:
    return f"""
master_key: {MASTER}
database_url: {db}
key_cache_ttl: 30
audit: {{flush_interval_ms: 50}}
redis_url: {REDIS_URL}
redis_prefix: "{prefix}"
governance: {{default_max_tokens: {DEFAULT_MAX}}}
teams:
  capped: {{budget: {{daily: {BUDGET}}}}}
  capped-too: {{budget: {{daily: {BUDGET}}}}}
models:
  - {{name: priced, provider: openai, base_url: "{upstream}/v1", model: "slow:60",
      max_retries: 0,
      pricing: {{input_per_mtok: {PRICE_IN}, output_per_mtok: {PRICE_OUT}}}}}
"""


def _wait_up(p: Proc) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {p.log.read_text()[-2000:]}")
        try:
            if httpx.get(p.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway did not start")


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    with run_stub_in_thread() as s:
        yield s.base_url


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    yield from fresh_database("lg_budget_acc")


@pytest.fixture(scope="module")
def gateways(stub: str, pg_db: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Proc, Proc]]:
    prefix = "lgt-budacc-" + uuid.uuid4().hex[:8] + ":"
    base = tmp_path_factory.mktemp("budget-acceptance")
    cfg = base / "lockgate.yaml"
    cfg.write_text(_config(stub, pg_db, prefix))
    procs: list[Proc] = []
    try:
        for i in range(2):
            port = free_port()
            log = base / f"gw{i}.log"
            env = {**os.environ, "LOCKGATE_HOME": str(base / f"home{i}")}
            env.pop("LOCKGATE_REDIS_URL", None)
            proc = subprocess.Popen(
                [sys.executable, "-m", "lockgate", "serve", "-c", str(cfg), "-p", str(port)],
                stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
            )
            procs.append(Proc(f"http://127.0.0.1:{port}", proc, log))
        for p in procs:
            _wait_up(p)
        yield procs[0], procs[1]
    finally:
        for p in procs:
            p.proc.terminate()
        for p in procs:
            try:
                p.proc.wait(20)
            except subprocess.TimeoutExpired:
                p.proc.kill()
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=prefix + "*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()


def _new_key(p: Proc, team: str) -> str:
    with httpx.Client(base_url=p.url, headers={"Authorization": f"Bearer {MASTER}"},
                      timeout=10) as a:
        r = a.post("/admin/teams", json={"name": team})
        assert r.status_code in (201, 409), r.text
        r = a.post("/admin/keys", json={"team": team})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


def _prompt(i: int) -> str:
    return f"{i} " + " ".join(["a"] * 150)  # 301 characters, 151 words


def test_concurrent_calls_never_spend_past_a_money_budget(
    gateways: tuple[Proc, Proc], pg_db: str, stub: str
) -> None:
    a, b = gateways
    key = _new_key(a, "capped")

    async def one(i: int) -> tuple[int, float, str | None]:
        gw = (a, b)[i % 2]
        c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)
        try:
            r = await c.chat.completions.create(
                model="priced", messages=[{"role": "user", "content": _prompt(i)}])
            assert r.usage is not None
            cost = (r.usage.prompt_tokens * PRICE_IN
                    + r.usage.completion_tokens * PRICE_OUT) / 1e6
            return 200, cost, None
        except openai.APIStatusError as exc:
            return exc.status_code, 0.0, exc.code
        finally:
            await c.close()

    async def run_all() -> list[tuple[int, float, str | None]]:
        return await asyncio.gather(*(one(i) for i in range(CALLS)))

    results = asyncio.run(run_all())
    ok = [cost for s, cost, _ in results if s == 200]
    denied = [c for s, _, c in results if s == 429]
    others = [(s, c) for s, _, c in results if s not in (200, 429)]
    assert not others, others
    assert denied and all(c == "budget_exceeded" for c in denied)
    spent = sum(ok)
    overshoot = max(0.0, spent - BUDGET)
    print(f"budget {BUDGET}: {len(ok)} answered, spent {spent:.6f}, overshoot {overshoot:.6f}, "
          f"{len(denied)} denied")
    assert overshoot == 0.0, f"spent {spent} of a {BUDGET} budget"
    # the budget was used, not just refused: at least half of it in true cost
    assert spent >= BUDGET / 2

    # the reserved completion cap went upstream: every answer stopped at it
    sent = httpx.get(stub + "/_requests").json()
    bodies = [r["body"] for r in sent if r.get("path") == "/v1/chat/completions"]
    assert bodies and all(b.get("max_tokens") == DEFAULT_MAX for b in bodies)

    async def audited() -> float:
        store = await Store.open(pg_db)
        try:
            rows = await store.usage_summary(team="capped", group_by=("team",))
            return sum(float(r["cost"]) for r in rows)
        finally:
            await store.close()

    deadline = time.monotonic() + 10
    while asyncio.run(audited()) < spent - 1e-9 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert asyncio.run(audited()) == pytest.approx(spent)
    assert asyncio.run(audited()) <= BUDGET


def test_max_tokens_is_only_added_to_governed_calls(gateways: tuple[Proc, Proc],
                                                     stub: str) -> None:
    a, _ = gateways
    free = openai.OpenAI(base_url=a.url + "/v1", api_key=_new_key(a, "no-budget"),
                         max_retries=0)
    capped = openai.OpenAI(base_url=a.url + "/v1", api_key=_new_key(a, "capped-too"),
                           max_retries=0)
    httpx.post(stub + "/_reset")
    r = free.chat.completions.create(model="priced",
                                     messages=[{"role": "user", "content": _prompt(1)}])
    assert r.usage is not None and r.usage.completion_tokens > DEFAULT_MAX  # not capped
    r = capped.chat.completions.create(model="priced", max_tokens=5,
                                       messages=[{"role": "user", "content": "x y z"}])
    assert r.usage is not None and r.usage.completion_tokens == 5  # the client's own cap
    bodies = [q["body"] for q in httpx.get(stub + "/_requests").json()]
    assert "max_tokens" not in bodies[0] and bodies[1]["max_tokens"] == 5
