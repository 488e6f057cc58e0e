"""ShadowMirror against the stand-in upstream: sampling, storage, comparison, saturation."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from lockgate.pipeline.call import Call
from lockgate.pipeline.shadow import (
    ShadowMirror,
    ShadowRoute,
    build_mirror,
    compare,
    completion_text,
    shadow_report,
)
from lockgate.providers.base import Completion, Provider
from lockgate.providers.openai_compat import OpenAICompatProvider
from lockgate.providers.rules import RulesProvider
from lockgate.settings import ModelDeployment, Pricing, ShadowConfig, ShadowSettings
from lockgate.store import Store
from lockgate.store.tables import shadow_results
from lockgate.testing.stub_upstream import StubUpstream

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PRICE = Pricing(input_per_mtok=1_000_000.0, output_per_mtok=2_000_000.0)  # 1 / 2 per token


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    import uuid

    name = "lg_shadow_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lockgate.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = await Store.open(url)
    async with s.engine.begin() as conn:
        await conn.execute(shadow_results.delete())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def rules_deployment(name: str, **kw: Any) -> ModelDeployment:
    """A ``provider: rules`` deployment (a fixed answer unless ``rules`` is given)."""
    kw.setdefault("rules", {"fixed": "configured answer"})
    return ModelDeployment(name=name, provider="rules", **kw)


def deployment(stub: StubUpstream, name: str, model: str, **kw: Any) -> ModelDeployment:
    return ModelDeployment(name=name, provider="openai", base_url=stub.openai_base, model=model,
                           **kw)


def route(provider: Provider, percent: float = 100.0, candidate: str = "support/cand",
          timeout: float = 30.0) -> ShadowRoute:
    return ShadowRoute(model="support", candidate_id=candidate, provider=provider,
                       price=PRICE.cost, percent=percent, timeout=timeout)


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "support", "messages": [{"role": "user", "content": text}], **extra}


async def primary_call(provider: Provider, text: str, **extra: Any) -> tuple[Call, Completion]:
    body = chat_body(text, **extra)
    call = Call(kind="chat", model="support", body=body)
    call.deployment = "support/primary"
    return call, await provider.chat(body)


async def rows(store: Store) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        result = await conn.execute(sa.select(shadow_results).order_by(shadow_results.c.id))
        return [dict(r) for r in result.mappings()]


async def test_mirrored_calls_are_stored_side_by_side(store: Store, stub: StubUpstream) -> None:
    primary = OpenAICompatProvider(deployment(stub, "support", "primary"))
    candidate = OpenAICompatProvider(deployment(stub, "support-next", "cand"))
    mirror = ShadowMirror(store, [route(candidate)], batch_size=2)
    mirror.start()
    try:
        for i in range(5):
            call, answer = await primary_call(primary, f"question {i}")
            mirror.maybe_mirror(call, call.body, answer, 0.012, 0.5)
        call, answer = await primary_call(primary, "give json",
                                          response_format={"type": "json_object"})
        mirror.maybe_mirror(call, call.body, answer, 0.02, 0.25)
        assert mirror.mirrored == 6 and mirror.dropped == 0
        await mirror.flush()
    finally:
        await mirror.aclose()
        await primary.aclose()
        await candidate.aclose()
    stored = await rows(store)
    assert len(stored) == 6 and mirror.written == 6
    by_text = {r["primary_text"]: r for r in stored}  # workers finish in any order
    first = by_text["stub reply: question 0"]
    assert first["primary_text"] == first["candidate_text"] == "stub reply: question 0"
    assert first["text_match"] is True and first["json_match"] is None
    assert first["candidate_deployment"] == "support/cand"
    assert first["primary_deployment"] == "support/primary"
    assert first["primary_latency_ms"] == pytest.approx(12.0)
    assert first["candidate_latency_ms"] > 0 and first["candidate_error"] is None
    # stub usage: prompt "question 0" = 2 words, completion "stub reply: question 0" = 4
    assert (first["candidate_prompt_tokens"], first["candidate_completion_tokens"]) == (2, 4)
    assert first["candidate_cost"] == pytest.approx(2 * 1 + 4 * 2)
    as_json = next(r for r in stored if r["primary_text"].startswith("{"))
    assert as_json["json_match"] is True and as_json["text_match"] is True
    # the candidate really received the mirrored requests (stream off, its own model id)
    assert stub.counts["cand"] == 6
    report = await shadow_report(store, "support")
    assert len(report) == 1
    line = report[0]
    assert line.count == 6 and line.text_agreement == 1.0 and line.json_agreement == 1.0
    assert line.primary_cost == pytest.approx(5 * 0.5 + 0.25)
    assert line.candidate_error_rate == 0.0
    assert line.primary_latency_p50_ms == pytest.approx(12.0)
    assert line.primary_latency_p95_ms == pytest.approx(20.0)


async def test_disagreement_and_candidate_errors(store: Store, stub: StubUpstream) -> None:
    primary = OpenAICompatProvider(deployment(stub, "support", "primary"))
    rules = RulesProvider(rules_deployment("r"),
                          spec={"fixed": '```json\n{"reply": "something else"}\n```'})
    broken = OpenAICompatProvider(deployment(stub, "support-bad", "error-500", max_retries=0))
    mirror = ShadowMirror(store, {"support": route(rules, candidate="support/rules")})
    other = ShadowMirror(store, {"support": route(broken, candidate="support/broken")})
    mirror.start()
    other.start()
    try:
        call, answer = await primary_call(primary, "json please",
                                          response_format={"type": "json_object"})
        mirror.maybe_mirror(call, call.body, answer, 0.01, 0.1)
        other.maybe_mirror(call, call.body, answer, 0.01, 0.1)
        await mirror.flush()
        await other.flush()
    finally:
        await mirror.aclose()
        await other.aclose()
        await primary.aclose()
        await broken.aclose()
    by_candidate = {r["candidate_deployment"]: r for r in await rows(store)}
    differ = by_candidate["support/rules"]
    assert differ["text_match"] is False and differ["json_match"] is False
    failed = by_candidate["support/broken"]
    assert failed["candidate_error"] == "server_error" and failed["text_match"] is None
    assert other.failed == 1 and mirror.completed == 1
    report = {s.candidate: s for s in await shadow_report(store)}
    assert report["support/rules"].text_agreement == 0.0
    assert report["support/rules"].json_agreement == 0.0
    assert report["support/broken"].candidate_error_rate == 1.0
    assert report["support/broken"].text_agreement is None


async def test_saturated_mirror_drops_and_never_blocks(stub: StubUpstream) -> None:
    slow = OpenAICompatProvider(deployment(stub, "slow", "stall-before:3"))
    mirror = ShadowMirror(None, [route(slow)], concurrency=1, max_pending=2)
    mirror.start()
    answer = Completion({"choices": [{"message": {"role": "assistant", "content": "x"}}]})
    try:
        for i in range(10):
            call = Call(kind="chat", model="support", body=chat_body(str(i)))
            mirror.maybe_mirror(call, call.body, answer, 0.001, 0.0)  # sync: returns at once
        assert (mirror.mirrored, mirror.dropped) == (2, 8)
    finally:
        await mirror.aclose(timeout=0.2)
        await slow.aclose()
    assert mirror.abandoned == 2  # one in flight (cut short), one still queued
    late = Call(kind="chat", model="support", body=chat_body("late"))
    mirror.maybe_mirror(late, late.body, answer, 0.001, 0.0)
    assert mirror.dropped == 9  # closed: dropped, not queued


async def test_percent_sampling_and_unmirrored_models() -> None:
    rules = RulesProvider(rules_deployment("r"), spec={"fixed": "ok"})
    answer = Completion({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
    half = ShadowMirror(None, [route(rules, percent=50)], rng=random.Random(7))
    never = ShadowMirror(None, [route(rules, percent=0)])
    half.start()
    never.start()
    for i in range(200):
        call = Call(kind="chat", model="support", body=chat_body(str(i)))
        half.maybe_mirror(call, call.body, answer, 0.001, 0.0)
        never.maybe_mirror(call, call.body, answer, 0.001, 0.0)
        other = Call(kind="chat", model="other-model", body=chat_body(str(i)))
        half.maybe_mirror(other, other.body, answer, 0.001, 0.0)
    await half.flush()
    await half.aclose()
    await never.aclose()
    assert 60 <= half.mirrored <= 140 and half.dropped == 0
    assert half.completed == half.mirrored
    assert all(r["text_match"] for r in half.results)
    assert never.mirrored == 0


def test_compare_normalises_text_and_json() -> None:
    assert compare("  Hello\n World ", "hello world") == (True, None)
    assert compare('{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}') == (False, True)
    assert compare('{"a": 1}', '{"a": 2}') == (False, False)
    assert compare("x", None) == (None, None)
    tool = {"choices": [{"message": {"content": None, "tool_calls": [{"id": "t"}]}}]}
    assert completion_text(tool) == '[{"id":"t"}]'
    assert completion_text({"choices": []}) is None


async def test_build_mirror_resolves_candidates(tmp_path: Path) -> None:
    deps = [
        rules_deployment("support", id="support/main"),
        rules_deployment("support-next", pricing=PRICE),
        rules_deployment("support-next", id="next-b"),
    ]
    providers = [RulesProvider(d, spec={"fixed": d.deployment_id}) for d in deps]

    def runtime(*routes: ShadowConfig) -> Any:
        config = SimpleNamespace(models=deps, shadow=ShadowSettings(routes=list(routes)))
        return SimpleNamespace(config=config, providers=providers, store=None)

    assert build_mirror(SimpleNamespace(config=SimpleNamespace(shadow=None))) is None
    by_name = build_mirror(runtime(ShadowConfig(model="support", candidate="support-next",
                                                percent=5)))
    by_id = build_mirror(runtime(ShadowConfig(model="support", candidate="next-b",
                                              percent=5)))
    assert by_name is not None and by_id is not None
    try:
        assert by_name.routes["support"].provider is providers[1]
        assert by_name.routes["support"].price(1, 1) == 3.0
        assert by_id.routes["support"].provider is providers[2]
        assert by_id.routes["support"].candidate_id == "next-b"
    finally:
        await by_name.aclose()
        await by_id.aclose()
    with pytest.raises(ValueError, match="neither a deployment id nor a model"):
        build_mirror(runtime(ShadowConfig(model="support", candidate="nope", percent=1)))
    with pytest.raises(ValueError, match="unknown model"):
        build_mirror(runtime(ShadowConfig(model="ghost", candidate="next-b", percent=1)))
