"""The reserve part of the limits + budget stage: the reservation holds the call to it.

- the reserved completion cap goes upstream as ``max_tokens`` when the client set none;
- the prompt is counted by a provider that has its tokenizer, else bounded by bytes;
- a stream without usage settles at bounds, never below what was sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lockgate.governance import BudgetExceeded, Governor, Scope, prompt_tokens_bound
from lockgate.pipeline import Controls, Principal
from lockgate.pipeline.quotas import Limits
from lockgate.pipeline.reservation import count_prompt
from lockgate.settings import BudgetConfig, Config
from lockgate.state import MemoryState
from tests.pipeline.fakes import FakeProvider, build_pipeline, chat_call, deployment, target

MODELS = [{"name": "m", "provider": "openai", "base_url": "http://x/v1", "model": "m"}]


class CountingProvider(FakeProvider):
    """A provider with its model's tokenizer: every prompt is ``n`` tokens."""

    def __init__(self, n: int, text: str = "ok") -> None:
        super().__init__(text)
        self.n = n

    async def count_prompt_tokens(self, body: dict[str, Any]) -> int | None:
        return self.n


def setup(provider: FakeProvider, budget: dict[str, Any] | None = None,
          default_max: int = 50) -> tuple[Any, Governor, Any]:
    cfg = Config.model_validate({
        "models": MODELS, "governance": {"default_max_tokens": default_max},
        "teams": {"t1": {"budget": budget or {"daily_tokens": 1_000_000}}},
    })
    gov = Governor(MemoryState(), cfg.governance)
    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                   controls=Controls(limits=Limits(cfg, gov)))
    return pipe, gov, sink


async def _drain() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_reserved_cap_is_sent_when_the_client_gave_none() -> None:
    provider = FakeProvider()
    pipe, _, _ = setup(provider, default_max=77)
    p = Principal("k1", "t1")
    await pipe.chat(chat_call("m", principal=p))
    capped = chat_call("m", principal=p)
    capped.body["max_completion_tokens"] = 5
    await pipe.chat(capped)
    await pipe.chat(chat_call("m", principal=Principal("k9", "other-team")))  # no scope
    assert provider.bodies[0]["max_tokens"] == 77
    assert "max_tokens" not in provider.bodies[1]  # the client's own cap stands
    assert "max_tokens" not in provider.bodies[2]  # not governed: the body is untouched


async def test_the_cap_can_travel_as_max_completion_tokens() -> None:
    provider = FakeProvider()
    cfg = Config.model_validate({
        "models": MODELS,
        "governance": {"default_max_tokens": 9, "max_tokens_field": "max_completion_tokens"},
        "teams": {"t1": {"budget": {"daily_tokens": 1000}}},
    })
    pipe, _, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                controls=Controls(limits=Limits(cfg, Governor(MemoryState(),
                                                                              cfg.governance))))
    await pipe.chat(chat_call("m", principal=Principal("k1", "t1")))
    assert provider.bodies[0]["max_completion_tokens"] == 9
    assert "max_tokens" not in provider.bodies[0]


async def test_an_exact_count_is_reserved_and_budget_fits_exactly() -> None:
    """Budget = 2 x (10 prompt + 50 cap): two calls held at once fit, a third does not."""
    provider = CountingProvider(10)
    pipe, gov, _ = setup(provider, budget={"daily_tokens": 120})
    scope = [Scope("team", "t1", budget=BudgetConfig(daily_tokens=120))]
    t1 = await gov.admit(scope, tokens=60)
    del t1  # a call in flight elsewhere holds 60
    await pipe.chat(chat_call("m", principal=Principal("k1", "t1")))  # reserves exactly 60
    with pytest.raises(BudgetExceeded):
        await pipe.chat(chat_call("m", principal=Principal("k1", "t1")))


async def test_count_prompt_takes_the_largest_over_the_plan() -> None:
    body = {"messages": [{"role": "user", "content": "hello there"}]}
    exact = target(deployment("a"), CountingProvider(3))
    other = target(deployment("b"), FakeProvider())
    n = await count_prompt([exact], body, media_tokens=0)
    assert (n, n.exact) == (3, True)
    n = await count_prompt([exact, other], body, media_tokens=0)
    assert (n, n.exact) == (prompt_tokens_bound(body), False)
    big = target(deployment("c"), CountingProvider(10_000))
    assert await count_prompt([big, other], body, media_tokens=0) == 10_000


class BrokenCounter(FakeProvider):
    async def count_prompt_tokens(self, body: dict[str, Any]) -> int | None:
        raise RuntimeError("tokenizer file is gone")


async def test_a_failing_counter_falls_back_to_the_bound() -> None:
    body = {"messages": [{"role": "user", "content": "hello there"}]}
    n = await count_prompt([target(deployment("a"), BrokenCounter())], body, media_tokens=0)
    assert (n, n.exact) == (prompt_tokens_bound(body), False)
    provider = BrokenCounter()
    pipe, _, _ = setup(provider)
    await pipe.chat(chat_call("m", principal=Principal("k1", "t1")))  # the call still runs
    assert provider.calls == 1


async def test_a_stream_without_usage_settles_at_bounds() -> None:
    provider = FakeProvider("one two three")  # streams three words, reports no usage
    pipe, _, sink = setup(provider)
    call = chat_call("m", principal=Principal("k1", "t1"), text="héllo")
    stream = await pipe.chat_stream(call)
    async for _ in stream:
        pass
    await _drain()
    [rec] = sink.records
    assert rec.prompt_tokens == prompt_tokens_bound(call.body)  # what was reserved
    assert rec.completion_tokens == len(b"onetwothree")  # the bytes streamed


# ------------------------------------------------------------------ top-ups


def contract_setup(provider: FakeProvider, budget_tokens: int) -> tuple[Any, Governor, Scope]:
    from lockgate.guards import Guards
    from lockgate.settings.guards import GuardsConfig

    schema = {"type": "object", "required": ["label"],
              "properties": {"label": {"type": "string"}}}
    cfg = Config.model_validate({
        "models": MODELS, "governance": {"default_max_tokens": 50},
        "teams": {"t1": {"budget": {"daily_tokens": budget_tokens}}},
    })
    gov = Governor(MemoryState(), cfg.governance)
    controls = Controls(limits=Limits(cfg, gov),
                        guards=Guards(GuardsConfig(contracts={"triage@1": schema})))
    pipe, _, _ = build_pipeline({"m": [target(deployment("m"), provider)]}, controls=controls)
    return pipe, gov, Scope("team", "t1", budget=BudgetConfig(daily_tokens=budget_tokens))


class Sequenced(FakeProvider):
    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = list(texts)

    async def chat(self, body: dict[str, Any]) -> Any:
        from lockgate.pipeline import Completion
        from lockgate.providers.base import Usage
        from tests.pipeline.fakes import answer

        self.bodies.append(body)
        return Completion(answer(self.texts.pop(0)), Usage(3, 2))


def triage_call() -> Any:
    call = chat_call("m", principal=Principal("k1", "t1"))
    call.body["metadata"] = {"contract": "triage@1"}
    return call


async def test_a_contract_repair_is_reserved_before_it_is_sent() -> None:
    provider = Sequenced("not json", '{"label": "bug"}')
    pipe, gov, scope = contract_setup(provider, 10_000)
    await pipe.chat(triage_call())
    await _drain()
    [st] = await gov.budgets.status(scope)
    assert provider.calls == 2
    assert (st.spent, st.reserved) == (10, 0)  # both calls charged, every hold released


async def test_a_repair_the_budget_cannot_cover_is_refused_and_the_first_call_charged() -> None:
    provider = Sequenced("not json", '{"label": "bug"}')
    pipe, gov, scope = contract_setup(provider, 200)  # the call fits, call + repair do not
    with pytest.raises(BudgetExceeded):
        await pipe.chat(triage_call())
    await _drain()
    [st] = await gov.budgets.status(scope)
    assert provider.calls == 1  # the repair was never sent
    assert (st.spent, st.reserved) == (5, 0)


async def test_a_guard_that_lengthens_the_prompt_is_topped_up() -> None:
    """``a@b.co`` (6 bytes) becomes ``<EMAIL_1>`` (9): the 3 extra bytes need budget too."""
    from lockgate.guards import Guards
    from lockgate.settings.guards import GuardsConfig

    call = chat_call("m", principal=Principal("k1", "t1"), text="mail a@b.co")
    exact = prompt_tokens_bound(call.body) + 50  # the reservation before the guard ran

    def pipeline(budget: int) -> tuple[Any, FakeProvider]:
        cfg = Config.model_validate({
            "models": MODELS, "governance": {"default_max_tokens": 50},
            "teams": {"t1": {"budget": {"daily_tokens": budget}}},
        })
        provider = FakeProvider()
        controls = Controls(limits=Limits(cfg, Governor(MemoryState(), cfg.governance)),
                            guards=Guards(GuardsConfig(pii={"action": "redact_restore"})))
        pipe, _, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                    controls=controls)
        return pipe, provider

    pipe, provider = pipeline(exact)
    with pytest.raises(BudgetExceeded):
        await pipe.chat(call)
    assert provider.calls == 0
    pipe, provider = pipeline(exact + 3)
    await pipe.chat(call)
    assert provider.calls == 1 and "<EMAIL_1>" in provider.bodies[0]["messages"][0]["content"]
