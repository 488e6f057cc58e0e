"""lockgate.yaml as pydantic models, one module per section, and its loading.

A leaf package: it imports nothing from lockgate but :mod:`lockgate.errors` (and its own
modules), so every layer may import it. Settings hold data and validation only; the
features build their objects from them.

* :mod:`.base` -- :class:`Strict` (``extra="forbid"``, frozen), :func:`resolve_secret`;
* :mod:`.root` -- :class:`Config`, the whole file; :mod:`.loading` -- :func:`load_config`,
  :func:`parse_config` (line-numbered :class:`~lockgate.errors.ConfigError`),
  :func:`default_config`, :func:`apply_env` (``LOCKGATE_*`` overrides);
* sections: :mod:`.server` (``server:``, ``audit:``), :mod:`.models` (``models:``),
  :mod:`.rules` (``models[].rules:``), :mod:`.governance` (``governance:``, ``breaker:``,
  limits/budgets), :mod:`.policies` (``teams:``, ``keys:``, ``model_policies:``,
  ``kill_switch:``), :mod:`.cache`, :mod:`.guards`, :mod:`.jobs`, :mod:`.observability`
  (``tracing:``, ``logging:``), :mod:`.shadow`, :mod:`.rag`, :mod:`.feedback`, :mod:`.alerts`.
"""

from lockgate.settings.alerts import AlertsSettings
from lockgate.settings.base import Strict, resolve_secret
from lockgate.settings.cache import CacheSettings
from lockgate.settings.feedback import DriftSettings, FeedbackSettings
from lockgate.settings.governance import (
    BreakerConfig,
    BudgetConfig,
    FailurePolicy,
    GovernanceConfig,
    LimitsConfig,
)
from lockgate.settings.guards import (
    CONTRACT_ID_RE,
    GuardsConfig,
    InjectionPolicy,
    PiiEntity,
    PiiPolicy,
    TeamGuards,
)
from lockgate.settings.jobs import AlertSettings, JobsSettings, TaskSpec, TaskStep
from lockgate.settings.loading import apply_env, default_config, load_config, parse_config
from lockgate.settings.models import CanarySpec, ModelDeployment, Pricing, Timeouts
from lockgate.settings.observability import LoggingSettings, TracingSettings
from lockgate.settings.policies import KillSwitchDefaults, ModelPolicy, Policy, TeamPolicy
from lockgate.settings.rag import RagCollectionSettings, RagConfig
from lockgate.settings.review import ConfidenceSource, ReviewPolicy, ReviewSettings, ReviewWhen
from lockgate.settings.root import DEFAULT_HOME, Config
from lockgate.settings.rules import RulesHttp, RulesSpec
from lockgate.settings.server import AuditSettings, ServerSettings
from lockgate.settings.shadow import ShadowConfig, ShadowSettings

__all__ = [
    "CONTRACT_ID_RE",
    "DEFAULT_HOME",
    "AlertSettings",
    "AlertsSettings",
    "AuditSettings",
    "BreakerConfig",
    "BudgetConfig",
    "CacheSettings",
    "CanarySpec",
    "ConfidenceSource",
    "Config",
    "DriftSettings",
    "FailurePolicy",
    "FeedbackSettings",
    "GovernanceConfig",
    "GuardsConfig",
    "InjectionPolicy",
    "JobsSettings",
    "KillSwitchDefaults",
    "LimitsConfig",
    "LoggingSettings",
    "ModelDeployment",
    "ModelPolicy",
    "PiiEntity",
    "PiiPolicy",
    "Policy",
    "Pricing",
    "RagCollectionSettings",
    "RagConfig",
    "ReviewPolicy",
    "ReviewSettings",
    "ReviewWhen",
    "RulesHttp",
    "RulesSpec",
    "ServerSettings",
    "ShadowConfig",
    "ShadowSettings",
    "Strict",
    "TaskSpec",
    "TaskStep",
    "TeamGuards",
    "TeamPolicy",
    "Timeouts",
    "TracingSettings",
    "apply_env",
    "default_config",
    "load_config",
    "parse_config",
    "resolve_secret",
]
