"""Resilient call: retries, fallback to the next deployment, error mapping, the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from lockgate.errors import BadRequest, RateLimited, Unavailable, UpstreamFailed
from lockgate.governance import CircuitBreaker
from lockgate.pipeline import resilience
from lockgate.pipeline.resilience import Attempts, call_with_fallback, prime_stream
from lockgate.pipeline.routing import Target
from lockgate.providers.base import Completion, ProviderError
from lockgate.settings.governance import BreakerConfig
from lockgate.state import MemoryState
from lockgate.state.base import BreakerParams, BreakerView
from tests.pipeline.fakes import FakeProvider, deployment, target


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(resilience, "backoff_delay", lambda attempt, retry_after: 0.0)
    yield


def err(kind: str, **kw: object) -> ProviderError:
    return ProviderError(kind, f"fake {kind}", **kw)  # type: ignore[arg-type]


async def run(t: Target) -> Completion:
    return await t.provider.chat({"messages": []})


def text(c: Completion) -> str:
    return str(c.body["choices"][0]["message"]["content"])


async def drain() -> None:
    """Let the background breaker records run."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_retries_the_same_deployment_then_falls_back() -> None:
    first = FakeProvider("first", errors=[err("server_error")] * 3)
    second = FakeProvider("second")
    plan = [target(deployment("m", "a", max_retries=2, dep_id="a"), first),
            target(deployment("m", "b", dep_id="b"), second)]
    attempts = Attempts()
    seen: list[tuple[str, str]] = []
    result = await call_with_fallback(plan, run, attempts,
                                      on_error=lambda t, e: seen.append((t.id, e.kind)))
    assert text(result) == "second"
    assert (first.calls, second.calls) == (3, 1)  # 1 try + 2 retries, then the fallback
    assert attempts.tries == 4 and attempts.deployment is not None
    assert attempts.deployment.id == "b"
    assert seen == [("a", "server_error")] * 3


async def test_a_retry_that_succeeds_needs_no_fallback() -> None:
    first = FakeProvider("first", errors=[err("rate_limited")])
    second = FakeProvider("second")
    plan = [target(deployment("m", "a", max_retries=1, dep_id="a"), first),
            target(deployment("m", "b", dep_id="b"), second)]
    result = await call_with_fallback(plan, run, Attempts())
    assert text(result) == "first" and second.calls == 0


async def test_non_retryable_failures_go_straight_to_the_next_deployment() -> None:
    first = FakeProvider("first", errors=[err("auth", upstream_status=401)])
    second = FakeProvider("second")
    plan = [target(deployment("m", "a", max_retries=3, dep_id="a"), first),
            target(deployment("m", "b", dep_id="b"), second)]
    assert text(await call_with_fallback(plan, run, Attempts())) == "second"
    assert first.calls == 1


async def test_a_bad_request_is_the_clients_fault_and_stops_at_once() -> None:
    first = FakeProvider("first", errors=[err("bad_request", upstream_status=400)])
    second = FakeProvider("second")
    plan = [target(deployment("m", "a", max_retries=3, dep_id="a"), first),
            target(deployment("m", "b", dep_id="b"), second)]
    with pytest.raises(BadRequest):
        await call_with_fallback(plan, run, Attempts())
    assert (first.calls, second.calls) == (1, 0)


async def test_the_last_failure_is_mapped_for_the_client() -> None:
    plan = [target(deployment("m", "a", dep_id="a"), FakeProvider(errors=[err("server_error")])),
            target(deployment("m", "b", dep_id="b"),
                   FakeProvider(errors=[err("rate_limited", retry_after=2.5)]))]
    with pytest.raises(RateLimited) as exc:
        await call_with_fallback(plan, run, Attempts())
    assert exc.value.headers == {"retry-after": "3"}
    assert "b" in str(exc.value) and exc.value.upstream_kind == "rate_limited"
    plan = [target(deployment("m", "a", dep_id="a"), FakeProvider(errors=[err("connection")]))]
    with pytest.raises(UpstreamFailed):
        await call_with_fallback(plan, run, Attempts())


async def test_the_breaker_opens_and_then_skips_the_deployment() -> None:
    breaker = CircuitBreaker(MemoryState(), BreakerConfig(min_requests=2, failure_rate=0.5,
                                                          open_seconds=60))
    failing = FakeProvider("bad", errors=[err("server_error")] * 10)
    healthy = FakeProvider("good")
    plan = [target(deployment("m", "a", dep_id="a"), failing),
            target(deployment("m", "b", dep_id="b"), healthy)]
    for _ in range(2):
        assert text(await call_with_fallback(plan, run, Attempts(), breaker=breaker)) == "good"
        await drain()
    assert failing.calls == 2
    assert (await breaker.view("a")).state == "open"
    attempts = Attempts()
    assert text(await call_with_fallback(plan, run, attempts, breaker=breaker)) == "good"
    assert failing.calls == 2  # skipped, not called
    assert attempts.skipped == 1 and attempts.tries == 1
    # when every deployment is open, the call fails fast with 503 circuit_open
    with pytest.raises(Unavailable) as exc:
        await call_with_fallback(plan[:1], run, Attempts(), breaker=breaker)
    assert exc.value.error_class == "circuit_open" and "retry-after" in exc.value.headers


async def test_prime_stream_waits_for_the_first_chunk_and_replays_it() -> None:
    provider = FakeProvider("alpha beta")
    primed = await prime_stream(target(deployment("m"), provider), {"messages": []})
    parts = [c["choices"][0]["delta"]["content"] async for c in primed]
    assert parts == ["alpha", "beta"]
    empty = FakeProvider("")
    with pytest.raises(ProviderError) as exc:
        await prime_stream(target(deployment("m"), empty), {"messages": []})
    assert exc.value.kind == "stream_cut"


class SlowRecordState(MemoryState):
    """Shared state whose record takes a while (a Redis round-trip)."""

    in_process = False

    async def breaker_record(self, deployment: str, params: BreakerParams, *, ok: bool,
                             now: float, probe_id: str | None = None) -> BreakerView:
        await asyncio.sleep(0.05)
        return await super().breaker_record(deployment, params, ok=ok, now=now,
                                            probe_id=probe_id)


async def success_count(breaker: CircuitBreaker, dep: str) -> int:
    state = breaker.state
    assert isinstance(state, MemoryState)
    return sum(cell[0] for cell in state._breaker(dep).buckets.values())


async def test_the_success_record_is_inline_on_the_in_process_state() -> None:
    breaker = CircuitBreaker(MemoryState(), BreakerConfig())
    plan = [target(deployment("m", "a", dep_id="a"), FakeProvider("ok"))]
    await call_with_fallback(plan, run, Attempts(), breaker=breaker)
    assert await success_count(breaker, "a") == 1  # recorded before the call returned


async def test_the_success_record_stays_off_the_request_path_on_shared_state() -> None:
    breaker = CircuitBreaker(SlowRecordState(), BreakerConfig())
    plan = [target(deployment("m", "a", dep_id="a"), FakeProvider("ok"))]
    await call_with_fallback(plan, run, Attempts(), breaker=breaker)
    assert await success_count(breaker, "a") == 0  # returned without waiting for the record
    await asyncio.sleep(0.1)
    assert await success_count(breaker, "a") == 1
