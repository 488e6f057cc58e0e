"""lockgate.yaml: pydantic models, loading with line-numbered errors, env overrides.

``load_config(path)`` returns a validated :class:`Config` or raises
:class:`~lockgate.errors.ConfigError` whose message is one line naming the file,
the line and the field, e.g.::

    lockgate.yaml:7: models[1].provider: Input should be 'openai', 'anthropic', ...

Secrets are given by reference (``env:NAME``) and resolved when a provider is
built, never written back.

Governance (all optional; nothing configured = no state round-trips, no guard work)::

    redis_url: redis://127.0.0.1:6379/0     # shared by every gateway; env LOCKGATE_REDIS_URL
    governance: {budgets_on_state_error: fail_closed, default_max_tokens: 1024}
    breaker: {min_requests: 10, failure_rate: 0.5, open_seconds: 30}   # null: off
    guards: {pii: {action: redact_restore}, injection: {action: flag}}  # lockgate.guards
    cache: {enabled: true, ttl_seconds: 300}    # exact match, per team, non-stream only
    teams:                                      # by team name or id
      finance:
        limits: {rpm: 600, tpm: 200000}         # shared by the team's keys
        budget: {daily: 50.0, monthly: 1000.0}
        key_limits: {rpm: 60}                   # each key of the team on its own
    keys:                                       # by key name or id (overrides key_limits)
      batch-importer: {limits: {rpm: 5}, budget: {daily_tokens: 2000000}}
    model_policies:
      gpt-big: {budget: {daily: 200.0}, fallback_model: offline-answer}
    tasks: {legal: legal-model, classify: cheap-model}   # x-lockgate-task / metadata.task
    kill_switch: {models: [], teams: []}        # start values; admin API/CLI change them
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lockgate.errors import ConfigError
from lockgate.governance.config import (
    BreakerConfig,
    BudgetConfig,
    GovernanceConfig,
    LimitsConfig,
)
from lockgate.guards.config import GuardsConfig
from lockgate.jobs.config import JobsSettings
from lockgate.observability.settings import LoggingSettings, ShadowSettings, TracingSettings
from lockgate.providers.rules import RulesSpec

DEFAULT_HOME = Path(".lockgate")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pricing(_Strict):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        cost = prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        return cost / 1e6


class Timeouts(_Strict):
    """Seconds. ``first_token`` and ``idle`` apply to streams and to the wait for headers."""

    connect: float = Field(5.0, gt=0)
    first_token: float = Field(60.0, gt=0)
    idle: float = Field(30.0, gt=0)
    total: float = Field(600.0, gt=0)


class ModelDeployment(_Strict):
    """One upstream deployment behind a public model name.

    Several entries may share a ``name``: they are the deployments of one
    public model (weights, fallbacks).
    """

    name: str = Field(min_length=1)
    provider: Literal["openai", "anthropic", "llamacpp", "embedded", "rules"]
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    path: str | None = None
    mode: Literal["chat", "embeddings"] = "chat"
    pricing: Pricing = Pricing()
    timeouts: Timeouts = Timeouts()
    max_retries: int = Field(1, ge=0, le=10)
    weight: float = Field(1.0, ge=0)
    id: str | None = None
    """Deployment id shown in ``x-lockgate-deployment``; defaults to ``name/provider:model``."""
    n_ctx: int = Field(2048, ge=256)
    n_threads: int | None = Field(None, ge=1)
    max_concurrency: int = Field(64, ge=1)
    rules: RulesSpec | None = None
    """``provider: rules`` only: the non-AI answer (fixed, template or http)."""

    @model_validator(mode="after")
    def _check_provider_fields(self) -> ModelDeployment:
        if self.provider == "rules" and self.rules is None:
            raise ValueError("provider 'rules' needs 'rules' (fixed, template or http)")
        if self.provider in ("openai", "anthropic") and not self.model:
            raise ValueError(f"provider '{self.provider}' needs 'model' (the upstream model id)")
        if self.provider == "openai" and not self.base_url:
            raise ValueError("provider 'openai' needs 'base_url' (any OpenAI-compatible server)")
        if self.provider in ("llamacpp", "embedded") and not self.path:
            raise ValueError("provider 'llamacpp' needs 'path' (bundled:... or a file path)")
        if self.api_key is not None and self.api_key.startswith("env:") and len(self.api_key) <= 4:
            raise ValueError("api_key 'env:' needs a variable name, e.g. env:OPENAI_API_KEY")
        return self

    @property
    def deployment_id(self) -> str:
        if self.id:
            return self.id
        return f"{self.name}/{self.provider}:{self.model or self.path or '-'}"

    def resolved_api_key(self) -> str | None:
        """The API key with ``env:NAME`` resolved; ConfigError if the variable is unset."""
        return resolve_secret(self.api_key, f"models[{self.name}].api_key")


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=1, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    workers: int = Field(1, ge=1, le=64)


class AuditSettings(_Strict):
    flush_interval_ms: int = Field(200, ge=10)
    batch_size: int = Field(500, ge=1)
    max_queue: int = Field(100_000, ge=100)


class Policy(_Strict):
    """Rate limits and budget of one key, team or model (either may be omitted)."""

    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None

    def is_empty(self) -> bool:
        return (self.limits is None or self.limits.is_empty()) and (
            self.budget is None or self.budget.is_empty()
        )


class TeamPolicy(Policy):
    """``teams.<team name or id>``: limits/budget shared by all the team's keys, and the
    limits/budget every key of the team gets on its own (``key_limits``/``key_budget``)."""

    key_limits: LimitsConfig | None = None
    key_budget: BudgetConfig | None = None


class ModelPolicy(Policy):
    """``model_policies.<public model>``: limits/budget over all callers, kill-switch fallback."""

    fallback_model: str | None = None
    """Model answering when this one is switched off (typically a ``provider: rules`` one)."""


class CacheSettings(_Strict):
    """Exact-match response cache (non-stream chat and embeddings), keyed per team."""

    enabled: bool = False
    ttl_seconds: float = Field(300.0, gt=0)
    backend: Literal["auto", "memory", "redis"] = "auto"
    """``auto``: the shared state backend (Redis when ``redis_url`` is set, else memory)."""


class KillSwitchDefaults(_Strict):
    """Models and teams switched off at start (the admin API/CLI changes them at run time)."""

    models: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)


class RagCollectionSettings(_Strict):
    """Per-collection RAG settings; ``threshold`` overrides a calibrated/default one."""

    threshold: float | None = Field(None, ge=0)
    """Refusal threshold on the confidence score (cosine or bm25_norm); None = stored/default."""
    threshold_kind: Literal["cosine", "bm25_norm"] | None = None
    """Apply ``threshold`` only when the query's confidence is this kind; None = any."""


class RagConfig(_Strict):
    """The RAG front door (lockgate.api.rag): models, refusal, signed end-user identity."""

    embed_model: str | None = None
    """Embeddings model (a configured name) for new collections; None = BM25 only."""
    generation_model: str | None = None
    """Chat model for answers; None = extractive answers (best passages, cited)."""
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"
    k: int = Field(5, ge=1, le=50)
    end_user_secret: str | None = None
    """HMAC key (``env:NAME``) for the ``x-lockgate-end-user`` header; None = header refused."""
    end_user_max_age: float = Field(300.0, gt=0)
    """Seconds a signed end-user header stays valid (clock skew allowed the same way)."""
    collections: dict[str, RagCollectionSettings] = Field(default_factory=dict)

    @field_validator("end_user_secret")
    @classmethod
    def _secret_len(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("env:") and len(v) < 16:
            raise ValueError("end_user_secret must be env:NAME or at least 16 characters")
        return v

    def resolved_end_user_secret(self) -> str | None:
        return resolve_secret(self.end_user_secret, "rag.end_user_secret")


class Config(_Strict):
    server: ServerSettings = ServerSettings()
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<home>/lockgate.db``. ``postgresql://`` works too."""
    master_key: str | None = None
    home: str = str(DEFAULT_HOME)
    log_bodies: bool = False
    key_cache_ttl: float = Field(5.0, ge=0)
    audit: AuditSettings = AuditSettings()
    models: list[ModelDeployment] = Field(default_factory=list)
    redis_url: str | None = None
    """Shared state for many gateways (limits, budgets, breakers, cache, invalidations).
    Unset: in-process state (one gateway). ``LOCKGATE_REDIS_URL`` overrides."""
    redis_prefix: str = Field("lg:", min_length=1)
    governance: GovernanceConfig = GovernanceConfig()
    breaker: BreakerConfig | None = BreakerConfig()
    """Per-deployment circuit breaker; ``null`` turns it off."""
    guards: GuardsConfig | None = None
    """PII, injection and output contracts; unset means no guard work at all."""
    cache: CacheSettings = CacheSettings()
    teams: dict[str, TeamPolicy] = Field(default_factory=dict)
    """By team name or id."""
    keys: dict[str, Policy] = Field(default_factory=dict)
    """By key name or key id; overrides ``teams.<t>.key_limits``/``key_budget`` for that key."""
    model_policies: dict[str, ModelPolicy] = Field(default_factory=dict)
    tasks: dict[str, str] = Field(default_factory=dict)
    """Task -> public model (``x-lockgate-task`` header or ``metadata.task`` in the body)."""
    kill_switch: KillSwitchDefaults = KillSwitchDefaults()
    shadow: ShadowSettings | None = None
    """Mirror a share of a model's calls to a candidate deployment (lockgate.shadow)."""
    tracing: TracingSettings = TracingSettings()
    """OpenTelemetry spans per pipeline stage (off unless enabled or OTEL_EXPORTER_OTLP_*)."""
    logging: LoggingSettings = LoggingSettings()
    """Structured logs: ``{level, format: json|console}``; every line carries the request id."""
    jobs: JobsSettings = JobsSettings()
    """Durable job queue, workers, tasks, alerts (lockgate.jobs.config)."""
    rag: RagConfig = RagConfig()
    """Permission-aware RAG over HTTP and ``model: rag/<collection>`` (lockgate.api.rag)."""

    @model_validator(mode="after")
    def _check_model_refs(self) -> Config:
        names = {m.name for m in self.models}
        for task, model in self.tasks.items():
            if model not in names:
                raise ValueError(f"tasks.{task}: unknown model '{model}'")
        for model, policy in self.model_policies.items():
            if model not in names:
                raise ValueError(f"model_policies.{model}: unknown model '{model}'")
            fb = policy.fallback_model
            if fb is not None and (fb not in names or fb == model):
                raise ValueError(
                    f"model_policies.{model}.fallback_model: '{fb}' must be another "
                    "configured model"
                )
        for model in self.kill_switch.models:
            if model not in names:
                raise ValueError(f"kill_switch.models: unknown model '{model}'")
        for field_name in ("embed_model", "generation_model"):
            ref = getattr(self.rag, field_name)
            if ref is not None and ref not in names:
                raise ValueError(f"rag.{field_name}: unknown model '{ref}'")
        if self.cache.backend == "redis" and not self.redis_url:
            raise ValueError("cache.backend 'redis' needs redis_url")
        return self

    @field_validator("master_key")
    @classmethod
    def _master_key_len(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("env:") and len(v) < 16:
            raise ValueError("master_key must be at least 16 characters")
        return v

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_path / 'lockgate.db'}"

    def resolved_master_key(self) -> str | None:
        return resolve_secret(self.master_key, "master_key")

    def model_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.models:
            seen.setdefault(m.name, None)
        return list(seen)

    def deployments_for(self, name: str) -> list[ModelDeployment]:
        return [m for m in self.models if m.name == name]


def resolve_secret(value: str | None, field: str) -> str | None:
    if value is None or not value.startswith("env:"):
        return value
    var = value[4:]
    resolved = os.environ.get(var)
    if resolved is None:
        raise ConfigError(f"{field}: environment variable {var} is not set")
    return resolved


# ---------------------------------------------------------------- loading


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate YAML text into a Config; ConfigError names the line and field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping (key: value)")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and ": " in msg:
            # a cross-field check names its field at the front: "tasks.legal: unknown ..."
            head, _, rest = msg.partition(": ")
            if " " not in head:
                loc = tuple(int(p) if p.isdigit() else p for p in head.split("."))
                msg = rest
        line = None
        probe = loc
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        where = f":{line}" if line else ""
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{source}{where}: {_fmt_loc(loc)}: {msg}{more}") from None


def load_config(path: str | Path | None) -> Config:
    """Read a config file (or the embedded default when ``path`` is None), then env overrides."""
    if path is None:
        config = default_config()
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read: {exc}") from None
        config = parse_config(text, str(p))
    return apply_env(config)


def default_config() -> Config:
    """The embedded default: SQLite under .lockgate/, the bundled local model as ``local``."""
    return Config(
        models=[ModelDeployment(name="local", provider="llamacpp", path="bundled:gemma-3-270m")]
    )


def apply_env(config: Config) -> Config:
    """``LOCKGATE_*`` environment variables override the file."""
    updates: dict[str, Any] = {}
    if v := os.environ.get("LOCKGATE_MASTER_KEY"):
        updates["master_key"] = v
    if v := os.environ.get("LOCKGATE_DATABASE_URL"):
        updates["database_url"] = v
    if v := os.environ.get("LOCKGATE_HOME"):
        updates["home"] = v
    if v := os.environ.get("LOCKGATE_REDIS_URL"):
        updates["redis_url"] = v
    if not updates:
        return config
    try:
        return Config.model_validate({**config.model_dump(), **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"environment: {_fmt_loc(tuple(err['loc']))}: {err['msg']}") from None
