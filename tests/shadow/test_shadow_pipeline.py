"""Shadow calls take the one path: audited as ``shadow``, breaker and retries of the candidate,
no limits or budget, never able to hurt the primary answer, rows through the shared writer."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.shadow.conftest import (
    TIGHT,
    chat_call,
    facts_for,
    mirror_for,
    route,
    runtime_config,
    shadow_rows,
)

from lockgate.errors import GatewayError
from lockgate.governance import Scope
from lockgate.pipeline.call import Call, Principal
from lockgate.providers.base import Completion
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.shadow import ShadowMirror, shadow_request_id
from lockgate.store import Store
from lockgate.store.tables import shadow_results
from lockgate.testing.stub_upstream import StubUpstream


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def fresh_caller() -> Principal:
    """A caller of its own (the PostgreSQL database is shared by the tests of this module)."""
    tag = uuid.uuid4().hex[:8]
    return Principal(key_id=f"key-{tag}", team_id=f"team-{tag}", team_name=f"team-{tag}")


async def settle(rt: Runtime, mirror: ShadowMirror) -> None:
    await mirror.flush()
    assert await rt.audit.flush(timeout=30)


async def usage(store: Store, *request_ids: str) -> dict[str, Any]:
    wanted = set(request_ids)
    return {r.request_id: r for r in await store.recent_usage(10_000) if r.request_id in wanted}


async def test_shadow_call_is_audited_as_shadow_with_the_candidate_deployment(
    rt: Runtime, stub: StubUpstream
) -> None:
    mirror = mirror_for(rt, route("support/cand"))
    rt.pipeline.controls.mirror = mirror  # the pipeline samples by itself
    caller = fresh_caller()
    call = chat_call("audit me", principal=caller)
    answer = await rt.pipeline.chat(call)
    assert answer.body["choices"][0]["message"]["content"] == "stub reply: audit me"
    await settle(rt, mirror)
    shadow_id = shadow_request_id(call.request_id, "support/cand")
    rows = await usage(rt.store, call.request_id, shadow_id)
    primary, shadow = rows[call.request_id], rows[shadow_id]
    assert (primary.source, primary.deployment) == ("http", "support/primary")
    assert (shadow.source, shadow.deployment, shadow.status) == ("shadow", "support/cand", 200)
    assert (shadow.key_id, shadow.team_id, shadow.model) == (caller.key_id, caller.team_id,
                                                             "support")
    assert (shadow.prompt_tokens, shadow.completion_tokens) == (2, 4)
    assert shadow.cost == pytest.approx(2 * 1 + 4 * 2) == primary.cost
    # the cache is on and holds the primary's answer for this very body: the shadow call
    # neither read it (the candidate was called) nor was mirrored again (one sample)
    assert stub.counts["cand"] == 1 and mirror.mirrored == 1
    (stored,) = [r for r in await shadow_rows(rt.store) if r["request_id"] == call.request_id]
    assert stored["candidate_deployment"] == "support/cand" and stored["text_match"] is True
    assert stored["candidate_cost"] == pytest.approx(shadow.cost)
    # visible in usage reports, but not billed to the caller
    (line,) = await rt.store.usage_summary(key_id=caller.key_id, group_by=["key", "model"])
    assert (line["requests"], line["shadow_requests"]) == (1, 1)
    assert line["cost"] == pytest.approx(primary.cost)
    assert line["shadow_cost"] == pytest.approx(shadow.cost)


async def test_shadow_calls_are_not_limited_nor_charged(rt: Runtime, stub: StubUpstream) -> None:
    """tight-team may make one call a minute: the shadow of that call still goes through."""
    mirror = mirror_for(rt, route("support/cand"))
    rt.pipeline.controls.mirror = mirror
    governor = rt.governor
    assert governor is not None
    call = chat_call("hello there", principal=TIGHT, max_tokens=20)
    await rt.pipeline.chat(call)
    await settle(rt, mirror)
    (row,) = await shadow_rows(rt.store)
    assert row["candidate_error"] is None and row["text_match"] is True
    assert stub.counts["cand"] == 1
    await until(lambda: governor.stats.settles >= 1)
    assert (governor.stats.admitted, governor.stats.limit_hits) == (1, 0)
    team = rt.config.teams["tight-team"]
    (budget,) = await governor.budgets.status(Scope("team", "team-tight", team.limits,
                                                    team.budget))
    assert (budget.spent, budget.reserved) == (6, 0)  # the primary's 2 + 4 tokens only
    shadow = (await usage(rt.store, shadow_request_id(call.request_id, "support/cand")))
    assert next(iter(shadow.values())).team_id == "team-tight"
    # the caller's own second call in the minute is limited: the limits are really on
    with pytest.raises(GatewayError) as err:
        await rt.pipeline.chat(chat_call("again", principal=TIGHT, max_tokens=20))
    assert err.value.status == 429
    assert mirror.mirrored == 1


async def test_candidate_retries_apply(rt: Runtime, stub: StubUpstream) -> None:
    mirror = mirror_for(rt, route("support/flaky"))
    call = chat_call("retry me")
    answer = await rt.pipeline.chat(call)
    mirror.maybe_mirror(call, facts_for(call, answer, 0.01), call.body, answer, 0.0)
    await settle(rt, mirror)
    await mirror.aclose()
    (row,) = await shadow_rows(rt.store)
    assert row["candidate_error"] is None and row["candidate_text"] == "stub reply: retry me"
    assert stub.counts["flaky:1"] == 2  # a 500, then the retry answered
    shadow_id = shadow_request_id(call.request_id, "support/flaky")
    audited = (await usage(rt.store, shadow_id))[shadow_id]
    assert (audited.status, audited.deployment, audited.source) == (200, "support/flaky",
                                                                    "shadow")


async def test_candidate_breaker_trips_and_is_obeyed(rt: Runtime, stub: StubUpstream) -> None:
    breaker = rt.pipeline.controls.breaker
    assert breaker is not None
    mirror = mirror_for(rt, route("support/broken"), concurrency=1)
    answer = Completion({"choices": [{"message": {"role": "assistant", "content": "x"}}]})
    calls = [chat_call(f"q{i}") for i in range(10)]
    for call in calls:
        mirror.maybe_mirror(call, facts_for(call, answer, 0.01), call.body, answer, 0.0)
    await settle(rt, mirror)
    await mirror.aclose()
    errors = [r["candidate_error"] for r in await shadow_rows(rt.store)]
    upstream = stub.counts["error-500"]
    assert len(errors) == 10 and errors.count("server_error") == upstream
    assert 2 <= upstream < 10  # the breaker opened after the failures and held the rest back
    assert errors.count("circuit_open") == 10 - upstream and breaker.rejected >= 1
    assert breaker.last_state("support/broken") == "open"
    ids = [shadow_request_id(c.request_id, "support/broken") for c in calls]
    audited = await usage(rt.store, *ids)
    assert len(audited) == 10 and {r.source for r in audited.values()} == {"shadow"}
    assert sorted({r.error_class for r in audited.values()}) == ["circuit_open",
                                                                 "upstream_error"]


async def test_candidate_failures_never_touch_the_primary(rt: Runtime,
                                                          stub: StubUpstream) -> None:
    slow = mirror_for(rt, route("support/slow", timeout=0.3))
    rt.pipeline.controls.mirror = slow
    started = time.perf_counter()
    call = chat_call("are you there")
    answer = await rt.pipeline.chat(call)
    assert time.perf_counter() - started < 2.5  # the candidate stalls 3 s: not waited for
    assert answer.body["choices"][0]["message"]["content"] == "stub reply: are you there"
    await settle(rt, slow)
    (row,) = await shadow_rows(rt.store)
    assert row["candidate_error"] == "timeout_total" and row["candidate_text"] is None
    assert row["candidate_latency_ms"] < 2500
    shadow_id = shadow_request_id(call.request_id, "support/slow")
    assert (await usage(rt.store, shadow_id))[shadow_id].status >= 400

    broken = mirror_for(rt, route("support/broken"))
    rt.pipeline.controls.mirror = broken
    answer = await rt.pipeline.chat(chat_call("still fine"))
    assert answer.body["choices"][0]["message"]["content"] == "stub reply: still fine"
    await settle(rt, broken)
    await broken.aclose()
    assert broken.failed == 1

    class Exploding:
        def maybe_mirror(self, *args: Any) -> None:
            raise RuntimeError("mirror bug")

        async def aclose(self) -> None:
            return None

    rt.pipeline.controls.mirror = Exploding()
    answer = await rt.pipeline.chat(chat_call("and now"))
    assert answer.body["choices"][0]["message"]["content"] == "stub reply: and now"
    await slow.aclose()


async def test_rows_go_through_the_shared_writer_and_drain_on_close(
    stub: StubUpstream, database_url: str, tmp_path: Path
) -> None:
    """Configured like production (``shadow:`` in lockgate.yaml); close drains everything."""
    text = runtime_config(stub.base_url, tmp_path / "home", database_url) + """
shadow:
  concurrency: 2
  routes:
    - {model: support, candidate: support-next, percent: 100}
"""
    rt = await Runtime.start(parse_config(text))
    async with rt.store.engine.begin() as conn:
        await conn.execute(shadow_results.delete())
    mirror = rt.pipeline.controls.mirror
    assert isinstance(mirror, ShadowMirror)
    tasks = {t.get_name() for t in asyncio.all_tasks()}
    assert "lockgate-audit-writer" in tasks and "lockgate-shadow-writer" not in tasks
    calls: list[Call] = [chat_call(f"drain {i}") for i in range(5)]
    for call in calls:
        await rt.pipeline.chat(call)
    assert mirror.mirrored == 5
    await rt.aclose()  # no flush: closing finishes the samples and drains the one writer
    assert (mirror.abandoned, mirror.submitted, rt.audit.shadow_written) == (0, 5, 5)
    assert rt.audit.pending == 0 and rt.audit.lost == 0
    store = await Store.open(database_url)
    try:
        rows = await shadow_rows(store)
        assert sorted(r["request_id"] for r in rows) == sorted(c.request_id for c in calls)
        ids = [c.request_id for c in calls]
        ids += [shadow_request_id(c.request_id, "support/cand") for c in calls]
        audited = await usage(store, *ids)
        assert len(audited) == 10
        assert sorted(r.source for r in audited.values()) == ["http"] * 5 + ["shadow"] * 5
    finally:
        await store.close()


async def test_a_shadow_sample_is_never_mirrored_again(rt_sqlite: Runtime) -> None:
    rt = rt_sqlite
    mirror = mirror_for(rt, route("support/ok"))
    answer = Completion({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
    pinned = chat_call("x")
    pinned.source = "shadow"
    mirror.maybe_mirror(pinned, facts_for(pinned, answer, 0.0), pinned.body, answer, 0.0)
    assert mirror.mirrored == 0
    rt.pipeline.controls.mirror = mirror
    direct = chat_call("y")
    direct.deployment_pin = "support/ok"  # pinned calls are not sampled by the pipeline
    res = await rt.pipeline.chat(direct)
    assert res.facts is not None and res.facts.deployment == "support/ok"
    assert mirror.mirrored == 0
    unknown = chat_call("z")
    unknown.deployment_pin = "nope"
    with pytest.raises(GatewayError) as err:
        await rt.pipeline.chat(unknown)
    assert err.value.status == 404 and err.value.code == "deployment_not_found"
