"""What a tool is: a name, a class (read or write), an argument schema, a rate, a call.

Every tool, whatever its source (OpenAPI operation, MCP server, built-in), is a
:class:`Tool`. The step loop offers tools to the model in OpenAI's ``tools`` format
(:meth:`Tool.openai`), checks arguments against :attr:`Tool.parameters` (jsonschema) before a
call, and turns :class:`ToolFailed` (the tool ran and failed) and :class:`ToolRefused`
(it must not run) into a tool message for the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

if TYPE_CHECKING:
    from lockgate.pipeline import EndUser, Principal

__all__ = [
    "SubRunPaused",
    "Tool",
    "ToolClass",
    "ToolContext",
    "ToolFailed",
    "ToolRefused",
    "check_arguments",
    "definition_hash",
]

ToolClass = Literal["read", "write"]
MAX_RESULT_CHARS = 16000
"""A tool result longer than this is cut (with a note) before it goes to the model."""


class ToolFailed(Exception):
    """The tool ran (or tried to) and failed: the message goes to the model."""


class ToolRefused(Exception):
    """The call must not run (not offered, bad arguments, rate limit, open breaker)."""


class SubRunPaused(Exception):
    """A sub-run (``delegate``) waits for a person: the calling run parks until it ends."""

    def __init__(self, child_id: str) -> None:
        super().__init__(child_id)
        self.child_id = child_id


@dataclass(slots=True)
class ToolContext:
    """Who a tool call runs for, and where it sits in a run tree."""

    principal: Principal
    acting_for: EndUser | None
    run_id: str
    agent: str
    depth: int
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-run data a built-in needs (e.g. the delegation budget)."""


Call = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    klass: ToolClass
    call: Call
    rate_per_minute: int = 600
    source: str = "builtin"
    pauses: bool = False
    """True for ``ask_human``: the call itself waits for a person (a review item)."""
    _validator: Draft202012Validator | None = None

    def openai(self, *, approval_fields: bool = False) -> dict[str, Any]:
        params = self.parameters
        if approval_fields:  # the model says why and what it changes; stripped before the call
            props = dict(params.get("properties") or {})
            props["_rationale"] = {"type": "string",
                                   "description": "Why this change is needed (for the approver)."}
            props["_impact"] = {"type": "string",
                                "description": "What this change affects (for the approver)."}
            params = {**params, "properties": props}
        return {"type": "function", "function": {
            "name": self.name, "description": self.description[:1024], "parameters": params}}

    def validator(self) -> Draft202012Validator:
        if self._validator is None:
            self._validator = Draft202012Validator(self.parameters)
        return self._validator


def check_arguments(tool: Tool, raw: Any) -> dict[str, Any]:
    """The call's arguments as a dict that satisfies the tool's schema, else ToolRefused
    with the first error (the model sees it and may try again)."""
    if isinstance(raw, str):
        try:
            args = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise ToolRefused("arguments are not valid JSON") from None
    else:
        args = raw
    if not isinstance(args, dict):
        raise ToolRefused("arguments must be a JSON object")
    args = {k: v for k, v in args.items() if k not in ("_rationale", "_impact")}
    try:
        errors = sorted(tool.validator().iter_errors(args), key=lambda e: list(e.absolute_path))
    except (SchemaError, TypeError, ValueError, RecursionError) as exc:
        raise ToolRefused(f"the tool's schema cannot check the arguments: {exc}") from None
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise ToolRefused(f"arguments do not match the tool's schema at {where}: "
                          f"{first.message[:300]}")
    return args


def definition_hash(name: str, description: str, schema: Any) -> str:
    """sha256 of a tool definition (name, description, input schema; canonical JSON)."""
    doc = orjson.dumps({"name": name, "description": description or "",
                        "inputSchema": schema}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(doc).hexdigest()


def render_result(value: Any) -> str:
    """A tool's result as the text the model reads (JSON unless it is text already)."""
    text = value if isinstance(value, str) else orjson.dumps(
        value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [cut: {len(text)} characters in all]"
    return text
