"""Streaming redaction/restoration: equal to the one-shot functions under any chunking."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.guards.pii.scanner import PiiScanner
from lockgate.guards.pii.stream import (
    ChainedStream,
    ChatStreamGuard,
    StreamTransformer,
    stream_redactor,
    stream_restorer,
)
from lockgate.guards.pii.transform import Vault, placeholder_replacer, redact_text, restore_text

from .strategies import card_numbers, formatted, formatted_ibans

SCANNER = PiiScanner()

PII_PIECES = st.one_of(
    formatted(card_numbers()),
    formatted_ibans(),
    st.sampled_from(
        [
            "john.smith@example.com",
            "a.b-c@sub.example.org",
            "+1 (415) 555-2671",
            "+44 20 7946 0958",
            "020 7946 0958",
            "192.168.0.1",
            "2001:db8::8a2e:370:7334",
            "536-22-1234",
            "AB 12 34 56 C",
            "12345678Z",
            "RSSMRA85T10A562S",
            "1 84 12 76 451 089 46",
            "<EMAIL_1>",
            "<PHONE_",
            "DE89",
            "4111 1111",
        ]
    ),
)
FILLER = st.one_of(
    st.sampled_from([" ", ", ", ". ", "\n", "-", "@", ":", "(", "<", " and ", "x", "7", "  "]),
    st.text(max_size=8),
)
TEXTS = st.lists(st.one_of(PII_PIECES, FILLER), max_size=14).map("".join)


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    out, at = [], 0
    for p in [*points, len(text)]:
        out.append(text[at:p])
        at = p
    return out


def run_stream(t: StreamTransformer | ChainedStream, chunks: list[str]) -> tuple[str, int]:
    out, most_held = [], 0
    for c in chunks:
        out.append(t.feed(c))
        if isinstance(t, StreamTransformer):
            most_held = max(most_held, t.held)
    out.append(t.flush())
    return "".join(out), most_held


@settings(max_examples=400, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_stream_redaction_equals_one_shot(text: str, cuts: list[int]) -> None:
    expected, _ = redact_text(SCANNER, text)
    got, most_held = run_stream(stream_redactor(SCANNER), chunked(text, cuts))
    assert got == expected
    assert most_held <= 600  # bounded holdback, never the whole stream


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_redact_restore_round_trip_under_any_chunking(text: str, cuts: list[int]) -> None:
    vault = Vault()
    vault.reserve_from(text)  # the caller's own "<EMAIL_1>" must not collide
    redacted, _ = redact_text(SCANNER, text, placeholder_replacer(vault))
    assert restore_text(vault, redacted) == text
    got, _ = run_stream(stream_restorer(vault), chunked(redacted, cuts))
    assert got == text


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_placeholder_stream_redaction_equals_one_shot(text: str, cuts: list[int]) -> None:
    v1, v2 = Vault(), Vault()
    expected, _ = redact_text(SCANNER, text, placeholder_replacer(v1))
    got, _ = run_stream(stream_redactor(SCANNER, v2), chunked(text, cuts))
    assert got == expected


def test_holdback_is_short_for_plain_text() -> None:
    t = stream_redactor(SCANNER)
    out = t.feed("The weather is nice today and ")
    assert out == "The weather is nice today and "[: len(out)]
    assert t.held <= 2  # only what could still start an entity
    assert t.feed("tomorrow.") + t.flush() == "The weather is nice today and tomorrow."[len(out) :]


def test_split_placeholder_is_restored() -> None:
    vault = Vault()
    ph = vault.placeholder("EMAIL", "ann@example.com")
    r = stream_restorer(vault)
    parts = [r.feed(c) for c in ["Write to <EM", "AIL", "_1", "> please"]]
    assert "".join(parts) + r.flush() == "Write to ann@example.com please"
    assert parts[0] == "Write to " and ph == "<EMAIL_1>"


def test_unknown_placeholder_is_left_alone() -> None:
    vault = Vault()
    vault.placeholder("EMAIL", "ann@example.com")
    assert restore_text(vault, "<EMAIL_2> and <EMAIL_1>") == "<EMAIL_2> and ann@example.com"


def _chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(delta)
    if content is not None:
        d["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


def test_chat_stream_guard_restores_content_and_tool_arguments() -> None:
    vault = Vault()
    vault.placeholder("EMAIL", "ann@example.com")
    guard = ChatStreamGuard(lambda: stream_restorer(vault))
    chunks = [
        _chunk("Hi <EMA"),
        _chunk("IL_1>"),
        _chunk(tool_calls=[{"index": 0, "function": {"name": "send", "arguments": '{"to":"<E'}}]),
        _chunk(tool_calls=[{"index": 0, "function": {"arguments": 'MAIL_1>"}'}}]),
        _chunk(None, finish="stop"),
    ]
    content, args = "", ""
    for c in chunks:
        delta = guard.process(c)["choices"][0]["delta"]
        content += delta.get("content") or ""
        for tc in delta.get("tool_calls") or []:
            args += tc["function"].get("arguments") or ""
    assert content == "Hi ann@example.com"
    assert args == '{"to":"ann@example.com"}'
    assert guard.close() == []


def test_chat_stream_guard_close_flushes_cut_stream() -> None:
    guard = ChatStreamGuard(lambda: stream_redactor(SCANNER))
    first = guard.process(_chunk("mail me at bob@example.com"))
    tail = guard.close()
    text = first["choices"][0]["delta"]["content"] + tail[0]["choices"][0]["delta"]["content"]
    assert text == "mail me at [EMAIL]"
    assert tail[0]["id"] == "c1"


def test_chained_stream_redacts_model_pii_then_restores() -> None:
    vault = Vault()
    vault.placeholder("EMAIL", "ann@example.com")
    chain = ChainedStream(stream_redactor(SCANNER), stream_restorer(vault))
    got, _ = run_stream(chain, ["<EMAIL_1> and eve@", "evil.com", " ok"])
    assert got == "ann@example.com and [EMAIL] ok"
