"""Exact prompt counts where the model's tokenizer is offline: the reservation equals the
``prompt_tokens`` the call reports (llama.cpp's bundled gemma-3, the embedded MiniLM)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from lockgate.providers.embedded import EmbeddedEmbeddingsProvider
from lockgate.settings import ModelDeployment

HOME = os.environ.get("LOCKGATE_TEST_MODEL_HOME", "/tmp/lockgate-llamacpp-test-home")


@pytest.fixture(scope="module")
def local() -> Iterator[Any]:
    pytest.importorskip("llama_cpp")
    from lockgate.providers.llamacpp import LlamaCppProvider

    p = LlamaCppProvider(ModelDeployment(name="local", provider="llamacpp",
                                         path="bundled:gemma-3-270m"), home=HOME)
    yield p
    asyncio.run(p.aclose())


BODIES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"messages": [{"role": "system", "content": "Answer in one word."},
                  {"role": "user", "content": "Colour of the sky?"},
                  {"role": "assistant", "content": "Blue."},
                  {"role": "user", "content": "Ünïcödé 🙂 and a b c d e f g"}]},
]


@pytest.mark.slow
@pytest.mark.parametrize("body", BODIES)
async def test_llamacpp_count_equals_reported_prompt_tokens(local: Any, body: dict[str, Any]
                                                            ) -> None:
    counted = await local.count_prompt_tokens(body)
    done = await local.chat({**body, "max_tokens": 1, "temperature": 0, "seed": 3})
    assert counted == done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens == 1  # the cap sent upstream holds the completion


async def test_llamacpp_count_is_none_for_what_it_cannot_serve(local: Any) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                      "image_url": {"url": "x"}}]}]}
    assert await local.count_prompt_tokens(body) is None  # the caller falls back to the bound


async def test_embedded_count_equals_reported_prompt_tokens() -> None:
    p = EmbeddedEmbeddingsProvider(ModelDeployment(name="emb", provider="embedded",
                                                   mode="embeddings",
                                                   path="bundled:all-minilm-l6-v2"))
    body = {"input": ["short", "a longer sentence with ünïcödé " * 3, "x " * 400]}
    counted = await p.count_prompt_tokens(body)
    done = await p.embeddings(body)
    assert counted == done.usage.prompt_tokens > 0
    assert await p.count_prompt_tokens({"input": [1, 2, 3]}) is None
