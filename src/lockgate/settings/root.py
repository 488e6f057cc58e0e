"""The root of lockgate.yaml: :class:`Config`, one field per section, and the checks
that span sections (model references, cache backend).

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

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from lockgate.settings.agents import AgentsSettings
from lockgate.settings.alerts import AlertsSettings
from lockgate.settings.base import Strict, resolve_secret
from lockgate.settings.cache import CacheSettings
from lockgate.settings.cdc import CdcConsumerSettings
from lockgate.settings.console import ConsoleSettings
from lockgate.settings.events import EventsSettings
from lockgate.settings.facades import FacadeSettings
from lockgate.settings.feedback import FeedbackSettings
from lockgate.settings.governance import BreakerConfig, GovernanceConfig
from lockgate.settings.guards import GuardsConfig
from lockgate.settings.jobs import JobsSettings
from lockgate.settings.kg import KnowledgeGraphSettings
from lockgate.settings.mining import MiningSettings
from lockgate.settings.models import ModelDeployment
from lockgate.settings.observability import LoggingSettings, TracingSettings
from lockgate.settings.policies import KillSwitchDefaults, ModelPolicy, Policy, TeamPolicy
from lockgate.settings.rag import RagConfig
from lockgate.settings.review import ReviewSettings
from lockgate.settings.server import AuditSettings, ServerSettings
from lockgate.settings.shadow import ShadowSettings

__all__ = ["DEFAULT_HOME", "Config"]

DEFAULT_HOME = Path(".lockgate")


class Config(Strict):
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
    events: EventsSettings = EventsSettings()
    """Event consumers run by every job worker (``lockgate up``'s, ``lockgate worker``)."""
    """Durable job queue, workers, tasks, alerts (lockgate.settings.jobs)."""
    rag: RagConfig = RagConfig()
    """Permission-aware RAG over HTTP and ``model: rag/<collection>`` (lockgate.api.rag)."""
    review: ReviewSettings = ReviewSettings()
    """Review policies per task, claims, SLAs, review webhooks (lockgate.review)."""
    feedback: FeedbackSettings = FeedbackSettings()
    """Feedback on calls, quality reports, drift detection (lockgate.feedback)."""
    alerts: AlertsSettings = AlertsSettings()
    """Where alerts are delivered, once per incident (lockgate.alerts)."""
    mining: MiningSettings = MiningSettings()
    """Process mining: default sources, reference paths, summary model (lockgate.mining)."""
    knowledge_graph: KnowledgeGraphSettings = KnowledgeGraphSettings()
    """Entities/relations of RAG passages for k-hop retrieval (lockgate.rag.graph)."""
    console: ConsoleSettings = ConsoleSettings()
    """The web console (/console) and the embeddable assistant panel (lockgate.console)."""
    facades: list[FacadeSettings] = Field(default_factory=list)
    """Reverse proxies in front of legacy HTTP services, with AI rules (lockgate.facade)."""
    cdc: list[CdcConsumerSettings] = Field(default_factory=list)
    """Change-data-capture consumers that ``lockgate worker`` runs (lockgate.cdc)."""
    agents: AgentsSettings = AgentsSettings()
    """Permissioned agents, their tools and grants (lockgate.agents)."""

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
        kg_model = self.knowledge_graph.extractor_model
        if kg_model is not None and kg_model not in names:
            raise ValueError(f"knowledge_graph.extractor_model: unknown model '{kg_model}'")
        if self.mining.summary_model is not None and self.mining.summary_model not in names:
            raise ValueError(f"mining.summary_model: unknown model '{self.mining.summary_model}'")
        _check_canaries(self.models)
        ids = {m.deployment_id for m in self.models}
        for task, rpolicy in self.review.policies.items():
            for dep in rpolicy.confidence.deployments:
                if dep not in ids:
                    raise ValueError(
                        f"review.policies.{task}.confidence.deployments: unknown deployment "
                        f"id '{dep}'"
                    )
        _check_facades(self.facades)
        for aname, agent in self.agents.agents.items():
            if agent.model not in names:
                raise ValueError(f"agents.agents.{aname}.model: unknown model '{agent.model}'")
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


def _check_canaries(models: list[ModelDeployment]) -> None:
    """A canary needs a stable deployment of its model and an id of its own."""
    for m in models:
        if m.canary is None:
            continue
        others = [o for o in models if o.name == m.name and o is not m]
        if not any(o.canary is None for o in others):
            raise ValueError(f"models[{m.name}]: canary deployment '{m.deployment_id}' needs "
                             "a stable (non-canary) deployment of the same model")
        if any(o.deployment_id == m.deployment_id for o in others):
            raise ValueError(f"models[{m.name}]: canary deployment '{m.deployment_id}' needs "
                             "an 'id' different from the model's other deployments")


def _check_facades(facades: list[FacadeSettings]) -> None:
    """Facade names and listen addresses are unique."""
    seen: set[str] = set()
    ports: set[tuple[str, int]] = set()
    for f in facades:
        if f.name in seen:
            raise ValueError(f"facades: duplicate name '{f.name}'")
        if (f.host, f.port) in ports:
            raise ValueError(f"facades[{f.name}]: {f.host}:{f.port} is used by another facade")
        seen.add(f.name)
        ports.add((f.host, f.port))
