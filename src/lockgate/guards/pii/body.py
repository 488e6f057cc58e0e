"""PII policy actions applied to OpenAI chat bodies (request and non-stream response).

:func:`guard_chat_request` walks every text a chat request carries to the
model - message ``content`` strings, ``text`` content parts, tool-call and
legacy ``function_call`` arguments - and applies one action:

* ``block``: raise :class:`~lockgate.guards.errors.PiiBlocked` (400 ``pii_detected``)
* ``redact``: replace values with ``[EMAIL]`` etc.
* ``redact_restore``: replace with vault placeholders (``<EMAIL_1>``); restore
  the answer with :func:`restore_chat_response` or the streaming restorer
* ``log_only``: report findings, change nothing

The input body is never mutated: changed containers are copied on write, and
an unchanged body is returned as the same object. Findings carry entity type
and location only, never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lockgate.guards.errors import PiiBlocked
from lockgate.guards.pii.scanner import PiiScanner, step
from lockgate.guards.pii.transform import (
    Replacer,
    Vault,
    label_replacer,
    placeholder_replacer,
    redact_text,
    render,
    restore_text,
)

__all__ = [
    "BodyFinding",
    "PiiAction",
    "PiiOutcome",
    "guard_chat_request",
    "redact_chat_response",
    "restore_chat_response",
]

PiiAction = Literal["block", "redact", "redact_restore", "log_only"]


@dataclass(frozen=True, slots=True)
class BodyFinding:
    """An entity found at ``path`` (e.g. ``messages[2].content[0].text``)."""

    entity: str
    path: str


@dataclass(slots=True)
class PiiOutcome:
    body: dict[str, Any]
    findings: list[BodyFinding] = field(default_factory=list)
    vault: Vault | None = None

    @property
    def entities(self) -> list[str]:
        """Distinct entity types found, sorted."""
        return sorted({f.entity for f in self.findings})


TextFn = Callable[[str, str], str]
"""(text, path) -> new text."""


def _walk_messages(messages: list[Any], fn: TextFn) -> list[Any] | None:
    """Apply ``fn`` to every text in the messages; a new list if anything changed."""
    out: list[Any] | None = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        new_msg = _walk_message(msg, f"messages[{i}]", fn)
        if new_msg is not msg:
            if out is None:
                out = list(messages)
            out[i] = new_msg
    return out


def _walk_message(msg: dict[str, Any], path: str, fn: TextFn) -> dict[str, Any]:
    new: dict[str, Any] | None = None
    content = msg.get("content")
    if isinstance(content, str):
        text = fn(content, f"{path}.content")
        if text is not content:
            new = dict(msg)
            new["content"] = text
    elif isinstance(content, list):
        parts: list[Any] | None = None
        for j, part in enumerate(content):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                text = fn(part["text"], f"{path}.content[{j}].text")
                if text is not part["text"]:
                    if parts is None:
                        parts = list(content)
                    parts[j] = {**part, "text": text}
        if parts is not None:
            new = dict(msg)
            new["content"] = parts
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        new_calls = _walk_calls(calls, f"{path}.tool_calls", fn)
        if new_calls is not None:
            new = dict(msg) if new is None else new
            new["tool_calls"] = new_calls
    fc = msg.get("function_call")
    if isinstance(fc, dict) and isinstance(fc.get("arguments"), str):
        args = fn(fc["arguments"], f"{path}.function_call.arguments")
        if args is not fc["arguments"]:
            new = dict(msg) if new is None else new
            new["function_call"] = {**fc, "arguments": args}
    return msg if new is None else new


def _walk_calls(calls: list[Any], path: str, fn: TextFn) -> list[Any] | None:
    out: list[Any] | None = None
    for k, call in enumerate(calls):
        f = call.get("function") if isinstance(call, dict) else None
        if isinstance(f, dict) and isinstance(f.get("arguments"), str):
            args = fn(f["arguments"], f"{path}[{k}].function.arguments")
            if args is not f["arguments"]:
                if out is None:
                    out = list(calls)
                out[k] = {**call, "function": {**f, "arguments": args}}
    return out


def guard_chat_request(
    body: dict[str, Any],
    scanner: PiiScanner,
    action: PiiAction,
    vault: Vault | None = None,
) -> PiiOutcome:
    """Apply ``action`` to a chat request body. ``redact_restore`` creates a vault if none given."""
    findings: list[BodyFinding] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return PiiOutcome(body, findings, vault)
    if action == "redact_restore" and vault is None:
        vault = Vault()
    replace: Replacer | None
    if action == "redact":
        replace = label_replacer
    elif action == "redact_restore":
        assert vault is not None
        replace = placeholder_replacer(vault)
    else:
        replace = None

    def visit(text: str, path: str) -> str:
        if replace is None:
            found, _ = step(scanner, text, 0, final=True)
            findings.extend(BodyFinding(f.entity, path) for f in found)
            return text
        new, found = redact_text(scanner, text, replace)
        findings.extend(BodyFinding(f.entity, path) for f in found)
        return new

    if action == "redact_restore":
        assert vault is not None
        reserve = vault.reserve_from

        def collect(text: str, path: str) -> str:
            reserve(text)
            return text

        _walk_messages(messages, collect)
    new_messages = _walk_messages(messages, visit)
    if action == "block" and findings:
        raise PiiBlocked(f.entity for f in findings)
    if new_messages is None:
        return PiiOutcome(body, findings, vault)
    return PiiOutcome({**body, "messages": new_messages}, findings, vault)


def _walk_response(body: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list):
        return body
    new_choices: list[Any] | None = None
    for i, choice in enumerate(choices):
        msg = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(msg, dict):
            continue
        new_msg = _walk_message(msg, "", lambda text, _path: fn(text))
        if new_msg is not msg:
            if new_choices is None:
                new_choices = list(choices)
            new_choices[i] = {**choice, "message": new_msg}
    return body if new_choices is None else {**body, "choices": new_choices}


def restore_chat_response(body: dict[str, Any], vault: Vault | None) -> dict[str, Any]:
    """A ``chat.completion`` body with placeholders in content/tool arguments restored."""
    if not vault:
        return body
    return _walk_response(body, lambda text: restore_text(vault, text))


def redact_chat_response(
    body: dict[str, Any], scanner: PiiScanner, replace: Replacer = label_replacer
) -> tuple[dict[str, Any], list[str]]:
    """Redact PII the model wrote in a ``chat.completion`` body; returns entity types found."""
    entities: list[str] = []

    def fn(text: str) -> str:
        found, _ = step(scanner, text, 0, final=True)
        if not found:
            return text
        entities.extend(f.entity for f in found)
        return render(text, 0, len(text), found, replace)

    return _walk_response(body, fn), entities
