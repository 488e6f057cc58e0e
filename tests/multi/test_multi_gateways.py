"""Two gateway OS processes (``lockgate serve``) sharing PostgreSQL and Redis.

- 100 concurrent calls split over both never spend more than the team's budget
  (reservations are taken atomically in Redis before each call);
- a circuit breaker opened by one process makes the other skip that deployment;
- a key revoked through one process is refused by the other at once.
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

from lockgate.store import Store
from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.gateway.conftest import MASTER, PG_ADMIN_URL, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
BUDGET_TOKENS = 1000
PROMPT = " ".join(["word"] * 20)
MAX_TOKENS = 20


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
breaker: {{min_requests: 2, failure_rate: 0.5, open_seconds: 60, local_cache_seconds: 0}}
teams:
  shared: {{budget: {{daily_tokens: {BUDGET_TOKENS}}}}}
models:
  - {{name: slow, provider: openai, base_url: "{upstream}/v1", model: "slow:100"}}
  - {{name: brk, provider: openai, base_url: "{upstream}/v1", model: error-500,
      max_retries: 0, weight: 1, id: brk-primary}}
  - {{name: brk, provider: openai, base_url: "{upstream}/v1", model: stub-backup,
      weight: 0, id: brk-backup}}
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
    import psycopg

    name = "lg_i1_multi_" + uuid.uuid4().hex[:8]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def gateways(stub: str, pg_db: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Proc, Proc]]:
    prefix = "lgt-i1m-" + uuid.uuid4().hex[:8] + ":"
    base = tmp_path_factory.mktemp("multi")
    cfg = base / "lockgate.yaml"
    cfg.write_text(_config(stub, pg_db, prefix))
    procs: list[Proc] = []
    try:
        for i in range(2):
            home = base / f"home{i}"
            port = free_port()
            log = base / f"gw{i}.log"
            env = {**os.environ, "LOCKGATE_HOME": str(home)}
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


def _admin(p: Proc) -> httpx.Client:
    return httpx.Client(base_url=p.url, headers={"Authorization": f"Bearer {MASTER}"},
                        timeout=10)


def _new_key(p: Proc, team: str) -> tuple[str, str]:
    with _admin(p) as a:
        r = a.post("/admin/teams", json={"name": team})
        assert r.status_code in (201, 409), r.text
        r = a.post("/admin/keys", json={"team": team})
        assert r.status_code == 201, r.text
        return str(r.json()["key"]), str(r.json()["id"])


def test_budget_holds_across_two_processes(gateways: tuple[Proc, Proc], pg_db: str) -> None:
    a, b = gateways
    key, _ = _new_key(a, "shared")

    async def one(i: int) -> tuple[int, int, str | None]:
        gw = (a, b)[i % 2]
        c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0,
                               timeout=30)
        try:
            r = await c.chat.completions.create(
                model="slow", max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": f"{i} {PROMPT}"}])
            assert r.usage is not None
            return 200, r.usage.total_tokens, None
        except openai.APIStatusError as exc:
            return exc.status_code, 0, exc.code
        finally:
            await c.close()

    async def run_all() -> list[tuple[int, int, str | None]]:
        return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(run_all())
    ok = [t for s, t, _ in results if s == 200]
    denied = [c for s, _, c in results if s == 429]
    others = [(s, c) for s, _, c in results if s not in (200, 429)]
    assert not others, others
    assert denied and all(c == "budget_exceeded" for c in denied)
    # the budget admits at least 1000 / ~155 reserved tokens (the prompt's ~130-token byte
    # bound + 20; see docs/governance.md)
    assert len(ok) >= 6
    assert sum(ok) <= BUDGET_TOKENS  # actual spend never beyond the shared budget
    print(f"budget {BUDGET_TOKENS}: {len(ok)} answered, {sum(ok)} tokens, "
          f"{len(denied)} denied")

    async def spent() -> int:
        store = await Store.open(pg_db)
        try:
            rows = await store.usage_summary(team="shared", group_by=("team",))
            return sum(int(r["prompt_tokens"]) + int(r["completion_tokens"]) for r in rows)
        finally:
            await store.close()

    deadline = time.monotonic() + 10
    while asyncio.run(spent()) < sum(ok) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert asyncio.run(spent()) == sum(ok) <= BUDGET_TOKENS  # what the audit recorded


def test_breaker_shared_across_processes(gateways: tuple[Proc, Proc], stub: str) -> None:
    a, b = gateways
    key, _ = _new_key(a, "brk-team")
    ca = openai.OpenAI(base_url=a.url + "/v1", api_key=key, max_retries=0)
    cb = openai.OpenAI(base_url=b.url + "/v1", api_key=key, max_retries=0)

    def primary_calls() -> int:
        n: int = httpx.get(stub + "/_stats").json()["by_model"].get("error-500", 0)
        return n

    before = primary_calls()
    for i in range(2):
        ca.chat.completions.create(model="brk", messages=[{"role": "user", "content": f"a{i}"}])
    assert primary_calls() - before == 2

    def opened_on_a() -> bool:
        with _admin(a) as adm:
            return bool(adm.get("/admin/controls").json()["breakers"].get("brk-primary") == 2)

    deadline = time.monotonic() + 5
    while not opened_on_a():
        assert time.monotonic() < deadline, "breaker did not open"
        time.sleep(0.05)
    for i in range(3):
        r = cb.chat.completions.with_raw_response.create(
            model="brk", messages=[{"role": "user", "content": f"b{i}"}])
        assert r.headers["x-lockgate-deployment"] == "brk-backup"
    assert primary_calls() - before == 2  # process b never tried the open deployment


def test_revocation_reaches_other_process(gateways: tuple[Proc, Proc]) -> None:
    a, b = gateways
    key, kid = _new_key(a, "rev-team")
    cb = openai.OpenAI(base_url=b.url + "/v1", api_key=key, max_retries=0)
    cb.chat.completions.create(model="slow", messages=[{"role": "user", "content": "hi"}])
    with _admin(a) as adm:
        assert adm.post(f"/admin/keys/{kid}/revoke").status_code == 200
    deadline = time.monotonic() + 2
    while True:
        try:
            cb.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError as exc:
            assert exc.code == "revoked_api_key"
            break
        assert time.monotonic() < deadline, "b still accepts the revoked key"
        time.sleep(0.02)
