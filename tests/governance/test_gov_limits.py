"""Rate limits through the Governor: exact counts, headers, all-or-nothing, token correction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gov_support import Clock

from lockgate.errors import RateLimited
from lockgate.governance import Governor, RateLimiter, Scope, openai_duration
from lockgate.settings import LimitsConfig
from lockgate.state import StateBackend

T0 = datetime(2027, 3, 10, 12, 0, 0, tzinfo=UTC).timestamp()


async def test_allows_exactly_n_then_429_with_retry_after(backend: StateBackend) -> None:
    clock = Clock(T0)
    gov = Governor(backend, clock=clock)
    key = Scope("key", "k1", limits=LimitsConfig(rpm=5))
    for i in range(5):
        t = await gov.admit([key], tokens=10)
        assert t.headers["x-ratelimit-limit-requests"] == "5"
        assert t.headers["x-ratelimit-remaining-requests"] == str(4 - i)
        await t.settle(tokens=10)
    with pytest.raises(RateLimited) as info:
        await gov.admit([key], tokens=10)
    err = info.value
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.headers["retry-after"] == "12"  # 60 s / 5 requests
    assert err.headers["retry-after-ms"] == "12000"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "key k1" in err.message and "5 requests per minute" in err.message
    assert gov.stats.limit_hits == 1 and gov.stats.admitted == 5
    clock.advance(12)
    await (await gov.admit([key], tokens=10)).settle()
    with pytest.raises(RateLimited):
        await gov.admit([key], tokens=10)


async def test_all_scopes_at_once_or_none(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(T0))
    key = Scope("key", "k1", limits=LimitsConfig(rpm=100, tpm=10_000))
    team = Scope("team", "t1", limits=LimitsConfig(tpm=1_000))
    model = Scope("model", "gpt", limits=LimitsConfig(rpm=100))
    t = await gov.admit([key, team, model], tokens=600)
    assert t.headers["x-ratelimit-remaining-tokens"] == "400"  # the team's counter binds
    assert t.headers["x-ratelimit-limit-tokens"] == "1000"
    with pytest.raises(RateLimited) as info:
        await gov.admit([key, team, model], tokens=600)
    assert "team t1" in info.value.message
    # the denied call took nothing from the key or the model
    limiter = RateLimiter(backend, clock=Clock(T0))
    t2 = await limiter.check([key, model], tokens=1)
    assert t2.headers["x-ratelimit-remaining-requests"] == "98"
    assert t2.headers["x-ratelimit-remaining-tokens"] == "9399"


async def test_settle_corrects_token_estimate(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(T0))
    team = Scope("team", "t1", limits=LimitsConfig(tpm=1_000))
    t = await gov.admit([team], tokens=900)
    await t.settle(tokens=100)  # refund 800
    t = await gov.admit([team], tokens=900)
    assert t.headers["x-ratelimit-remaining-tokens"] == "0"
    await t.release()  # the call failed before the upstream: refund all 900
    t = await gov.admit([team], tokens=800)
    await t.settle(tokens=1_000)  # used more than estimated: charged
    with pytest.raises(RateLimited):
        await gov.admit([team], tokens=1)


async def test_request_larger_than_limit(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(T0))
    with pytest.raises(RateLimited) as info:
        await gov.admit([Scope("key", "k", limits=LimitsConfig(tpm=100))], tokens=101)
    assert info.value.code == "request_too_large" and "retry-after" not in info.value.headers


async def test_no_limits_no_headers(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(T0))
    t = await gov.admit([Scope("key", "k"), Scope("team", "t", limits=LimitsConfig())], tokens=5)
    assert t.headers == {}
    await t.settle()


def test_openai_duration_format() -> None:
    assert openai_duration(0.02) == "20ms"
    assert openai_duration(1.0) == "1s"
    assert openai_duration(360.0) == "6m0s"
    assert openai_duration(8.5714) == "8.572s"
    assert openai_duration(3723.0) == "1h2m3s"


async def test_ticket_reports_version_for_invalidation(backend: StateBackend) -> None:
    gov = Governor(backend, clock=Clock(T0))
    t = await gov.admit([Scope("key", "k")], tokens=1)
    assert t.version == 0
    await backend.bump_version("keys")
    assert (await gov.admit([Scope("key", "k")], tokens=1)).version == 1
