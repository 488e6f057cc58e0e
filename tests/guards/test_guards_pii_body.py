"""PII actions on OpenAI chat bodies, response restoration, and failing closed."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from lockgate.guards.errors import GuardError, PiiBlocked
from lockgate.guards.pii.body import (
    guard_chat_request,
    redact_chat_response,
    restore_chat_response,
)
from lockgate.guards.pii.detectors import BUILTIN_DETECTORS, Detector
from lockgate.guards.pii.scanner import PiiScanner
from lockgate.guards.pii.stream import stream_redactor, stream_restorer
from lockgate.guards.pii.transform import Vault, redact_text, restore_text

SCANNER = PiiScanner()


def request() -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "I am ann@example.com, card 4111 1111 1111 1111."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also ann@example.com and +44 20 7946 0958"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": '{"iban": "DE89370400440532013000"}',
                        },
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "found 536-22-1234"},
        ],
    }


def test_redact_replaces_every_text_and_keeps_input_untouched() -> None:
    body = request()
    before = copy.deepcopy(body)
    out = guard_chat_request(body, SCANNER, "redact")
    assert body == before  # not mutated
    msgs = out.body["messages"]
    assert msgs[0] is body["messages"][0]  # unchanged parts are shared
    assert msgs[1]["content"] == "I am [EMAIL], card [CREDIT_CARD]."
    assert msgs[2]["content"][0]["text"] == "Also [EMAIL] and [PHONE]"
    assert msgs[2]["content"][1] == body["messages"][2]["content"][1]
    assert msgs[3]["tool_calls"][0]["function"]["arguments"] == '{"iban": "[IBAN]"}'
    assert msgs[4]["content"] == "found [US_SSN]"
    assert out.entities == ["CREDIT_CARD", "EMAIL", "IBAN", "PHONE", "US_SSN"]
    assert ("EMAIL", "messages[2].content[0].text") in {(f.entity, f.path) for f in out.findings}
    assert "ann@example.com" not in repr(out.findings)


def test_redact_restore_uses_stable_placeholders_and_restores_answer() -> None:
    out = guard_chat_request(request(), SCANNER, "redact_restore")
    msgs = out.body["messages"]
    assert msgs[1]["content"] == "I am <EMAIL_1>, card <CREDIT_CARD_1>."
    assert msgs[2]["content"][0]["text"] == "Also <EMAIL_1> and <PHONE_1>"
    assert out.vault is not None and len(out.vault) == 5
    answer: dict[str, Any] = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Mailed <EMAIL_1> about <IBAN_1>.",
                    "tool_calls": [
                        {
                            "id": "x",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"to": "<EMAIL_1>"}'},
                        }
                    ],
                },
            }
        ]
    }
    restored = restore_chat_response(answer, out.vault)
    msg = restored["choices"][0]["message"]
    assert msg["content"] == "Mailed ann@example.com about DE89370400440532013000."
    assert msg["tool_calls"][0]["function"]["arguments"] == '{"to": "ann@example.com"}'
    assert answer["choices"][0]["message"]["content"].startswith("Mailed <EMAIL_1>")


def test_placeholders_never_collide_with_callers_text() -> None:
    body = {"messages": [{"role": "user", "content": "<EMAIL_1> is a tag; mail ann@example.com"}]}
    out = guard_chat_request(body, SCANNER, "redact_restore")
    assert out.body["messages"][0]["content"] == "<EMAIL_1> is a tag; mail <EMAIL_2>"
    answer = {"choices": [{"index": 0, "message": {"content": "<EMAIL_1> / <EMAIL_2>"}}]}
    restored = restore_chat_response(answer, out.vault)
    assert restored["choices"][0]["message"]["content"] == "<EMAIL_1> / ann@example.com"


def test_block_raises_pii_detected_with_types_only() -> None:
    with pytest.raises(PiiBlocked) as info:
        guard_chat_request(request(), SCANNER, "block")
    err = info.value
    assert err.status == 400 and err.code == "pii_detected"
    assert err.entities == ("CREDIT_CARD", "EMAIL", "IBAN", "PHONE", "US_SSN")
    assert "ann@example.com" not in err.message and "4111" not in err.message
    assert err.body()["error"]["code"] == "pii_detected"


def test_block_passes_clean_request() -> None:
    body = {"messages": [{"role": "user", "content": "hello there"}]}
    assert guard_chat_request(body, SCANNER, "block").body is body


def test_log_only_reports_and_changes_nothing() -> None:
    body = request()
    out = guard_chat_request(body, SCANNER, "log_only")
    assert out.body is body
    assert out.entities == ["CREDIT_CARD", "EMAIL", "IBAN", "PHONE", "US_SSN"]


def test_response_redaction() -> None:
    answer = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Reach bob@corp.example now"}}
        ]
    }
    new, found = redact_chat_response(answer, SCANNER)
    assert new["choices"][0]["message"]["content"] == "Reach [EMAIL] now"
    assert found == ["EMAIL"]


def test_bodies_without_messages_pass() -> None:
    body: dict[str, Any] = {"model": "m", "input": "x"}
    assert guard_chat_request(body, SCANNER, "redact").body is body
    assert restore_chat_response({"object": "x"}, Vault()) == {"object": "x"}


# ------------------------------------------------------------------ fail closed


def _boom(raw: str) -> list[tuple[int, int]]:
    raise RuntimeError("detector bug " + raw)


FAILING = PiiScanner(
    (
        *BUILTIN_DETECTORS,
        Detector("BROKEN", re.compile(r"\w{1,5}"), re.compile(r"\w{1,6}"), _boom),
    )
)


@pytest.mark.parametrize("action", ["block", "redact", "redact_restore", "log_only"])
def test_failing_detector_fails_closed_on_requests(action: Any) -> None:
    with pytest.raises(GuardError) as info:
        guard_chat_request(request(), FAILING, action)
    assert info.value.status == 500 and info.value.code == "guard_failed"
    assert "detector bug" not in info.value.message  # no text from the request leaks


def test_failing_detector_fails_closed_in_streams_and_text() -> None:
    with pytest.raises(GuardError):
        redact_text(FAILING, "hello")
    t = stream_redactor(FAILING)
    with pytest.raises(GuardError):
        for piece in ["some ", "text ", "that ", "goes ", "on"]:
            t.feed(piece)
        t.flush()


def test_failing_restorer_fails_closed() -> None:
    class BadVault(Vault):
        def original(self, placeholder: str) -> str | None:
            raise KeyError(placeholder)

    vault = BadVault()
    vault.placeholder("EMAIL", "a@b.example")
    with pytest.raises(GuardError):
        restore_text(vault, "x <EMAIL_1> y")
    r = stream_restorer(vault)
    with pytest.raises(GuardError):
        r.feed("x <EMAIL_1> y")
        r.flush()
