"""LangChain's OpenAI and Anthropic chat models and OpenAI embeddings through a real gateway.

``langchain-openai`` talks to ``/v1/chat/completions`` and ``/v1/embeddings``,
``langchain-anthropic`` to ``/v1/messages``; the stand-in upstream answers
``"stub reply: <last user text>"`` and calls a tool when asked to.
"""

from __future__ import annotations

import httpx
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import SecretStr

from tests.gateway.conftest import Gateway


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def openai_chat(gateway: Gateway, key: str, model: str = "fast", **kw: object) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=gateway.v1, api_key=SecretStr(key), max_retries=0,
                      timeout=30, **kw)  # type: ignore[arg-type]


def anthropic_chat(gateway: Gateway, key: str, model: str = "claude") -> ChatAnthropic:
    return ChatAnthropic(model_name=model, base_url=gateway.url, api_key=SecretStr(key),
                         max_retries=0, timeout=30, max_tokens_to_sample=64)  # type: ignore[call-arg]


# ------------------------------------------------------------------ langchain-openai


def test_openai_chat(gateway: Gateway, key: str) -> None:
    msg = openai_chat(gateway, key).invoke("hello from langchain")
    assert isinstance(msg, AIMessage)
    assert msg.content == "stub reply: hello from langchain"
    assert msg.usage_metadata is not None and msg.usage_metadata["input_tokens"] > 0
    assert msg.response_metadata["finish_reason"] == "stop"


def test_openai_chat_error_is_the_gateway_error(gateway: Gateway, key: str) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as exc:
        openai_chat(gateway, key, model="no-such-model").invoke("hi")
    assert exc.value.code == "model_not_found"


def test_openai_stream(gateway: Gateway, key: str) -> None:
    chunks = list(openai_chat(gateway, key, stream_usage=True).stream("stream this please"))
    assert len(chunks) > 2
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "stub reply: stream this please"
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    reply = "stub reply: stream this please"
    assert usage and usage[-1]["output_tokens"] == len(reply.split())  # the stub counts words


async def test_openai_async_stream(gateway: Gateway, key: str) -> None:
    text = ""
    async for c in openai_chat(gateway, key).astream("async words"):
        text += str(c.content)
    assert text == "stub reply: async words"


def test_openai_tool_call_round_trip(gateway: Gateway, key: str) -> None:
    llm = openai_chat(gateway, key).bind_tools([get_weather], tool_choice="get_weather")
    first = llm.invoke("what is the weather in Paris")
    assert isinstance(first, AIMessage) and first.tool_calls
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = get_weather.invoke(call["args"])
    second = openai_chat(gateway, key).bind_tools([get_weather]).invoke([
        HumanMessage("what is the weather in Paris"), first,
        ToolMessage(result, tool_call_id=call["id"]),
    ])
    assert second.content == f"stub reply: tool result: {result}"


def test_openai_streamed_tool_call(gateway: Gateway, key: str) -> None:
    llm = openai_chat(gateway, key).bind_tools([get_weather], tool_choice="get_weather")
    merged: AIMessageChunk | None = None
    for chunk in llm.stream("weather in Oslo"):
        assert isinstance(chunk, AIMessageChunk)
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.tool_calls
    assert merged.tool_calls[0]["name"] == "get_weather"
    assert "city" in merged.tool_calls[0]["args"]


def test_openai_embeddings(gateway: Gateway, key: str) -> None:
    # check_embedding_ctx_length=False: send text, not tiktoken ids (no tokenizer download)
    emb = OpenAIEmbeddings(model="embed", base_url=gateway.v1, api_key=SecretStr(key),
                           max_retries=0, check_embedding_ctx_length=False)
    one = emb.embed_query("lockgate embeds this")
    many = emb.embed_documents(["first document", "second document", "lockgate embeds this"])
    assert len(one) == 16 and len(many) == 3
    assert many[2] == pytest.approx(one)
    assert many[0] != pytest.approx(many[1])


def test_openai_gateway_headers_reach_langchain(gateway: Gateway, key: str) -> None:
    """The call LangChain made went through the pipeline (deployment and request id)."""
    msg = openai_chat(gateway, key, include_response_headers=True).invoke("count me please")
    headers = {k.lower(): v for k, v in msg.response_metadata["headers"].items()}
    assert headers["x-lockgate-deployment"]
    assert headers["x-request-id"]


# ------------------------------------------------------------------ langchain-anthropic


def test_anthropic_chat(gateway: Gateway, key: str) -> None:
    msg = anthropic_chat(gateway, key).invoke("hello claude via langchain")
    assert isinstance(msg, AIMessage)
    assert msg.content == "stub reply: hello claude via langchain"
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    assert msg.response_metadata["stop_reason"] == "end_turn"


def test_anthropic_chat_on_an_openai_deployment(gateway: Gateway, key: str) -> None:
    """/v1/messages serves any configured model, translated to and from OpenAI's format."""
    msg = anthropic_chat(gateway, key, model="fast").invoke("cross format")
    assert msg.content == "stub reply: cross format"


def test_anthropic_stream(gateway: Gateway, key: str) -> None:
    chunks = list(anthropic_chat(gateway, key).stream("stream from claude"))
    text = "".join(c.content if isinstance(c.content, str) else
                   "".join(b.get("text", "") for b in c.content if isinstance(b, dict))
                   for c in chunks)
    assert text == "stub reply: stream from claude"
    assert len(chunks) > 2


def test_anthropic_tool_call_round_trip(gateway: Gateway, key: str) -> None:
    llm = anthropic_chat(gateway, key).bind_tools([get_weather], tool_choice="get_weather")
    first = llm.invoke("what is the weather in Rome")
    assert isinstance(first, AIMessage) and first.tool_calls
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = get_weather.invoke(call["args"])
    second = anthropic_chat(gateway, key).bind_tools([get_weather]).invoke([
        HumanMessage("what is the weather in Rome"), first,
        ToolMessage(result, tool_call_id=call["id"]),
    ])
    assert second.text.startswith("stub reply: tool result:")
    assert result in second.text


def test_anthropic_error_shape(gateway: Gateway) -> None:
    import anthropic

    with pytest.raises(anthropic.AuthenticationError):
        anthropic_chat(gateway, "sk-wrong-key").invoke("hi")
    r = httpx.post(gateway.url + "/v1/messages", headers={"x-api-key": "sk-wrong-key"},
                   json={"model": "claude", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["type"] == "error"
