"""LlamaCppProvider end to end with the real bundled gemma-3-270m (marked slow).

The model file is assembled once into ``$LOCKGATE_TEST_MODEL_HOME`` (default
``/tmp/lockgate-llamacpp-test-home``) and reused by later runs. One provider
(one loaded model) is shared by the whole module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lockgate.providers.base import ProviderError, StreamChunk  # noqa: E402
from lockgate.providers.llamacpp import LlamaCppProvider  # noqa: E402
from lockgate.providers.llamacpp_prompt import build_prompt  # noqa: E402
from lockgate.settings import ModelDeployment, Timeouts  # noqa: E402

pytestmark = pytest.mark.slow

HOME = os.environ.get("LOCKGATE_TEST_MODEL_HOME", "/tmp/lockgate-llamacpp-test-home")

QUESTION: dict[str, Any] = {
    "model": "local",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0,
    "max_tokens": 24,
}
LONG: dict[str, Any] = {
    # Negative penalties make greedy decoding repeat "Yes" until max_tokens.
    "model": "local",
    "messages": [
        {"role": "user", "content": "Repeat the word 'yes' many times: yes yes yes yes yes yes"}
    ],
    "temperature": 0,
    "frequency_penalty": -2,
    "presence_penalty": -2,
}


@pytest.fixture(scope="module")
def provider() -> Iterator[LlamaCppProvider]:
    deployment = ModelDeployment(
        name="local", provider="llamacpp", path="bundled:gemma-3-270m", max_concurrency=2
    )
    p = LlamaCppProvider(deployment, home=HOME)
    yield p
    asyncio.run(p.aclose())


def content_of(chunks: list[StreamChunk]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )


async def test_chat_answers_with_real_token_counts(provider: LlamaCppProvider) -> None:
    await provider.warmup()
    assert provider.loaded and provider.model_path is not None
    assert provider.model_path.read_bytes()[:4] == b"GGUF"

    done = await provider.chat(QUESTION)
    body = done.body
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    text = choice["message"]["content"]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in text and text == text.strip()
    assert choice["finish_reason"] == "stop"

    vocab = llama_cpp.Llama(str(provider.model_path), vocab_only=True, verbose=False)
    prompt = build_prompt(QUESTION["messages"])
    assert done.usage.prompt_tokens == len(vocab.tokenize(prompt.encode()))
    assert done.usage.completion_tokens >= len(vocab.tokenize(text.encode(), add_bos=False))
    assert body["usage"]["total_tokens"] == done.usage.total_tokens

    capped = await provider.chat({**LONG, "max_tokens": 5})
    assert capped.body["choices"][0]["finish_reason"] == "length"
    assert capped.usage.completion_tokens == 5

    seeded = {**QUESTION, "temperature": 1.0, "seed": 1234}
    first = await provider.chat(seeded)
    second = await provider.chat(seeded)
    assert first.body["choices"][0]["message"] == second.body["choices"][0]["message"]


async def test_stream_chunks_match_the_non_stream_answer(provider: LlamaCppProvider) -> None:
    chunks = [c async for c in provider.chat_stream(QUESTION)]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish, usage_chunk = chunks[-2], chunks[-1]
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert usage_chunk["choices"] == []

    done = await provider.chat(QUESTION)
    assert content_of(chunks) == done.body["choices"][0]["message"]["content"]
    assert usage_chunk["usage"] == done.body["usage"]


async def test_event_loop_stays_responsive_and_requests_run_in_order(
    provider: LlamaCppProvider,
) -> None:
    busy_ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal busy_ticks
        while not stop.is_set():
            if provider.pending:
                busy_ticks += 1
            await asyncio.sleep(0.005)

    finished: list[str] = []

    async def long_stream() -> list[StreamChunk]:
        chunks = [c async for c in provider.chat_stream({**LONG, "max_tokens": 40})]
        finished.append("long")
        return chunks

    async def short_chat() -> str:
        done = await provider.chat(QUESTION)
        finished.append("short")
        return str(done.body["choices"][0]["message"]["content"])

    tick = asyncio.create_task(ticker())
    long_task = asyncio.create_task(long_stream())
    await asyncio.sleep(0)  # let the long request enter the queue first
    short_task = asyncio.create_task(short_chat())
    await asyncio.sleep(0)
    assert provider.pending == 2
    with pytest.raises(ProviderError) as exc:  # max_concurrency=2: the third is refused
        await provider.chat(QUESTION)
    assert exc.value.kind == "rate_limited"

    chunks, answer = await asyncio.gather(long_task, short_task)
    stop.set()
    await tick
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert "Paris" in answer
    assert finished == ["long", "short"]  # one model context: served one at a time, FIFO
    assert busy_ticks >= 10  # the loop kept running while the worker generated


async def test_stopping_a_stream_stops_generation(provider: LlamaCppProvider) -> None:
    before = dataclasses.replace(provider.stats)
    stream = provider.chat_stream({**LONG, "max_tokens": 400})
    async for chunk in stream:
        if content_of([chunk]):
            break
    await stream.aclose()  # what the HTTP layer does when the client disconnects
    assert provider.pending == 0

    after_cancel = await provider.chat({**LONG, "max_tokens": 3})  # queued behind it
    assert after_cancel.usage.completion_tokens == 3
    stats = provider.stats
    assert stats.cancelled == before.cancelled + 1
    assert stats.generations == before.generations + 2
    cancelled_tokens = stats.completion_tokens - before.completion_tokens - 3
    assert 1 <= cancelled_tokens < 400


async def test_timeouts_raise_their_kinds_and_free_the_worker(
    provider: LlamaCppProvider,
) -> None:
    original = provider.deployment
    try:
        provider.deployment = original.model_copy(
            update={"timeouts": Timeouts(first_token=0.001)}
        )
        with pytest.raises(ProviderError) as exc:
            await provider.chat(QUESTION)
        assert exc.value.kind == "timeout_first_token"

        provider.deployment = original
        await provider.chat({**LONG, "max_tokens": 1})  # queued behind: the worker has settled
        cancelled_before = provider.stats.cancelled
        provider.deployment = original.model_copy(update={"timeouts": Timeouts(total=0.5)})
        received: list[StreamChunk] = []
        with pytest.raises(ProviderError) as exc:
            async for chunk in provider.chat_stream({**LONG, "max_tokens": 400}):
                received.append(chunk)
        assert exc.value.kind == "timeout_total"
    finally:
        provider.deployment = original
    done = await provider.chat(QUESTION)  # the worker is free again
    assert "Paris" in done.body["choices"][0]["message"]["content"]
    assert provider.stats.cancelled == cancelled_before + 1


async def test_empty_answers_and_oversized_prompts_are_errors(provider: LlamaCppProvider) -> None:
    answer = (await provider.chat(QUESTION)).body["choices"][0]["message"]["content"]
    silenced = {**QUESTION, "stop": [answer[:2]]}  # greedy: the answer now stops at once
    with pytest.raises(ProviderError) as exc:
        await provider.chat(silenced)
    assert exc.value.kind == "bad_response"
    stream = provider.chat_stream(silenced)
    with pytest.raises(ProviderError) as exc:  # raised before any chunk: fallback still possible
        await stream.__anext__()
    assert exc.value.kind == "bad_response"

    huge = {"messages": [{"role": "user", "content": "word " * 3000}]}
    with pytest.raises(ProviderError) as exc:
        await provider.chat(huge)
    assert exc.value.kind == "bad_request"
    assert "context window of 2048 tokens" in exc.value.message
