"""Canary stage: the verdict, observation through the pipeline, rollback, shared marks, restore.

Two :class:`CanaryControl` objects sharing one stats store stand for two gateways; the
Redis-backed store is checked against the same scenario on the real Redis server.
The two-real-gateways acceptance test is tests/multi/test_multi_canary.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest

from lockgate.errors import ConfigError
from lockgate.governance.canary_stats import (
    CanaryStats,
    MemoryCanaryStats,
    RedisCanaryStats,
    Tally,
    latency_bucket,
)
from lockgate.metrics import Metrics
from lockgate.pipeline import Completion
from lockgate.pipeline.canary import CanaryControl, build_canary, canary_groups, verdict
from lockgate.pipeline.routing import Router, Target
from lockgate.providers.base import ProviderError, Usage
from lockgate.settings import CanarySpec, ModelDeployment, parse_config
from lockgate.state.redis_state import RedisState
from tests.pipeline.fakes import FakeProvider, ListSink, answer, build_pipeline, chat_call


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Flaky(FakeProvider):
    """Fails every call with a 500 (``fail=True``) or answers after ``delay`` seconds."""

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        super().__init__("ok")
        self.fail = fail
        self.delay = delay

    async def chat(self, body: dict[str, Any]) -> Completion:
        self.bodies.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise ProviderError("server_error", "boom", upstream_status=500)
        return Completion(answer("ok"), Usage(3, 2))


def dep(dep_id: str, *, canary: CanarySpec | None = None, weight: float = 1.0) -> ModelDeployment:
    return ModelDeployment(name="chat", provider="openai", base_url="http://x/v1", model=dep_id,
                           id=dep_id, weight=weight, max_retries=0, canary=canary)


SPEC = CanarySpec(max_error_rate_margin=0.1, window_seconds=60, min_samples=10, check_seconds=1)


def tally(calls: int, errors: int, latency_s: float = 0.05) -> Tally:
    t = Tally()
    for i in range(calls):
        t.add_call(i >= errors, latency_s)
    return t


# ------------------------------------------------------------------ verdict


def test_verdict_needs_min_samples_on_both_sides() -> None:
    assert verdict(SPEC, tally(9, 9), tally(100, 0)) is None
    assert verdict(SPEC, tally(10, 9), tally(9, 0)) is None
    assert verdict(SPEC, tally(10, 9), tally(10, 0)) is not None


def test_verdict_error_rate_margin_is_absolute() -> None:
    assert verdict(SPEC, tally(100, 15), tally(100, 5)) is None  # exactly the margin
    assert verdict(SPEC, tally(100, 16), tally(100, 5)) is not None
    assert verdict(SPEC, tally(100, 50), tally(100, 45)) is None  # both bad: not the canary's fault


def test_verdict_p95_margin() -> None:
    spec = SPEC.model_copy(update={"max_p95_margin_ms": 100.0})
    assert verdict(spec, tally(50, 0, 0.120), tally(50, 0, 0.100)) is None
    reason = verdict(spec, tally(50, 0, 0.400), tally(50, 0, 0.100))
    assert reason is not None and "p95" in reason
    # latency not compared without a margin
    assert verdict(SPEC, tally(50, 0, 0.400), tally(50, 0, 0.100)) is None


def test_p95_from_the_histogram_is_within_ten_percent() -> None:
    t = Tally()
    for ms in range(1, 1001):  # 1..1000 ms uniformly: true p95 = 950 ms
        t.add_call(True, ms / 1000)
    p95 = t.p95_ms()
    assert p95 is not None and 950 <= p95 <= 950 * 1.1
    assert latency_bucket(0.0005) == 0


# ------------------------------------------------------------------ config


def test_config_needs_a_stable_deployment_and_an_own_id() -> None:
    base = """
models:
  - {name: chat, provider: openai, base_url: "http://x/v1", model: a, id: a%s}
  - {name: chat, provider: openai, base_url: "http://x/v1", model: b, id: %s,
     canary: {window_seconds: 30}}
"""
    cfg = parse_config(base % ("", "b"))
    groups = canary_groups(cfg.models)
    assert [(g.model, list(g.canaries), g.stable) for g in groups] == [("chat", ["b"], ("a",))]
    with pytest.raises(ConfigError, match="needs an 'id' different"):
        parse_config(base % ("", "a"))
    with pytest.raises(ConfigError, match="needs a stable"):
        parse_config("""
models:
  - {name: chat, provider: openai, base_url: "http://x/v1", model: b, id: b, canary: {}}
""")


# ------------------------------------------------------------------ through the pipeline


def canary_setup(stats: CanaryStats, clock: Clock, *, canary: FakeProvider,
                 stable: FakeProvider, spec: CanarySpec = SPEC, weights: tuple[float, float]
                 = (1.0, 1.0)) -> tuple[Any, CanaryControl, ListSink, Metrics]:
    models = [dep("stable", weight=weights[0]), dep("canary", canary=spec, weight=weights[1])]
    targets = {"chat": [Target(models[0], stable), Target(models[1], canary)]}  # type: ignore[arg-type]
    pipe, sink, metrics = build_pipeline(targets)
    control = build_canary(models, targets, stats, pipe.router, sink=sink, metrics=metrics)
    assert control is not None
    control.clock = clock
    return pipe, control, sink, metrics


async def drive(pipe: Any, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        result = await pipe.chat(chat_call("chat"))
        seen[result.facts.deployment] += 1
    return seen


async def test_a_failing_canary_is_rolled_back_with_an_audit_row_and_metric() -> None:
    clock = Clock()
    bad, good = Flaky(fail=True), Flaky()
    pipe, control, sink, metrics = canary_setup(MemoryCanaryStats(), clock, canary=bad,
                                                stable=good)
    alerts: list[dict[str, Any]] = []

    async def hook(doc: dict[str, Any]) -> None:
        alerts.append(doc)

    control.on_rollback.append(hook)
    seen = await drive(pipe, 60)
    assert seen == {"stable": 60}  # canary failures fell back to the stable deployment
    assert bad.calls > 10
    made = await control.check()
    assert [d["deployment"] for d in made] == ["canary"]
    await asyncio.sleep(0)  # the alert hook runs in the background
    assert alerts and alerts[0]["deployment"] == "canary"
    assert pipe.router.disabled == {"canary"}
    rows = [r for r in sink.records if r.kind == "canary_rollback"]
    assert len(rows) == 1 and rows[0].deployment == "canary" and rows[0].source == "control"
    assert metrics.registry.get_sample_value("lockgate_canary_rollbacks_total",
                                             {"deployment": "canary"}) == 1
    assert metrics.registry.get_sample_value("lockgate_canary_state",
                                             {"deployment": "canary"}) == 1
    calls_before = bad.calls
    await drive(pipe, 30)
    assert bad.calls == calls_before  # not even as a fallback
    snap = control.snapshot()["canaries"]["canary"]
    assert snap["state"] == "rolled_back" and snap["rollback"]["canary"]["error_rate"] == 1.0
    # a second check does not roll it back twice
    assert await control.check() == []
    assert len([r for r in sink.records if r.kind == "canary_rollback"]) == 1


async def test_a_healthy_canary_keeps_its_share() -> None:
    clock = Clock()
    canary, stable = Flaky(), Flaky()
    pipe, control, sink, _ = canary_setup(MemoryCanaryStats(), clock, canary=canary,
                                          stable=stable)
    await drive(pipe, 80)
    assert await control.check() == []
    assert pipe.router.disabled == frozenset()
    assert canary.calls > 20 and stable.calls > 20
    window = control.snapshot()["canaries"]["canary"]["window"]
    assert window["canary"]["calls"] + window["stable"]["calls"] == 80
    assert not [r for r in sink.records if r.kind == "canary_rollback"]


async def test_a_slow_canary_is_rolled_back_on_p95() -> None:
    clock = Clock()
    spec = SPEC.model_copy(update={"max_p95_margin_ms": 20.0, "min_samples": 5})
    pipe, control, _, _ = canary_setup(MemoryCanaryStats(), clock, canary=Flaky(delay=0.06),
                                       stable=Flaky(), spec=spec)
    await drive(pipe, 30)
    made = await control.check()
    assert made and "p95" in made[0]["reason"]


async def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    bad = Flaky(fail=True)
    pipe, control, _, _ = canary_setup(MemoryCanaryStats(), clock, canary=bad, stable=Flaky())
    await drive(pipe, 40)
    clock.t += SPEC.window_seconds * 2  # the failures are older than the window now
    bad.fail = False
    await drive(pipe, 40)
    assert await control.check() == []


async def _two_gateways(stats_a: CanaryStats, stats_b: CanaryStats
                        ) -> tuple[list[Any], list[CanaryControl], list[ListSink], list[Flaky]]:
    clock = Clock()
    pipes, controls, sinks, bads = [], [], [], []
    for stats in (stats_a, stats_b):
        bad = Flaky(fail=True)
        # canary first (weight 1, stable 0): every call tries the canary, then falls back
        pipe, control, sink, _ = canary_setup(stats, clock, canary=bad, stable=Flaky(),
                                              weights=(0.0, 1.0))
        pipes.append(pipe)
        controls.append(control)
        sinks.append(sink)
        bads.append(bad)
    return pipes, controls, sinks, bads


async def check_shared_window(stats_a: CanaryStats, stats_b: CanaryStats) -> None:
    pipes, controls, sinks, bads = await _two_gateways(stats_a, stats_b)
    # 6 failing canary calls per gateway: below min_samples (10) on each, above together
    await drive(pipes[0], 6)
    assert await controls[0].check() == []
    await drive(pipes[1], 6)
    made_b = await controls[1].check()
    made_a = await controls[0].check()
    assert len(made_a) + len(made_b) == 1  # one gateway made the rollback
    assert made_b  # B saw 12 >= 10 first
    for p in pipes:
        assert p.router.disabled == {"canary"}
    assert sum(1 for s in sinks for r in s.records if r.kind == "canary_rollback") == 1
    # restore through A: B routes to the canary again after its next check
    assert await controls[0].restore("canary", by="test")
    await controls[1].check()
    assert pipes[1].router.disabled == frozenset()
    before = bads[1].calls
    await drive(pipes[1], 3)
    assert bads[1].calls == before + 3
    assert any(r.kind == "canary_restore" for r in sinks[0].records)


async def test_two_gateways_share_the_window_in_memory() -> None:
    shared = MemoryCanaryStats()
    await check_shared_window(shared, shared)


@pytest.mark.redis
async def test_two_gateways_share_the_window_through_redis() -> None:
    prefix = f"lgtest:canary:{uuid.uuid4().hex[:10]}:"
    a, b = RedisState(prefix=prefix), RedisState(prefix=prefix)
    try:
        await check_shared_window(RedisCanaryStats(a), RedisCanaryStats(b))
    finally:
        keys = [k async for k in a.client.scan_iter(match=prefix + "*")]
        if keys:
            await a.client.delete(*keys)
        await a.close()
        await b.close()


async def test_an_unreachable_store_keeps_the_canary_serving_and_counts() -> None:
    clock = Clock()
    dead = RedisState("redis://127.0.0.1:9/0", timeout=0.05)
    try:
        pipe, control, _, _ = canary_setup(RedisCanaryStats(dead), clock,
                                           canary=Flaky(fail=True), stable=Flaky())
        await drive(pipe, 30)
        assert await control.check() == []
        assert control.state_errors >= 1
        assert control.snapshot()["canaries"]["canary"]["state"] == "serving"
    finally:
        await dead.close()


def test_router_disable_keeps_pinned_calls_and_never_empties_a_model() -> None:
    s, c = Target(dep("stable"), FakeProvider()), Target(dep("canary"), FakeProvider())  # type: ignore[arg-type]
    router = Router({"chat": [s, c]})
    router.disable({"canary"})
    assert {router.plan("chat")[0].id for _ in range(50)} == {"stable"}
    assert [t.id for t in router.pinned("canary")] == ["canary"]
    router.disable({"canary", "stable"})
    assert len(router.plan("chat")) == 2
    router.disable(())
    assert len(router.plan("chat")) == 2


async def test_memory_store_keeps_only_the_window() -> None:
    clock = Clock()
    pipe, control, _, _ = canary_setup(MemoryCanaryStats(), clock, canary=Flaky(),
                                       stable=Flaky())
    for _ in range(50):  # 50 checks, each a bucket width (window/10) apart
        await drive(pipe, 2)
        await control.check()
        clock.t += SPEC.window_seconds / 10
    stats = control.stats
    assert isinstance(stats, MemoryCanaryStats)
    assert len(stats._buckets) <= 2 * 12  # two deployments, about one window each
