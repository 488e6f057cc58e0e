"""ShadowMirror through a real pipeline and the stand-in upstream: sampling, storage,
comparison, saturation."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from tests.shadow.conftest import (
    chat_call,
    facts_for,
    mirror_for,
    route,
    shadow_rows,
)

from lockgate.providers.base import Completion
from lockgate.runtime import Runtime
from lockgate.settings import ModelDeployment, Pricing, ShadowConfig, ShadowSettings
from lockgate.shadow import build_mirror, compare, completion_text, shadow_report
from lockgate.testing.stub_upstream import StubUpstream

PRICE = Pricing(input_per_mtok=1_000_000.0, output_per_mtok=2_000_000.0)  # 1 / 2 per token


def rules_deployment(name: str, **kw: Any) -> ModelDeployment:
    kw.setdefault("rules", {"fixed": "configured answer"})
    return ModelDeployment(name=name, provider="rules", **kw)


async def test_mirrored_calls_are_stored_side_by_side(rt: Runtime, stub: StubUpstream) -> None:
    mirror = mirror_for(rt, route("support/cand"))
    try:
        for i in range(5):
            call = chat_call(f"question {i}")
            answer = await rt.pipeline.chat(call)
            mirror.maybe_mirror(call, facts_for(call, answer, 0.012), call.body, answer, 0.5)
        call = chat_call("give json", response_format={"type": "json_object"})
        answer = await rt.pipeline.chat(call)
        mirror.maybe_mirror(call, facts_for(call, answer, 0.02), call.body, answer, 0.25)
        assert mirror.mirrored == 6 and mirror.dropped == 0
        await mirror.flush()
        assert await rt.audit.flush(timeout=30)
    finally:
        await mirror.aclose()
    stored = await shadow_rows(rt.store)
    assert len(stored) == 6 and rt.audit.shadow_written == 6 and mirror.submitted == 6
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
    assert stub.counts["cand"] == 6 and stub.counts["primary"] == 6
    report = await shadow_report(rt.store, "support")
    assert len(report) == 1
    line = report[0]
    assert line.count == 6 and line.text_agreement == 1.0 and line.json_agreement == 1.0
    assert line.primary_cost == pytest.approx(5 * 0.5 + 0.25)
    assert line.candidate_error_rate == 0.0
    assert line.primary_latency_p50_ms == pytest.approx(12.0)
    assert line.primary_latency_p95_ms == pytest.approx(20.0)


async def test_disagreement_and_candidate_errors(rt: Runtime, stub: StubUpstream) -> None:
    mirror = mirror_for(rt, route("support/rules"))
    other = mirror_for(rt, route("support/broken"))
    try:
        call = chat_call("json please", response_format={"type": "json_object"})
        answer = await rt.pipeline.chat(call)
        mirror.maybe_mirror(call, facts_for(call, answer, 0.01), call.body, answer, 0.1)
        other.maybe_mirror(call, facts_for(call, answer, 0.01), call.body, answer, 0.1)
        await mirror.flush()
        await other.flush()
        assert await rt.audit.flush(timeout=30)
    finally:
        await mirror.aclose()
        await other.aclose()
    by_candidate = {r["candidate_deployment"]: r for r in await shadow_rows(rt.store)}
    differ = by_candidate["support/rules"]
    assert differ["text_match"] is False and differ["json_match"] is False
    failed = by_candidate["support/broken"]
    assert failed["candidate_error"] == "server_error" and failed["text_match"] is None
    assert other.failed == 1 and mirror.completed == 1
    report = {s.candidate: s for s in await shadow_report(rt.store)}
    assert report["support/rules"].text_agreement == 0.0
    assert report["support/rules"].json_agreement == 0.0
    assert report["support/broken"].candidate_error_rate == 1.0
    assert report["support/broken"].text_agreement is None


async def test_saturated_mirror_drops_and_never_blocks(rt_sqlite: Runtime,
                                                       stub: StubUpstream) -> None:
    mirror = mirror_for(rt_sqlite, route("support/slow"), concurrency=1, max_pending=2)
    answer = Completion({"choices": [{"message": {"role": "assistant", "content": "x"}}]})
    try:
        for i in range(10):
            call = chat_call(str(i))
            # synchronous: returns at once
            mirror.maybe_mirror(call, facts_for(call, answer, 0.001), call.body, answer, 0.0)
        assert (mirror.mirrored, mirror.dropped) == (2, 8)
    finally:
        await mirror.aclose(timeout=0.2)
    assert mirror.abandoned == 2  # one in flight (cut short), one still queued
    late = chat_call("late")
    mirror.maybe_mirror(late, facts_for(late, answer, 0.001), late.body, answer, 0.0)
    assert mirror.dropped == 9  # closed: dropped, not queued


async def test_percent_sampling_and_unmirrored_models(rt_sqlite: Runtime) -> None:
    answer = Completion({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
    half = mirror_for(rt_sqlite, route("support/ok", percent=50), rng=random.Random(7))
    never = mirror_for(rt_sqlite, route("support/ok", percent=0))
    for i in range(200):
        call = chat_call(str(i))
        half.maybe_mirror(call, facts_for(call, answer, 0.001), call.body, answer, 0.0)
        never.maybe_mirror(call, facts_for(call, answer, 0.001), call.body, answer, 0.0)
        other = chat_call(str(i))
        other.model = "other-model"
        half.maybe_mirror(other, facts_for(other, answer, 0.001), other.body, answer, 0.0)
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


async def test_build_mirror_resolves_candidates() -> None:
    deps = [
        rules_deployment("support", id="support/main"),
        rules_deployment("support-next", pricing=PRICE),
        rules_deployment("support-next", id="next-b"),
        ModelDeployment(name="vectors", provider="openai", base_url="http://127.0.0.1:9/v1",
                        model="e", mode="embeddings"),
    ]
    pipeline = SimpleNamespace(chat=None)  # never called: nothing is sampled here

    def runtime(*routes: ShadowConfig) -> Any:
        config = SimpleNamespace(models=deps, shadow=ShadowSettings(routes=list(routes)))
        return SimpleNamespace(config=config, pipeline=pipeline, audit=None)

    assert build_mirror(SimpleNamespace(config=SimpleNamespace(shadow=None))) is None  # type: ignore[arg-type]
    by_name = build_mirror(runtime(ShadowConfig(model="support", candidate="support-next",
                                                percent=5)))
    by_id = build_mirror(runtime(ShadowConfig(model="support", candidate="next-b",
                                              percent=5, timeout=3)))
    assert by_name is not None and by_id is not None
    try:
        assert by_name.routes["support"].candidate_id == deps[1].deployment_id
        assert by_name.routes["support"].price(1, 1) == 3.0
        assert by_id.routes["support"].candidate_id == "next-b"
        assert by_id.routes["support"].price(1, 1) == 0.0
        assert by_id.routes["support"].timeout == 3
    finally:
        await by_name.aclose()
        await by_id.aclose()
    with pytest.raises(ValueError, match="neither a deployment id nor a model"):
        build_mirror(runtime(ShadowConfig(model="support", candidate="nope", percent=1)))
    with pytest.raises(ValueError, match="unknown model"):
        build_mirror(runtime(ShadowConfig(model="ghost", candidate="next-b", percent=1)))
    with pytest.raises(ValueError, match="not a chat deployment"):
        build_mirror(runtime(ShadowConfig(model="support", candidate="vectors", percent=1)))
