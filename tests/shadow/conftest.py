"""Fixtures for shadow traffic: the stand-in upstream and a real Runtime (pipeline, audit writer).

The runtime runs on SQLite and on the real PostgreSQL (one database per test
module, ``shadow_results`` emptied before each test). It is built from
lockgate.yaml text like in production; tests attach their own mirrors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.support.postgres import fresh_database

from lockgate.pipeline.call import Call, Principal
from lockgate.pipeline.facts import CallFacts
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.shadow import ShadowMirror, ShadowRoute
from lockgate.store import Store
from lockgate.store.records import UsageRow
from lockgate.store.tables import shadow_results
from lockgate.testing.stub_upstream import StubUpstream

MASTER = "test-master-key-0123456789"
PRICE = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 2_000_000.0}  # 1 / 2 per token
CALLER = Principal(key_id="key-caller", team_id="team-caller", team_name="caller-team")
TIGHT = Principal(key_id="key-tight", team_id="team-tight", team_name="tight-team")
"""A caller whose team may make 1 request a minute and spend 100 tokens a day."""


def runtime_config(stub: str, home: Path, database_url: str) -> str:
    price = "{input_per_mtok: 1000000, output_per_mtok: 2000000}"
    return f"""
master_key: {MASTER}
home: {home}
database_url: {database_url}
audit: {{flush_interval_ms: 20}}
breaker: {{min_requests: 2, failure_rate: 0.5, open_seconds: 60, local_cache_seconds: 0}}
cache: {{enabled: true, ttl_seconds: 60}}
teams:
  tight-team: {{limits: {{rpm: 1}}, budget: {{daily_tokens: 100}}}}
models:
  - {{name: support, provider: openai, base_url: "{stub}/v1", model: primary,
      id: support/primary, pricing: {price}}}
  - {{name: support-next, provider: openai, base_url: "{stub}/v1", model: cand,
      id: support/cand, pricing: {price}}}
  - {{name: support-rules, provider: rules, id: support/rules,
      rules: {{fixed: "```json\\n{{\\"reply\\": \\"something else\\"}}\\n```"}}}}
  - {{name: support-ok, provider: rules, id: support/ok, rules: {{fixed: "ok"}}}}
  - {{name: support-bad, provider: openai, base_url: "{stub}/v1", model: error-500,
      max_retries: 0, id: support/broken}}
  - {{name: support-flaky, provider: openai, base_url: "{stub}/v1", model: "flaky:1",
      max_retries: 1, id: support/flaky, pricing: {price}}}
  - {{name: support-slow, provider: openai, base_url: "{stub}/v1", model: "stall-before:3",
      max_retries: 0, id: support/slow}}
"""


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    yield from fresh_database("lg_shadow")


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def start_runtime(stub: StubUpstream, home: Path, url: str) -> Runtime:
    rt = await Runtime.start(parse_config(runtime_config(stub.base_url, home, url)))
    async with rt.store.engine.begin() as conn:
        await conn.execute(shadow_results.delete())
    return rt


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lockgate.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def rt(stub: StubUpstream, database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime on SQLite and on PostgreSQL; closed (mirror, writer drained) afterwards."""
    runtime = await start_runtime(stub, tmp_path / "home", database_url)
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
async def rt_sqlite(stub: StubUpstream, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime on SQLite only (tests about sampling, not storage)."""
    runtime = await start_runtime(stub, tmp_path / "home", f"sqlite:///{tmp_path / 'lg.db'}")
    try:
        yield runtime
    finally:
        await runtime.aclose()


def route(candidate: str = "support/cand", percent: float = 100.0, timeout: float = 30.0,
          price: dict[str, float] | None = None) -> ShadowRoute:
    p = price if price is not None else PRICE

    def cost(prompt: int, completion: int) -> float:
        return (prompt * p["input_per_mtok"] + completion * p["output_per_mtok"]) / 1e6

    return ShadowRoute(model="support", candidate_id=candidate, price=cost, percent=percent,
                       timeout=timeout)


def mirror_for(rt: Runtime, *routes: ShadowRoute, **kw: Any) -> ShadowMirror:
    """A started mirror sending through ``rt``'s pipeline, rows to ``rt``'s audit writer."""
    m = ShadowMirror(rt.pipeline, list(routes), rt.audit, **kw)
    m.start()
    return m


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "support", "messages": [{"role": "user", "content": text}], **extra}


def chat_call(text: str, principal: Principal | None = CALLER, **extra: Any) -> Call:
    return Call(kind="chat", model="support", body=chat_body(text, **extra), principal=principal)


async def shadow_rows(store: Store) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        result = await conn.execute(sa.select(shadow_results).order_by(shadow_results.c.id))
        return [dict(r) for r in result.mappings()]


async def audit_rows(store: Store, request_ids: list[str]) -> dict[str, UsageRow]:
    """Stored usage rows by request id (only these ids: the PostgreSQL database is shared)."""
    wanted = set(request_ids)
    return {r.request_id: r for r in await store.recent_usage(10_000)
            if r.request_id in wanted}


def facts_for(call: Call, answer: object, upstream_s: float) -> CallFacts:
    """The facts the pipeline hands the mirror with a primary answer (``upstream_s`` pinned)."""
    facts = getattr(answer, "facts", None)
    if not isinstance(facts, CallFacts):
        facts = CallFacts(call.request_id, call.model, call.started)
    facts.upstream_seconds = upstream_s
    return facts
