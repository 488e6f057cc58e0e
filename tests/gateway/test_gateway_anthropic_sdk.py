"""The official anthropic SDK against lockgate's /v1/messages, and lockgate's
anthropic provider behind an OpenAI client."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.gateway.conftest import Gateway


def aclient(gw: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_messages_non_stream(gateway: Gateway, key: str) -> None:
    msg = aclient(gateway, key).messages.create(
        model="fast", max_tokens=64, system="be brief",
        messages=[{"role": "user", "content": "hello anthropic"}])
    assert msg.content[0].type == "text" and "hello anthropic" in msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_messages_stream(gateway: Gateway, key: str) -> None:
    with aclient(gateway, key).messages.stream(
        model="fast", max_tokens=64, messages=[{"role": "user", "content": "stream anthropic"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "stream anthropic" in text
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"


def test_messages_errors_in_anthropic_shape(gateway: Gateway, key: str) -> None:
    with pytest.raises(anthropic.NotFoundError):
        aclient(gateway, key).messages.create(
            model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        aclient(gateway, "lg-bad").messages.create(
            model="fast", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_openai_client_through_anthropic_provider(gateway: Gateway, key: str) -> None:
    c = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    out = c.chat.completions.create(model="claude",
                                    messages=[{"role": "user", "content": "via claude"}])
    assert "via claude" in (out.choices[0].message.content or "")
    parts = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "claude stream"}], stream=True)
        if ch.choices]
    assert "claude stream" in "".join(parts)
