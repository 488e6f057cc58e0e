"""LlamaIndex's OpenAI-compatible LLM (``OpenAILike``) and ``OpenAIEmbedding`` through a real
gateway: chat, completion, streaming, tool calls (function calling) and embeddings."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai_like import OpenAILike

from tests.gateway.conftest import Gateway


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def llm(gateway: Gateway, key: str, model: str = "fast") -> OpenAILike:
    return OpenAILike(model=model, api_base=gateway.v1, api_key=key, is_chat_model=True,
                      is_function_calling_model=True, context_window=8192, max_retries=0,
                      timeout=30)


def test_chat(gateway: Gateway, key: str) -> None:
    resp = llm(gateway, key).chat([ChatMessage(role=MessageRole.USER, content="hi llama")])
    assert resp.message.content == "stub reply: hi llama"
    assert resp.message.role == MessageRole.ASSISTANT


def test_complete(gateway: Gateway, key: str) -> None:
    resp = llm(gateway, key).complete("complete me")
    assert resp.text == "stub reply: complete me"


def test_stream_chat(gateway: Gateway, key: str) -> None:
    deltas = [r.delta or "" for r in
              llm(gateway, key).stream_chat([ChatMessage(role="user", content="stream it")])]
    assert len(deltas) > 2
    assert "".join(deltas) == "stub reply: stream it"


async def test_async_stream_complete(gateway: Gateway, key: str) -> None:
    text = ""
    async for r in await llm(gateway, key).astream_complete("async llama"):
        text += r.delta or ""
    assert text == "stub reply: async llama"


def test_tool_call_round_trip(gateway: Gateway, key: str) -> None:
    model = llm(gateway, key)
    weather = FunctionTool.from_defaults(fn=get_weather)
    resp = model.chat_with_tools([weather], user_msg="weather tool:get_weather in Lima",
                                 tool_required=True)
    calls = model.get_tool_calls_from_response(resp, error_on_no_tool_call=True)
    assert calls[0].tool_name == "get_weather"
    assert isinstance(calls[0].tool_kwargs["city"], str)
    output = weather(**calls[0].tool_kwargs)
    history = [
        ChatMessage(role="user", content="weather tool:get_weather in Lima"),
        resp.message,
        ChatMessage(role="tool", content=str(output),
                    additional_kwargs={"tool_call_id": calls[0].tool_id}),
    ]
    final = model.chat(history)
    assert final.message.content == f"stub reply: tool result: {output}"


def test_streamed_tool_call(gateway: Gateway, key: str) -> None:
    model = llm(gateway, key)
    weather = FunctionTool.from_defaults(fn=get_weather)
    responses = list(model.stream_chat_with_tools([weather], user_msg="weather please",
                                                  tool_required=True))
    assert responses
    last = responses[-1]
    calls = model.get_tool_calls_from_response(last, error_on_no_tool_call=True)
    assert calls[0].tool_name == "get_weather" and "city" in calls[0].tool_kwargs


def test_error_reaches_the_caller(gateway: Gateway, key: str) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        llm(gateway, key, model="no-such-model").complete("hi")


def test_embeddings(gateway: Gateway, key: str) -> None:
    emb = OpenAIEmbedding(model_name="embed", api_base=gateway.v1, api_key=key, max_retries=0,
                          timeout=30)
    one = emb.get_query_embedding("index this")
    many = emb.get_text_embedding_batch(["a document", "another document", "index this"])
    assert len(one) == 16 and len(many) == 3
    assert many[2] == pytest.approx(one)
    assert many[0] != pytest.approx(many[1])


async def test_async_embeddings(gateway: Gateway, key: str) -> None:
    emb = OpenAIEmbedding(model_name="embed", api_base=gateway.v1, api_key=key, max_retries=0)
    vec = await emb.aget_text_embedding("async vector")
    assert len(vec) == 16
