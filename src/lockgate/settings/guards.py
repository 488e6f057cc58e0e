"""``guards:``: PII, prompt injection and output contracts, strict, with defaults.

Example::

    guards:
      pii: {action: redact_restore, entities: [EMAIL, PHONE, CREDIT_CARD, IBAN]}
      injection: {action: flag, threshold: 0.5}
      teams:
        finance: {pii: {action: block}}
        research: {pii: {action: log_only}, injection: {action: block}}
      contracts:
        ticket-triage@2: {type: object, required: [queue], properties: {queue: {type: string}}}
      contract_files: {invoice@1: contracts/invoice-v1.json}
      contract_dir: contracts/

Output contracts on streams (``stream: true``). A contract entry is a JSON Schema, or
``{schema: {...}, stream: end|buffer}`` to choose how it applies to streamed answers;
``contract_stream`` is the default for every contract (including a request's own
``response_format`` json_schema)::

      contract_stream: end            # default
      contracts:
        invoice@3: {stream: buffer, schema: {type: object, required: [total]}}

- ``end`` (default): chunks reach the client as the model writes them; when the upstream
  stream ends, lockgate validates the assembled answer. Valid: the stream ends normally
  (``data: [DONE]``). Invalid: there is nothing left to repair, so the stream ends with an
  SSE error event (OpenAI error object, code ``output_contract_failed``; Anthropic
  ``event: error`` on ``/v1/messages``) and no ``[DONE]``; the call is audited as a 502.
- ``buffer``: lockgate takes the whole answer from the upstream first (a non-stream call),
  validates it, runs the one repair call when needed, and only then streams the validated
  answer to the client (headers such as ``x-lockgate-contract-repaired`` are then exact).
  Still invalid after the repair: an ordinary 502 ``output_contract_failed`` response,
  before any stream starts. The client waits for the whole answer before its first chunk.

A cached answer is validated against the request's contract too (stream or not); one that
does not satisfy it is treated as a miss.

Defaults: PII ``off`` (no cost on the hot path until a policy asks for it),
injection ``flag`` (record + header, never blocks), no contracts. Team
overrides replace the whole ``pii`` or ``injection`` block for that team and are
looked up by team id, then team name. The guards themselves are :mod:`lockgate.guards`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from jsonschema import exceptions as js_exceptions
from jsonschema import validators as js_validators
from pydantic import Field, field_validator

from lockgate.settings.base import Strict

__all__ = [
    "CONTRACT_ID_RE",
    "ContractStream",
    "GuardsConfig",
    "InjectionPolicy",
    "PiiEntity",
    "PiiPolicy",
    "TeamGuards",
    "split_contract_entry",
]

CONTRACT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}@[0-9]{1,6}$")
"""A contract id: ``name@version`` (``ticket-triage@2``)."""

PiiEntity = Literal[
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "IPV4",
    "IPV6",
    "US_SSN",
    "UK_NINO",
    "ES_NIF",
    "IT_FISCAL_CODE",
    "FR_NIR",
]
ContractStream = Literal["end", "buffer"]
"""How an output contract applies to a streamed answer (see the module doc)."""
_STREAM_MODES = ("end", "buffer")
_WRAPPER_KEYS = frozenset({"schema", "stream"})

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class PiiPolicy(Strict):
    action: Literal["off", "log_only", "redact", "redact_restore", "block"] = "off"
    """What to do with PII in requests."""
    entities: tuple[PiiEntity, ...] | None = None
    """Entity types to detect; None means all."""
    output: Literal["off", "log_only", "redact"] = "off"
    """What to do with PII the model writes in its answer."""

    @field_validator("entities")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError("entities must list at least one type (or be omitted for all)")
        return v


class InjectionPolicy(Strict):
    action: Literal["off", "flag", "block"] = "flag"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    """``block`` applies when the score reaches this value."""
    roles: tuple[Role, ...] = ("user", "tool", "function")
    """Message roles that are scanned (system prompts are the operator's own)."""


class TeamGuards(Strict):
    pii: PiiPolicy | None = None
    injection: InjectionPolicy | None = None


class GuardsConfig(Strict):
    pii: PiiPolicy = PiiPolicy()
    injection: InjectionPolicy = InjectionPolicy()
    teams: dict[str, TeamGuards] = Field(default_factory=dict)
    contracts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Inline contracts by id (``name@version``): a JSON Schema, or
    ``{schema: <JSON Schema>, stream: end|buffer}`` (see the module doc)."""
    contract_stream: ContractStream = "end"
    """How contracts apply to streams unless a contract says otherwise: ``end`` validates
    when the stream ends (a violation ends it with an SSE error event, no ``[DONE]``);
    ``buffer`` validates (and repairs) the whole answer before streaming it out."""
    contract_files: dict[str, str] = Field(default_factory=dict)
    """Contract id -> path of a JSON Schema file."""
    contract_dir: str | None = None
    """Directory of ``<name>@<version>.json`` schema files."""

    @field_validator("contracts")
    @classmethod
    def _check_contracts(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for cid, entry in v.items():
            _check_id(cid)
            try:
                schema, _mode = split_contract_entry(entry)
            except ValueError as exc:
                raise ValueError(f"contract '{cid}': {exc}") from None
            vcls = js_validators.validator_for(schema, default=js_validators.Draft202012Validator)
            try:
                vcls.check_schema(schema)
            except js_exceptions.SchemaError as exc:
                raise ValueError(f"contract '{cid}': invalid JSON Schema: {exc.message}") from None
        return v

    @field_validator("contract_files")
    @classmethod
    def _check_file_ids(cls, v: dict[str, str]) -> dict[str, str]:
        for cid in v:
            _check_id(cid)
        return v

    def _team(self, team_id: str | None, team_name: str | None) -> TeamGuards | None:
        if team_id is not None and team_id in self.teams:
            return self.teams[team_id]
        if team_name is not None and team_name in self.teams:
            return self.teams[team_name]
        return None

    def pii_for(self, team_id: str | None = None, team_name: str | None = None) -> PiiPolicy:
        team = self._team(team_id, team_name)
        return team.pii if team is not None and team.pii is not None else self.pii

    def injection_for(
        self, team_id: str | None = None, team_name: str | None = None
    ) -> InjectionPolicy:
        team = self._team(team_id, team_name)
        if team is not None and team.injection is not None:
            return team.injection
        return self.injection


def _check_id(cid: str) -> None:
    if not CONTRACT_ID_RE.match(cid):
        raise ValueError(f"'{cid}' is not a contract id like 'ticket-triage@2'")


def split_contract_entry(entry: Any) -> tuple[dict[str, Any], ContractStream | None]:
    """``(schema, stream mode or None)`` of one contract entry (a schema, or the
    ``{schema, stream}`` wrapper). ValueError for a bad ``stream`` value or a non-object."""
    if not isinstance(entry, dict):
        raise ValueError("a contract must be a JSON Schema object")
    if "schema" in entry and isinstance(entry["schema"], dict) and set(entry) <= _WRAPPER_KEYS:
        mode = entry.get("stream")
        if mode is not None and mode not in _STREAM_MODES:
            raise ValueError(f"stream must be 'end' or 'buffer', not {mode!r}")
        return entry["schema"], mode
    return entry, None
