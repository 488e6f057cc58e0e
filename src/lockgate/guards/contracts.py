"""Output contracts: versioned JSON Schemas a model's JSON answer must satisfy.

A contract id is ``name@version`` (``ticket-triage@2``). Schemas come from
config (inline, or one file per id) and are checked once at load
(Draft 2020-12 unless the schema names another ``$schema``); validators are
compiled once and reused.

The pipeline's repair loop uses these pieces:

1. ``contract = registry.get("ticket-triage@2")``
2. ``result = contract.check_completion(completion_body)`` - parses the JSON
   from ``message.content`` (code fences tolerated) or from the first tool
   call's ``arguments``; ``result.errors`` is a short list of strings.
3. if not ``result.ok``: ``build_repair_messages(messages, result.raw, result.errors)``
   gives the messages for one more model call.
4. still invalid at the end: ``raise ContractViolation(contract.id, result.errors)``.

Streams: :attr:`Contract.stream` is how the contract applies to a streamed answer
(``end``: validate the assembled answer when the stream ends, a violation ends the stream
with an SSE error event and no ``[DONE]``; ``buffer``: validate and repair the whole answer
before streaming it out); ``None`` means the configured default
(``guards.contract_stream``, see :mod:`lockgate.settings.guards`). A config or file entry
may be a bare schema or ``{"schema": {...}, "stream": "buffer"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonschema import exceptions as js_exceptions
from jsonschema import validators as js_validators
from jsonschema.protocols import Validator

from lockgate.errors import ConfigError
from lockgate.guards.errors import ContractNotFound
from lockgate.settings.guards import CONTRACT_ID_RE, ContractStream, split_contract_entry

__all__ = [
    "Contract",
    "ContractCheck",
    "ContractRegistry",
    "build_repair_messages",
    "extract_json_text",
]

MAX_ERRORS = 10
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """The outcome of checking one output against a contract."""

    ok: bool
    value: Any
    """The parsed JSON (None when it did not parse)."""
    errors: tuple[str, ...]
    raw: str
    """The text that was checked (content or tool arguments)."""
    source: Literal["content", "tool_call", "none"]


def extract_json_text(text: str) -> str:
    """Strip a surrounding Markdown code fence, if any."""
    m = _FENCE.match(text)
    return m.group(1) if m else text.strip()


def _path(error: js_exceptions.ValidationError) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(value: str, limit: int = 160) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


class Contract:
    """One versioned schema with its compiled validator."""

    __slots__ = ("id", "name", "schema", "stream", "validator", "version")

    def __init__(
        self, contract_id: str, schema: Mapping[str, Any], stream: ContractStream | None = None
    ) -> None:
        if not CONTRACT_ID_RE.match(contract_id):
            raise ConfigError(
                f"contracts: '{contract_id}' is not a contract id like 'ticket-triage@2'"
            )
        schema = dict(schema)
        cls = js_validators.validator_for(schema, default=js_validators.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except js_exceptions.SchemaError as exc:
            raise ConfigError(
                f"contracts.{contract_id}: invalid JSON Schema: {_short(exc.message)}"
            ) from None
        self.id = contract_id
        self.name, version = contract_id.rsplit("@", 1)
        self.version = int(version)
        self.schema = schema
        self.stream: ContractStream | None = stream
        """Stream semantics (``end``/``buffer``); None: the configured default."""
        self.validator: Validator = cls(self.schema, format_checker=cls.FORMAT_CHECKER)

    def validate(self, value: Any) -> list[str]:
        """Concise error strings (``$.path: message``), at most MAX_ERRORS, stable order."""
        errors = sorted(
            self.validator.iter_errors(value),
            key=lambda e: (list(map(str, e.absolute_path)), e.message),
        )
        out = [f"{_path(e)}: {_short(e.message)}" for e in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            out.append(f"... and {len(errors) - MAX_ERRORS} more errors")
        return out

    def check_text(
        self, text: str, source: Literal["content", "tool_call", "none"] = "content"
    ) -> ContractCheck:
        """Parse ``text`` as JSON (fences tolerated) and validate it."""
        try:
            value = json.loads(extract_json_text(text))
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = getattr(exc, "msg", type(exc).__name__)
            pos = getattr(exc, "pos", None)
            where = f" at character {pos}" if pos is not None else ""
            return ContractCheck(False, None, (f"$: not valid JSON: {msg}{where}",), text, source)
        errors = self.validate(value)
        return ContractCheck(not errors, value, tuple(errors), text, source)

    def check_completion(
        self, body: Mapping[str, Any], *, tool_name: str | None = None
    ) -> ContractCheck:
        """Check choice 0 of a ``chat.completion``: tool-call arguments when the model
        called a tool (the one named ``tool_name``, if given), else ``message.content``."""
        choices = body.get("choices") or []
        msg = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
        if not isinstance(msg, dict):
            return ContractCheck(False, None, ("$: the answer has no message",), "", "none")
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict):
                continue
            if tool_name is not None and fn.get("name") != tool_name:
                continue
            return self.check_text(str(fn.get("arguments") or ""), "tool_call")
        content = msg.get("content")
        if isinstance(content, str) and content.strip():
            return self.check_text(content, "content")
        return ContractCheck(False, None, ("$: the answer is empty",), "", "none")


class ContractRegistry:
    """All contracts by id; built once from config."""

    __slots__ = ("_contracts",)

    def __init__(self, contracts: Mapping[str, Contract] | None = None) -> None:
        self._contracts: dict[str, Contract] = dict(contracts or {})

    @classmethod
    def build(
        cls,
        inline: Mapping[str, Mapping[str, Any]] | None = None,
        files: Mapping[str, str | Path] | None = None,
        directory: str | Path | None = None,
    ) -> ContractRegistry:
        """Inline schemas, ``{id: path}`` files and ``<dir>/<id>.json`` files; ids are unique."""
        found: dict[str, Contract] = {}

        def add(cid: str, entry: Any, origin: str) -> None:
            if cid in found:
                raise ConfigError(f"contracts: '{cid}' is defined twice (again in {origin})")
            if not isinstance(entry, Mapping):
                raise ConfigError(f"contracts.{cid}: the schema must be a JSON object ({origin})")
            try:
                schema, stream = split_contract_entry(dict(entry))
            except ValueError as exc:
                raise ConfigError(f"contracts.{cid}: {exc} ({origin})") from None
            found[cid] = Contract(cid, schema, stream)

        for cid, schema in (inline or {}).items():
            add(cid, schema, "config")
        for cid, path in (files or {}).items():
            add(cid, _read_json(Path(path), cid), str(path))
        if directory is not None:
            d = Path(directory)
            if not d.is_dir():
                raise ConfigError(f"contracts: directory {d} does not exist")
            for p in sorted(d.glob("*.json")):
                add(p.stem, _read_json(p, p.stem), str(p))
        return cls(found)

    def get(self, contract_id: str) -> Contract:
        c = self._contracts.get(contract_id)
        if c is None:
            raise ContractNotFound(f"Unknown output contract '{contract_id}'", param="contract")
        return c

    def ids(self) -> list[str]:
        return sorted(self._contracts)

    def __contains__(self, contract_id: object) -> bool:
        return contract_id in self._contracts

    def __len__(self) -> int:
        return len(self._contracts)


def _read_json(path: Path, cid: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"contracts.{cid}: no such file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"contracts.{cid}: cannot read {path}: {exc}") from None


def build_repair_messages(
    original_messages: list[dict[str, Any]],
    bad_output: str,
    errors: list[str] | tuple[str, ...],
    contract: Contract | None = None,
) -> list[dict[str, Any]]:
    """Messages for a repair attempt: the conversation, the bad answer, and what to fix.

    The original list is not modified. The schema is included when ``contract``
    is given (compact JSON), so the model can see every constraint.
    """
    lines = [
        "Your previous answer is not valid for the required JSON format.",
        "Problems:",
        *[f"- {e}" for e in errors[:MAX_ERRORS]],
    ]
    if contract is not None:
        schema = json.dumps(contract.schema, separators=(",", ":"), sort_keys=True)
        lines += [f"The answer must be JSON matching this schema ({contract.id}):", schema]
    lines.append("Reply with the corrected JSON only: no explanations, no Markdown code fences.")
    return [
        *original_messages,
        {"role": "assistant", "content": bad_output},
        {"role": "user", "content": "\n".join(lines)},
    ]
