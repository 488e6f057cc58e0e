"""``agents:`` section of lockgate.yaml: permissioned agents, their tools and grants.

Example::

    agents:
      grants:                              # default deny: no grant, no tool
        teams: {ops: ["twin__*", "rag__manual", "ask_human", "delegate"]}
        keys: {plant-bot: ["twin__*"]}     # by key name or id (narrows the team's grant)
        end_users: {"group:operators": ["*"], "user:alice": ["twin__get*"]}
      tools:
        openapi:
          twin:                            # tools twin__<operationId>
            spec: examples/plant_twin/openapi.json     # a file, read on first use
            base_url: http://127.0.0.1:8710
            auth: {header: Authorization, value: "env:TWIN_TOKEN", prefix: "Bearer "}
            classes: {resetAlarms: read}   # GET/HEAD are read, others write unless declared
            rate_per_minute: 120
        rag: {manual: {collection: plant-manual, k: 4}}     # tool rag__manual
        sql: {plant: {url: "postgresql://...", row_cap: 200, timeout_s: 2}}  # sql__plant
        mcp:
          files: {transport: stdio, command: [python, -m, some_server], pins: {read: <sha256>}}
          remote: {transport: http, url: http://127.0.0.1:9000/mcp}
      breaker: {window_s: 60, min_calls: 5, error_rate: 0.5, pause_s: 60}
      loop_repeats: 3                      # the same call (name + arguments) 3 times: stop
      agents:
        plant:
          model: fast
          instructions: You look after the pumps of plant 7.
          tools: ["twin__*", "rag__manual"]
          mode: approve_writes             # read_only | approve_writes | autonomous
          max_steps: 12
          max_cost: 0.50
          timeout_s: 120
          allowed_teams: [ops]
          reviewers: [ops-leads]
          output_contract: {type: object, required: [answer]}

Tool names are OpenAI function names (``[A-Za-z0-9_-]{1,64}``): ``<source>__<name>``.
Built-ins that need no configuration: ``ask_human`` (a review item the run waits for),
``submit_job`` (``jobs.tasks``) and ``delegate`` (offered when ``delegates`` is set).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lockgate.settings.base import Strict

__all__ = [
    "AgentBreaker",
    "AgentGrants",
    "AgentSpec",
    "AgentsSettings",
    "McpServerSpec",
    "OpenApiAuth",
    "OpenApiSource",
    "RagToolSpec",
    "SqlToolSpec",
    "ToolSources",
]

AgentMode = Literal["read_only", "approve_writes", "autonomous"]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_GLOB_RE = re.compile(r"^[A-Za-z0-9_*?-]{1,80}$")


def _check_name(v: str, what: str) -> str:
    if not NAME_RE.match(v) or "__" in v:
        raise ValueError(f"{what} '{v}': 1-48 letters, digits, '_' or '-' (no '__')")
    return v


def _check_globs(v: list[str], what: str) -> list[str]:
    for g in v:
        if not _GLOB_RE.match(g):
            raise ValueError(f"{what}: '{g}' is not a tool name pattern "
                             "(letters, digits, '_', '-', '*', '?')")
    return v


class OpenApiAuth(Strict):
    header: str = Field("Authorization", min_length=1, max_length=100)
    value: str = Field(min_length=1)
    """The secret, normally ``env:NAME`` (resolved when the tool is first used)."""
    prefix: str = ""


class OpenApiSource(Strict):
    spec: str = Field(min_length=1)
    """Path of the OpenAPI 3 document (JSON or YAML)."""
    base_url: str | None = None
    """Overrides the document's first ``servers`` URL."""
    auth: OpenApiAuth | None = None
    classes: dict[str, Literal["read", "write"]] = Field(default_factory=dict)
    """operationId -> class, overriding the method's default (GET/HEAD read, others write)."""
    include: list[str] = Field(default_factory=list)
    """Only these operationIds (empty: every operation that has one)."""
    rate_per_minute: int = Field(600, ge=1)
    timeout_s: float = Field(10.0, gt=0, le=300)


class RagToolSpec(Strict):
    collection: str = Field(min_length=1, max_length=64)
    k: int = Field(4, ge=1, le=20)
    rate_per_minute: int = Field(600, ge=1)


class SqlToolSpec(Strict):
    url: str = Field(min_length=1)
    """SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``; ``env:NAME`` allowed)."""
    row_cap: int = Field(100, ge=1, le=10000)
    timeout_s: float = Field(2.0, gt=0, le=60)
    description: str = "Run one read-only SQL query (SELECT) and get the rows as JSON."
    rate_per_minute: int = Field(120, ge=1)


class McpServerSpec(Strict):
    transport: Literal["stdio", "http"]
    command: list[str] = Field(default_factory=list)
    """For stdio: the program and its arguments."""
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    """For http: the streamable-HTTP endpoint."""
    headers: dict[str, str] = Field(default_factory=dict)
    """For http: sent with every request (values may be ``env:NAME``)."""
    pins: dict[str, str] = Field(default_factory=dict)
    """tool name -> sha256 of its definition; unpinned tools are pinned on first sight."""
    classes: dict[str, Literal["read", "write"]] = Field(default_factory=dict)
    """tool -> class (MCP's ``readOnlyHint`` annotation decides otherwise; default write)."""
    timeout_s: float = Field(20.0, gt=0, le=600)
    rate_per_minute: int = Field(600, ge=1)
    pool: bool = True
    """One session per server, kept open and reopened when it dies (false: one per call)."""

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerSpec:
        if self.transport == "stdio" and not self.command:
            raise ValueError("an stdio MCP server needs 'command'")
        if self.transport == "http" and not self.url:
            raise ValueError("an http MCP server needs 'url'")
        return self


class ToolSources(Strict):
    openapi: dict[str, OpenApiSource] = Field(default_factory=dict)
    rag: dict[str, RagToolSpec] = Field(default_factory=dict)
    sql: dict[str, SqlToolSpec] = Field(default_factory=dict)
    mcp: dict[str, McpServerSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> ToolSources:
        seen: set[str] = set()
        for kind in ("openapi", "rag", "sql", "mcp"):
            for name in getattr(self, kind):
                _check_name(name, f"agents.tools.{kind}")
                if name in seen:
                    raise ValueError(f"agents.tools: the source name '{name}' is used twice")
                seen.add(name)
        return self


class AgentGrants(Strict):
    teams: dict[str, list[str]] = Field(default_factory=dict)
    keys: dict[str, list[str]] = Field(default_factory=dict)
    end_users: dict[str, list[str]] = Field(default_factory=dict)
    """``user:<id>`` or ``group:<name>`` -> tool patterns (verified end users only)."""

    @model_validator(mode="after")
    def _globs(self) -> AgentGrants:
        for part in ("teams", "keys", "end_users"):
            for who, globs in getattr(self, part).items():
                _check_globs(globs, f"agents.grants.{part}.{who}")
        for who in self.end_users:
            if not who.startswith(("user:", "group:")):
                raise ValueError(f"agents.grants.end_users: '{who}' must start with "
                                 "'user:' or 'group:'")
        return self


class AgentBreaker(Strict):
    window_s: float = Field(60.0, gt=0)
    min_calls: int = Field(5, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1)
    pause_s: float = Field(60.0, gt=0)


class AgentSpec(Strict):
    model: str = Field(min_length=1)
    instructions: str = ""
    tools: list[str] = Field(default_factory=list)
    """Tool name patterns (``twin__*``, ``ask_human``)."""
    mode: AgentMode = "approve_writes"
    max_steps: int = Field(10, ge=1, le=200)
    """Model turns per run."""
    max_cost: float | None = Field(None, ge=0)
    """Money per run (the pipeline's prices); the run stops when it is reached."""
    timeout_s: float = Field(120.0, gt=0, le=86400)
    """Active time per run (time spent waiting for a person is not counted)."""
    allowed_teams: list[str] = Field(default_factory=list)
    """Empty: any team whose grants allow the tools; else only these teams (and admins)."""
    reviewers: list[str] = Field(default_factory=list)
    """Teams that approve this agent's writes (the first owns the queue; none: admins)."""
    review_sla_s: float = Field(3600.0, gt=0)
    output_contract: dict[str, Any] | None = None
    """JSON Schema the final answer (parsed as JSON) must satisfy; one repair turn."""
    delegates: list[str] = Field(default_factory=list)
    """Agents this one may hand sub-tasks to (the ``delegate`` tool)."""
    max_depth: int = Field(2, ge=1, le=8)
    max_fanout: int = Field(4, ge=1, le=50)
    """Delegations per run."""
    on_tool_failure: Literal["continue", "stop"] = "continue"
    """A tool that fails (server died, HTTP 5xx): the error goes to the model, or the run
    stops."""
    description: str = ""

    @field_validator("tools")
    @classmethod
    def _tool_globs(cls, v: list[str]) -> list[str]:
        return _check_globs(v, "agents.agents.<name>.tools")

    @field_validator("output_contract")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(v)
            except SchemaError as exc:
                raise ValueError(f"output_contract is not a JSON Schema: {exc.message}"
                                 ) from None
        return v


class AgentsSettings(Strict):
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    tools: ToolSources = ToolSources()
    grants: AgentGrants = AgentGrants()
    breaker: AgentBreaker = AgentBreaker()
    loop_repeats: int = Field(3, ge=2, le=50)
    max_parallel_runs: int = Field(64, ge=1)
    """Background runs (``/v1/agents/<name>/runs``) per process."""
    lease_s: float = Field(30.0, ge=0.5, le=3600)
    """A running run's lease: its gateway renews it every ``lease_s / 3``; a run whose lease
    ran out (the gateway died) is taken over by another gateway and continued."""

    @model_validator(mode="after")
    def _refs(self) -> AgentsSettings:
        for name, spec in self.agents.items():
            _check_name(name, "agents.agents")
            for d in spec.delegates:
                if d not in self.agents:
                    raise ValueError(f"agents.agents.{name}.delegates: unknown agent '{d}'")
        return self
