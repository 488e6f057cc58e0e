"""RulesProvider: fixed, sandboxed template and a real loopback HTTP rule service."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from lockgate.errors import ConfigError
from lockgate.providers.base import ProviderError
from lockgate.providers.rules import FINGERPRINT, RulesProvider
from lockgate.settings import ModelDeployment, RulesSpec


def rules_deployment(name: str, **kw: Any) -> ModelDeployment:
    """A ``provider: rules`` deployment (a fixed answer unless ``rules`` is given)."""
    kw.setdefault("rules", {"fixed": "configured answer"})
    return ModelDeployment(name=name, provider="rules", **kw)


DEPLOYMENT = rules_deployment("support")


def body(text: str = "my printer is on fire", **extra: Any) -> dict[str, Any]:
    return {
        "model": "support",
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": text}]},
        ],
        **extra,
    }


async def collect(provider: RulesProvider, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in provider.chat_stream(request)]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )


async def test_fixed_answer_is_an_openai_completion_with_zero_usage() -> None:
    p = RulesProvider(DEPLOYMENT, spec={"fixed": "We are offline; a person will answer."})
    done = await p.chat(body())
    doc = done.body
    assert doc["object"] == "chat.completion" and doc["model"] == "support"
    assert doc["system_fingerprint"] == FINGERPRINT
    assert doc["choices"][0]["message"] == {
        "role": "assistant", "content": "We are offline; a person will answer."}
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["total_tokens"] == 0 and done.usage.total_tokens == 0
    await p.aclose()


async def test_fixed_answer_streams_in_chunks_ending_with_stop_and_usage() -> None:
    text = "x" * 150 + " end"
    p = RulesProvider(DEPLOYMENT, spec=RulesSpec(fixed=text))
    chunks = await collect(p, body())
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks) == text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 0
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["system_fingerprint"] == FINGERPRINT for c in chunks)


async def test_template_sees_last_user_message_and_metadata() -> None:
    p = RulesProvider(DEPLOYMENT, spec={
        "template": "[{{ metadata.ticket | default('new') }}] {{ last_user_message | upper }}"
                    " ({{ messages | length }} msgs){{ metadata.missing.deeper }}"})
    doc = (await p.chat(body(metadata={"ticket": "T-42"}))).body
    assert doc["choices"][0]["message"]["content"] == "[T-42] MY PRINTER IS ON FIRE (4 msgs)"
    doc = (await p.chat(body())).body
    assert doc["choices"][0]["message"]["content"].startswith("[new] MY PRINTER")


async def test_template_is_sandboxed() -> None:
    leak = RulesProvider(DEPLOYMENT, spec={"template": "{{ ''.__class__.__mro__ }}"})
    assert "class" not in (await leak.chat(body())).body["choices"][0]["message"]["content"]
    mutate = RulesProvider(DEPLOYMENT, spec={"template": "{{ metadata.update({'x': 1}) }}"})
    with pytest.raises(ProviderError) as err:
        await mutate.chat(body(metadata={"a": 1}))
    assert err.value.kind == "server_error"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one of"),
        ({"fixed": "a", "template": "b"}, "got fixed, template"),
        ({"template": "{{ broken"}, "rules.template"),
        ({"http": {"url": "ftp://x"}}, "rules.http.url"),
    ],
)
def test_bad_rules_are_one_line_config_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RulesProvider(DEPLOYMENT, spec=spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_rules_is_a_config_error() -> None:
    from types import SimpleNamespace

    with pytest.raises(ConfigError, match="needs a 'rules' mapping"):
        RulesProvider(SimpleNamespace(name="support", rules=None))


async def test_embeddings_are_refused() -> None:
    p = RulesProvider(DEPLOYMENT, spec={"fixed": "no"})
    with pytest.raises(ProviderError) as err:
        await p.embeddings({"input": "x"})
    assert err.value.kind == "bad_request"


# --------------------------------------------------------------- HTTP rule service


class RuleService:
    """A real HTTP server on 127.0.0.1 that behaves like a legacy rule engine."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/answer", self.answer)
        app.router.add_post("/plain", self.plain)
        app.router.add_post("/busy", self.busy)
        app.router.add_post("/broken", self.broken)
        app.router.add_post("/html", self.html)
        app.router.add_post("/stall", self.stall)
        self.runner = web.AppRunner(app)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def answer(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.seen.append({"body": doc, "auth": request.headers.get("Authorization")})
        last = doc["messages"][-1]["content"][0]["text"]
        return web.json_response({"answer": {"text": f"rule #7 says: {last}"}, "rule": 7})

    async def plain(self, request: web.Request) -> web.Response:
        return web.json_response({"text": "plain answer"})

    async def busy(self, request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"Retry-After": "7"})

    async def broken(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "rule engine crashed"}, status=500)

    async def html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async def stall(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.json_response({"text": "late"})

    async def close(self) -> None:
        self.release.set()
        await self.runner.cleanup()


@pytest.fixture
async def service() -> AsyncIterator[RuleService]:
    s = RuleService()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def http_provider(url: str, **http: Any) -> RulesProvider:
    return RulesProvider(DEPLOYMENT, spec={"http": {"url": url, **http}})


async def test_http_rule_service_answer_is_mapped(
    service: RuleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RULES_TOKEN", "Bearer s3cret")
    p = http_provider(service.url + "/answer", response_field="answer.text",
                      headers={"Authorization": "env:RULES_TOKEN"})
    try:
        doc = (await p.chat(body(metadata={"k": "v"}))).body
        assert doc["choices"][0]["message"]["content"] == "rule #7 says: my printer is on fire"
        assert doc["system_fingerprint"] == FINGERPRINT
        assert service.seen[0]["body"]["metadata"] == {"k": "v"}
        assert service.seen[0]["auth"] == "Bearer s3cret"
        chunks = await collect(p, body("stream me"))
        assert streamed_text(chunks) == "rule #7 says: stream me"
        assert service.seen[1]["body"]["stream"] is False
    finally:
        await p.aclose()


async def test_http_default_field_lookup(service: RuleService) -> None:
    p = http_provider(service.url + "/plain")
    try:
        assert (await p.chat(body())).body["choices"][0]["message"]["content"] == "plain answer"
    finally:
        await p.aclose()


@pytest.mark.parametrize(
    ("path", "extra", "kind"),
    [
        ("/busy", {}, "rate_limited"),
        ("/broken", {}, "server_error"),
        ("/html", {}, "bad_response"),
        ("/answer", {"response_field": "answer.missing"}, "bad_response"),
        ("/plain", {"response_field": "text.0"}, "bad_response"),
    ],
)
async def test_http_errors_map_to_provider_errors(
    service: RuleService, path: str, extra: dict[str, Any], kind: str
) -> None:
    p = http_provider(service.url + path, **extra)
    try:
        with pytest.raises(ProviderError) as err:
            await p.chat(body())
        assert err.value.kind == kind
        if kind == "rate_limited":
            assert err.value.retry_after == 7.0 and err.value.upstream_status == 429
        with pytest.raises(ProviderError):  # streams fail before the first chunk
            await collect(p, body())
    finally:
        await p.aclose()


async def test_http_silent_service_times_out(service: RuleService) -> None:
    p = http_provider(service.url + "/stall", timeout=0.3)
    try:
        with pytest.raises(ProviderError) as err:
            await p.chat(body())
        assert err.value.is_timeout
    finally:
        await p.aclose()


async def test_http_unreachable_service_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = http_provider(f"http://127.0.0.1:{port}/answer")
    try:
        with pytest.raises(ProviderError) as err:
            await p.chat(body())
        assert err.value.kind == "connection"
    finally:
        await p.aclose()


async def test_rules_read_from_the_deployment_attribute() -> None:
    """What build_provider does once ModelDeployment has ``rules: RulesSpec | None``."""
    from types import SimpleNamespace

    dep = SimpleNamespace(name="kill", deployment_id="kill/rules:x",
                          rules={"template": "sorry: {{ last_user_message }}"})
    p = RulesProvider(dep)
    doc = (await p.chat(body("help"))).body
    assert doc["choices"][0]["message"]["content"] == "sorry: help"
