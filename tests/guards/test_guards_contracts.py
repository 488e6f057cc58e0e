"""Output contracts: registry, validation of content / tool arguments, repair messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockgate.errors import ConfigError
from lockgate.guards.contracts import Contract, ContractRegistry, build_repair_messages
from lockgate.guards.errors import ContractNotFound, ContractViolation

TRIAGE: dict[str, Any] = {
    "type": "object",
    "required": ["queue", "priority"],
    "additionalProperties": False,
    "properties": {
        "queue": {"type": "string", "enum": ["billing", "tech", "sales"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "contact": {"type": "string", "format": "email"},
    },
}


def completion(content: str | None = None, args: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if args is not None:
        msg["tool_calls"] = [
            {"id": "c", "type": "function", "function": {"name": "triage", "arguments": args}}
        ]
    return {"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}


def test_valid_content_and_fenced_json() -> None:
    c = Contract("ticket-triage@2", TRIAGE)
    assert (c.name, c.version) == ("ticket-triage", 2)
    ok = c.check_completion(completion('{"queue": "tech", "priority": 2}'))
    assert ok.ok and ok.value == {"queue": "tech", "priority": 2} and ok.source == "content"
    fenced = c.check_completion(completion('```json\n{"queue": "sales", "priority": 1}\n```'))
    assert fenced.ok


def test_errors_are_concise_with_paths() -> None:
    c = Contract("ticket-triage@2", TRIAGE)
    bad = c.check_text(
        json.dumps(
            {
                "queue": "urgent",
                "priority": 9,
                "tags": [1, "a"],
                "contact": "not-an-email",
                "extra": True,
            }
        )
    )
    assert not bad.ok
    assert bad.errors == (
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.contact: 'not-an-email' is not a 'email'",
        "$.priority: 9 is greater than the maximum of 4",
        "$.queue: 'urgent' is not one of ['billing', 'tech', 'sales']",
        "$.tags[0]: 1 is not of type 'string'",
    )
    missing = c.check_text("{}")
    assert "$: 'queue' is a required property" in missing.errors


def test_invalid_json_and_empty_answers() -> None:
    c = Contract("ticket-triage@2", TRIAGE)
    broken = c.check_completion(completion('{"queue": "tech", '))
    assert not broken.ok and broken.errors[0].startswith("$: not valid JSON")
    assert c.check_completion(completion("")).errors == ("$: the answer is empty",)
    assert c.check_completion({"choices": []}).errors == ("$: the answer has no message",)


def test_tool_call_arguments_are_checked() -> None:
    c = Contract("ticket-triage@2", TRIAGE)
    res = c.check_completion(completion(None, '{"queue": "billing", "priority": 3}'))
    assert res.ok and res.source == "tool_call"
    other = c.check_completion(
        completion('{"queue": "tech", "priority": 1}', "{}"), tool_name="something_else"
    )
    assert other.ok and other.source == "content"


def test_repair_messages() -> None:
    c = Contract("ticket-triage@2", TRIAGE)
    original = [{"role": "user", "content": "Triage: my invoice is wrong"}]
    bad = '{"queue": "urgent", "priority": 1}'
    res = c.check_text(bad)
    msgs = build_repair_messages(original, res.raw, res.errors, c)
    assert msgs[:1] == original and len(original) == 1
    assert msgs[1] == {"role": "assistant", "content": bad}
    assert msgs[2]["role"] == "user"
    text = msgs[2]["content"]
    assert "- $.queue: 'urgent' is not one of" in text
    assert "ticket-triage@2" in text and '"enum":["billing","tech","sales"]' in text
    assert "corrected JSON only" in text


def test_violation_error_shape() -> None:
    err = ContractViolation("ticket-triage@2", [f"e{i}" for i in range(7)])
    assert err.status == 502 and err.code == "output_contract_failed"
    assert "e0; e1; e2; e3; e4 (+2 more)" in err.message


def test_registry_inline_files_and_directory(tmp_path: Path) -> None:
    (tmp_path / "invoice@1.json").write_text(json.dumps({"type": "object"}))
    (tmp_path / "other").mkdir()
    single = tmp_path / "other" / "one.json"
    single.write_text(json.dumps({"type": "array"}))
    reg = ContractRegistry.build({"ticket-triage@2": TRIAGE}, {"list@3": single}, tmp_path)
    assert reg.ids() == ["invoice@1", "list@3", "ticket-triage@2"]
    assert "invoice@1" in reg and len(reg) == 3
    assert reg.get("list@3").check_text("[1]").ok
    with pytest.raises(ContractNotFound) as info:
        reg.get("nope@1")
    assert info.value.status == 400


def test_registry_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a contract id"):
        ContractRegistry.build({"triage": TRIAGE})
    with pytest.raises(ConfigError, match="invalid JSON Schema"):
        ContractRegistry.build({"t@1": {"type": "no-such-type"}})
    with pytest.raises(ConfigError, match="no such file"):
        ContractRegistry.build(files={"t@1": tmp_path / "missing.json"})
    (tmp_path / "t@1.json").write_text("{}")
    with pytest.raises(ConfigError, match="defined twice"):
        ContractRegistry.build({"t@1": {}}, directory=tmp_path)
