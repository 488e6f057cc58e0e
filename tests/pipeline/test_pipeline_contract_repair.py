"""Contract repair: which contract a body asks for, the repair request, gateway metadata."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lockgate.guards import Contract, ContractRegistry, ContractViolation, Guards
from lockgate.guards.errors import ContractNotFound
from lockgate.pipeline import Completion, Controls
from lockgate.pipeline.contract_repair import contract_for, repair_body, strip_gateway_metadata
from lockgate.providers.base import Usage
from lockgate.settings.guards import GuardsConfig
from tests.pipeline.fakes import (
    FakeProvider,
    answer,
    build_pipeline,
    chat_call,
    deployment,
    metric,
    target,
)

SCHEMA = {"type": "object", "required": ["label"],
          "properties": {"label": {"type": "string"}}, "additionalProperties": False}
TRIAGE = Contract("triage@1", SCHEMA)
REGISTRY = ContractRegistry({"triage@1": TRIAGE})
MESSAGES = [{"role": "user", "content": "classify this"}]


def fmt(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def test_metadata_contract_comes_from_the_registry() -> None:
    assert contract_for({"metadata": {"contract": "triage@1"}}, REGISTRY) is TRIAGE
    with pytest.raises(ContractNotFound) as exc:
        contract_for({"metadata": {"contract": "nope@1"}}, REGISTRY)
    assert exc.value.status == 400
    with pytest.raises(ContractNotFound):
        contract_for({"metadata": {"contract": "triage@1"}}, None)  # no registry: unknown


def test_inline_response_format_schema_is_a_contract_shared_by_identical_schemas() -> None:
    c = contract_for({"response_format": fmt(SCHEMA)}, None)
    assert c is not None and c.id.startswith("response-format-") and c.schema == SCHEMA
    reordered = dict(reversed(list(SCHEMA.items())))
    assert contract_for({"response_format": fmt(reordered)}, None) is c
    other = contract_for({"response_format": fmt({"type": "array"})}, None)
    assert other is not None and other is not c


def test_bodies_without_a_contract() -> None:
    assert contract_for({"messages": MESSAGES}, REGISTRY) is None
    assert contract_for({"response_format": {"type": "json_object"}}, REGISTRY) is None
    assert contract_for({"response_format": fmt({})}, REGISTRY) is None
    assert contract_for({"metadata": {"task": "x"}}, REGISTRY) is None


def test_strip_gateway_metadata_keeps_the_clients_own_keys() -> None:
    body = {"model": "m", "metadata": {"contract": "triage@1", "task": "t", "trace": "abc"}}
    assert strip_gateway_metadata(body) == {"model": "m", "metadata": {"trace": "abc"}}
    assert body["metadata"]["contract"] == "triage@1"  # not modified in place
    assert strip_gateway_metadata({"model": "m", "metadata": {"task": "t"}}) == {"model": "m"}
    untouched = {"model": "m", "metadata": {"trace": "abc"}}
    assert strip_gateway_metadata(untouched) is untouched


def test_repair_body_appends_the_bad_answer_and_the_errors_and_forces_the_schema() -> None:
    body = {"model": "m", "messages": MESSAGES, "temperature": 0}
    out = repair_body(body, TRIAGE, "not json", ("expected an object",))
    assert out["messages"][: len(MESSAGES)] == MESSAGES
    assert out["messages"][-2] == {"role": "assistant", "content": "not json"}
    assert "expected an object" in out["messages"][-1]["content"]
    assert "triage@1" in out["messages"][-1]["content"]
    assert out["response_format"] == {"type": "json_schema",
                                      "json_schema": {"name": "triage", "schema": SCHEMA}}
    assert out["temperature"] == 0 and body["messages"] == MESSAGES  # input untouched


class Sequenced(FakeProvider):
    """Answers with the given texts, one per call."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = list(texts)

    async def chat(self, body: dict[str, Any]) -> Completion:
        self.bodies.append(body)
        return Completion(answer(self.texts.pop(0)), Usage(3, 2))


def contract_pipeline(provider: FakeProvider):  # type: ignore[no-untyped-def]
    guards = Guards(GuardsConfig(contracts={"triage@1": SCHEMA}))
    return build_pipeline({"m": [target(deployment("m"), provider)]},
                          controls=Controls(guards=guards))


async def test_an_invalid_answer_gets_one_repair_call() -> None:
    good = orjson.dumps({"label": "bug"}).decode()
    provider = Sequenced("definitely not json", good)
    pipe, sink, metrics = contract_pipeline(provider)
    call = chat_call("m")
    call.body["metadata"] = {"contract": "triage@1"}
    result = await pipe.chat(call)
    assert result.body["choices"][0]["message"]["content"] == good
    assert provider.calls == 2
    assert "metadata" not in provider.bodies[0]  # lockgate's own metadata is not sent upstream
    assert provider.bodies[1]["messages"][-2]["content"] == "definitely not json"
    assert result.usage == Usage(6, 4)  # both calls are counted
    assert sink.records[-1].prompt_tokens == 6
    assert metric(metrics, "lockgate_guard_actions_total",
                  {"guard": "contract", "action": "repair"}) == 1


async def test_a_second_invalid_answer_fails_with_502() -> None:
    provider = Sequenced("nope", "still nope")
    pipe, sink, _ = contract_pipeline(provider)
    call = chat_call("m")
    call.body["response_format"] = fmt(SCHEMA)
    with pytest.raises(ContractViolation) as exc:
        await pipe.chat(call)
    assert exc.value.status == 502 and provider.calls == 2
    assert sink.records[-1].status == 502
