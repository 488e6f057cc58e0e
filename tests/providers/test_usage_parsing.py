"""Upstream ``usage`` is checked, never trusted: junk is ``ProviderError('bad_response')``.

Unit checks of the parser, then both HTTP providers against the stand-in upstream's
``usage-KIND`` and ``bad-choices`` behaviours (non-stream and stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from lockgate.providers.anthropic import AnthropicProvider
from lockgate.providers.base import MAX_TOKEN_COUNT, ProviderError, Usage, check_usage
from lockgate.providers.openai_compat import OpenAICompatProvider
from lockgate.settings import ModelDeployment
from lockgate.testing.stub_upstream import USAGE_JUNK, StubUpstream, junk_usage, parse_behaviour

BODY: dict[str, Any] = {"model": "x", "max_tokens": 20,
                        "messages": [{"role": "user", "content": "hello there"}]}


def test_plausible_usage_is_read() -> None:
    assert Usage.from_openai(None) == Usage()
    assert Usage.from_openai({}) == Usage()
    assert Usage.from_openai({"prompt_tokens": 3, "completion_tokens": None}) == Usage(3, 0)
    assert Usage.from_openai({"prompt_tokens": 3.0, "completion_tokens": 2}) == Usage(3, 2)
    assert Usage.from_openai({"prompt_tokens": MAX_TOKEN_COUNT}).prompt_tokens == MAX_TOKEN_COUNT


@pytest.mark.parametrize(("usage", "says"), [
    ("lots", "usage is not an object"),
    ([1, 2], "usage is not an object"),
    (7, "usage is not an object"),
    ({"prompt_tokens": "12"}, "usage.prompt_tokens is not a number"),
    ({"completion_tokens": True}, "usage.completion_tokens is not a number"),
    ({"prompt_tokens": -1}, "usage.prompt_tokens is negative"),
    ({"prompt_tokens": 2.5}, "not a whole number"),
    ({"prompt_tokens": float("nan")}, "not a whole number"),
    ({"completion_tokens": MAX_TOKEN_COUNT + 1}, "implausibly large"),
    ({"total_tokens": {"a": 1}}, "usage.total_tokens is not a number"),
])
def test_junk_usage_is_a_bad_response(usage: Any, says: str) -> None:
    with pytest.raises(ProviderError) as err:
        Usage.from_openai(usage)
    assert err.value.kind == "bad_response" and says in err.value.message
    assert len(err.value.message) < 200  # the value is shown, shortened


def test_check_usage_names_the_fields_it_reads() -> None:
    assert check_usage({"input_tokens": 4}, ("input_tokens", "output_tokens")) == {
        "input_tokens": 4, "output_tokens": 0}


def test_stub_junk_behaviours() -> None:
    for kind in USAGE_JUNK:
        assert parse_behaviour(f"usage-{kind}") == (f"usage-{kind}", 0.0)
        with pytest.raises(ProviderError):
            Usage.from_openai(junk_usage(f"usage-{kind}", {"prompt_tokens": 3,
                                                          "completion_tokens": 2}))
    assert parse_behaviour("usage-other") is None
    assert parse_behaviour("bad-choices") == ("bad-choices", 0.0)
    assert junk_usage("ok", {"a": 1}) == {"a": 1}


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


def openai_provider(stub: StubUpstream, model: str) -> OpenAICompatProvider:
    return OpenAICompatProvider(ModelDeployment(name="m", provider="openai", model=model,
                                                base_url=stub.openai_base))


def anthropic_provider(stub: StubUpstream, model: str) -> AnthropicProvider:
    return AnthropicProvider(ModelDeployment(name="c", provider="anthropic", model=model,
                                             base_url=stub.base_url))


async def _stream(p: Any) -> list[dict[str, Any]]:
    return [c async for c in p.chat_stream(BODY)]


@pytest.mark.parametrize("kind", USAGE_JUNK)
async def test_openai_provider_refuses_junk_usage(stub: StubUpstream, kind: str) -> None:
    p = openai_provider(stub, f"usage-{kind}")
    try:
        for run in (p.chat(BODY), _stream(p)):
            with pytest.raises(ProviderError) as err:
                await run
            assert err.value.kind == "bad_response" and "usage" in err.value.message
    finally:
        await p.aclose()


@pytest.mark.parametrize("kind", ["string", "bool", "huge", "list"])
async def test_anthropic_provider_refuses_junk_usage(stub: StubUpstream, kind: str) -> None:
    p = anthropic_provider(stub, f"usage-{kind}")
    try:
        for run in (p.chat(BODY), _stream(p)):
            with pytest.raises(ProviderError) as err:
                await run
            assert err.value.kind == "bad_response" and "usage" in err.value.message
    finally:
        await p.aclose()


async def test_malformed_choices_are_a_bad_response(stub: StubUpstream) -> None:
    for p in (openai_provider(stub, "bad-choices"), anthropic_provider(stub, "bad-choices")):
        try:
            with pytest.raises(ProviderError) as err:
                await _stream(p)
            assert err.value.kind == "bad_response"
        finally:
            await p.aclose()
    p = openai_provider(stub, "bad-choices")
    try:
        with pytest.raises(ProviderError) as err:
            await p.chat(BODY)
        assert "choices" in err.value.message
    finally:
        await p.aclose()
