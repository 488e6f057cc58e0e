"""The reservation estimate is a real upper bound: prompt bytes + framing, the completion cap.

The stand-in upstream counts whitespace-separated words; real tokenizers (the bundled
gemma-3 vocabulary through llama.cpp, the MiniLM WordPiece tokenizer) cover at least one
byte a token. The old 4-characters-a-token estimate is below both for ordinary input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.governance import (
    completion_cap,
    estimate_call,
    prompt_tokens_bound,
    prompt_tokens_estimate,
    requested_completion_limit,
    text_tokens_bound,
)
from lockgate.governance.estimate import PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS

MODEL_HOME = Path(os.environ.get("LOCKGATE_TEST_MODEL_HOME", "/tmp/lockgate-llamacpp-test-home"))


def words(body: dict[str, Any]) -> int:
    """What the stand-in upstream reports as prompt_tokens for a plain-text chat body."""
    return sum(len(str(m["content"]).split()) for m in body["messages"])


def chat(text: str, **kw: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **kw}


def test_bound_is_above_word_counts_where_four_chars_a_token_is_not() -> None:
    body = chat(" ".join(["a"] * 400))  # 799 characters, 400 words
    assert prompt_tokens_estimate(body) < words(body)  # the old estimate undercounts
    assert prompt_tokens_bound(body) >= words(body)
    emoji = chat("🙂" * 50)  # 50 characters, 200 UTF-8 bytes: up to 200 byte-level tokens
    assert prompt_tokens_bound(emoji) >= 200
    assert prompt_tokens_estimate(emoji) < 200


@given(st.text(min_size=0, max_size=300))
def test_bound_never_below_stub_words(text: str) -> None:
    body = chat(text)
    assert prompt_tokens_bound(body) >= words(body)


def test_everything_the_model_reads_is_counted() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "x" * 300,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert prompt_tokens_bound({**base, "tools": tools}) > prompt_tokens_bound(base) + 300
    call = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "f", "arguments": '{"q": "' + "y" * 500 + '"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "z" * 100},
    ]}
    assert prompt_tokens_bound(call) >= 600 + 3 * PER_MESSAGE_TOKENS + PER_REQUEST_TOKENS
    image = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}},
    ]}]}
    bound = prompt_tokens_bound(image, media_tokens=1000)
    assert 1000 < bound < 2000  # a flat allowance, not the base64 bytes


def test_embeddings_inputs() -> None:
    assert prompt_tokens_bound({"input": "abc"}) == 3 + 2
    assert prompt_tokens_bound({"input": ["ab", "cd"]}) == 2 * (2 + 2)
    assert prompt_tokens_bound({"input": [1, 2, 3]}) == 3  # token arrays are exact
    assert prompt_tokens_bound({"input": [[1, 2], [3]]}) == 3


def test_deep_nesting_does_not_blow_the_stack() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = {"content": [deep]}
    assert prompt_tokens_bound({"messages": [deep]}) >= 1


def test_completion_cap() -> None:
    assert completion_cap({"messages": []}, 300) == 300
    assert completion_cap({"messages": [], "max_tokens": 20}, 300) == 20
    assert completion_cap({"messages": [], "max_completion_tokens": 40, "max_tokens": 20}, 3) == 40
    assert completion_cap({"messages": [], "max_tokens": 20, "n": 3}, 300) == 60
    assert completion_cap({"messages": [], "max_tokens": True}, 300) == 300  # not a count
    assert completion_cap({"input": "x"}, 300) == 0
    assert requested_completion_limit({"max_tokens": 0}) is None
    e = estimate_call(chat("hi"), default_max_tokens=10, prices=[(1e6, 2e6)])
    assert e.cost == pytest.approx(e.prompt_tokens * 1.0 + 10 * 2.0)


# ------------------------------------------------------------------ real tokenizers


@pytest.fixture(scope="module")
def gemma_vocab() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    from lockgate.providers.llamacpp_files import ensure_model_file

    MODEL_HOME.mkdir(parents=True, exist_ok=True)
    path = ensure_model_file("bundled:gemma-3-270m", home=MODEL_HOME, where="test")
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield vocab
    vocab.close()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_gemma_tokens_never_exceed_bytes(gemma_vocab: Any, text: str) -> None:
    tokens = gemma_vocab.tokenize(text.encode("utf-8", "surrogatepass"), add_bos=False,
                                  special=False)
    assert len(tokens) <= text_tokens_bound(text)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_minilm_tokens_never_exceed_the_embeddings_bound(text: str) -> None:
    from lockgate.providers.embedded import _shared_tokenizer, resolve_model_dir

    tok = _shared_tokenizer(resolve_model_dir("bundled:all-minilm-l6-v2"))
    assert len(tok.encode(text).ids) <= prompt_tokens_bound({"input": text})
