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
    "GuardsConfig",
    "InjectionPolicy",
    "PiiEntity",
    "PiiPolicy",
    "TeamGuards",
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
    """Inline JSON Schemas by contract id (``name@version``)."""
    contract_files: dict[str, str] = Field(default_factory=dict)
    """Contract id -> path of a JSON Schema file."""
    contract_dir: str | None = None
    """Directory of ``<name>@<version>.json`` schema files."""

    @field_validator("contracts")
    @classmethod
    def _check_contracts(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for cid, schema in v.items():
            _check_id(cid)
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
