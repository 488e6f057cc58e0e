"""Virtual deployments behind a real Pipeline: authorisation, mode, zero-token audit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lockgate.errors import BadRequest, Forbidden
from lockgate.pipeline import Call, Completion, Principal, StreamChunk, Usage
from lockgate.pipeline.routing import Router
from tests.pipeline.fakes import (
    FakeProvider,
    KeyRow,
    answer,
    build_pipeline,
    chat_call,
    deployment,
    target,
)


class Notes:
    """A fake feature serving ``notes/<name>``."""

    prefix = "notes/"

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def grantable(self, model: str) -> bool:
        return model.startswith(self.prefix)

    def known(self, model: str) -> bool:
        return model == "notes/handbook"

    def deployment_id(self, model: str) -> str:
        return "notes:" + model.removeprefix(self.prefix)

    async def models(self, principal: Principal) -> list[str]:
        return ["notes/handbook"]

    async def chat(self, call: Call) -> Completion:
        self.calls.append(call)
        return Completion(answer("from notes", 50, 40), Usage(50, 40))

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        self.calls.append(call)

        async def gen() -> AsyncIterator[StreamChunk]:
            for part in ("a", "b"):
                yield {"choices": [{"index": 0, "delta": {"content": part}}]}

        return gen()


KEYS = {
    "lg-all": KeyRow("key-all", "team-1"),
    "lg-notes": KeyRow("key-notes", "team-1", allowed_models=("notes/*",)),
    "lg-chat": KeyRow("key-chat", "team-1", allowed_models=("chat",)),
}


def setup():  # type: ignore[no-untyped-def]
    provider = FakeProvider("from chat")
    pipe, sink, _ = build_pipeline({"chat": [target(deployment("chat"), provider)]},
                                         keys=KEYS)
    notes = Notes()
    pipe.router.add_virtual(notes)
    return pipe, sink, notes, provider


async def test_the_family_answers_and_the_audit_row_has_zero_tokens() -> None:
    pipe, sink, notes, provider = setup()
    result = await pipe.chat(chat_call("notes/handbook", api_key="lg-notes"))
    assert result.body["choices"][0]["message"]["content"] == "from notes"
    assert len(notes.calls) == 1 and provider.calls == 0
    [record] = sink.records
    assert record.deployment == "notes:handbook" and record.model == "notes/handbook"
    assert (record.prompt_tokens, record.completion_tokens, record.cost) == (0, 0, 0.0)
    assert record.status == 200 and record.key_id == "key-notes"


async def test_a_stream_from_the_family_is_audited_once_at_the_end() -> None:
    pipe, sink, _, _ = setup()
    stream = await pipe.chat_stream(chat_call("notes/handbook", api_key="lg-all"))
    assert sink.records == []
    parts = [c["choices"][0]["delta"]["content"] async for c in stream]
    assert parts == ["a", "b"]
    [record] = sink.records
    assert record.deployment == "notes:handbook" and record.stream
    assert (record.prompt_tokens, record.completion_tokens) == (0, 0)


async def test_metric_labels_are_known_models_or_unknown() -> None:
    pipe, _, _, _ = setup()
    assert pipe.model_label("chat") == "chat"
    assert pipe.model_label("notes/handbook") == "notes/handbook"  # the family knows it
    assert pipe.model_label("notes/made-up") == "unknown"
    assert pipe.model_label("x" * 5000) == "unknown"
    await pipe.chat(chat_call("notes/handbook", api_key="lg-notes"))
    with pytest.raises(Forbidden):
        await pipe.chat(chat_call("notes/other", api_key="lg-chat"))
    samples = {s.labels["model"] for m in pipe.metrics.registry.collect()
               if m.name == "lockgate_requests" for s in m.samples}
    assert samples == {"notes/handbook", "unknown"}


async def test_a_key_without_the_family_gets_403() -> None:
    pipe, sink, notes, _ = setup()
    with pytest.raises(Forbidden) as exc:
        await pipe.chat(chat_call("notes/handbook", api_key="lg-chat"))
    assert exc.value.status == 403 and notes.calls == []
    assert sink.records[-1].status == 403


async def test_embeddings_on_a_family_are_a_400() -> None:
    pipe, _, notes, _ = setup()
    call = Call(kind="embeddings", model="notes/handbook", body={"input": "x"}, api_key="lg-all")
    with pytest.raises(BadRequest) as exc:
        await pipe.embeddings(call)
    assert exc.value.status == 400 and exc.value.error_class == "model_mode_mismatch"
    assert notes.calls == []


async def test_the_family_is_listed_and_grantable() -> None:
    pipe, _, _, _ = setup()
    assert pipe.grantable("notes/*") and pipe.grantable("notes/other")
    assert not pipe.grantable("other/x")
    all_models = await pipe.list_models(Principal("k", "t"))
    assert all_models == ["chat", "notes/handbook"]


def test_router_is_the_pipelines() -> None:
    pipe, _, notes, _ = setup()
    assert isinstance(pipe.router, Router) and pipe.router.virtual("notes/x") is notes
