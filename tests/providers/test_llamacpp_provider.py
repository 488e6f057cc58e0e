"""LlamaCppProvider behaviour that needs no model: refusals, closing, registry wiring."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from lockgate.providers.base import ProviderError
from lockgate.providers.llamacpp import LlamaCppProvider
from lockgate.providers.registry import build_provider
from lockgate.settings import ModelDeployment

DEPLOYMENT = ModelDeployment(name="local", provider="llamacpp", path="bundled:gemma-3-270m")


def test_registry_builds_the_provider_without_loading() -> None:
    provider = build_provider(DEPLOYMENT)
    assert isinstance(provider, LlamaCppProvider)
    assert provider.model_name == "gemma-3-270m"
    assert not provider.loaded


async def test_embeddings_are_refused_clearly() -> None:
    provider = LlamaCppProvider(DEPLOYMENT)
    with pytest.raises(ProviderError) as exc:
        await provider.embeddings({"model": "local", "input": "hi"})
    assert exc.value.kind == "bad_request"
    assert "does not serve embeddings" in exc.value.message
    await provider.aclose()


async def test_unsupported_requests_fail_before_the_model_loads() -> None:
    provider = LlamaCppProvider(DEPLOYMENT)
    with pytest.raises(ProviderError) as exc:
        await provider.chat({"messages": [{"role": "user", "content": "hi"}], "n": 3})
    assert exc.value.kind == "bad_request"
    stream = provider.chat_stream({"messages": []})
    with pytest.raises(ProviderError) as exc:
        await stream.__anext__()
    assert exc.value.kind == "bad_request"
    assert not provider.loaded
    assert provider.pending == 0
    await provider.aclose()


async def test_closed_provider_refuses_calls() -> None:
    provider = LlamaCppProvider(DEPLOYMENT)
    await provider.aclose()
    await provider.aclose()  # idempotent
    with pytest.raises(ProviderError) as exc:
        await provider.chat({"messages": [{"role": "user", "content": "hi"}]})
    assert exc.value.kind == "server_error"
