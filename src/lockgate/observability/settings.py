"""Config models of the observation features: tracing, JSON logs and shadow traffic.

Pure pydantic, no other lockgate imports, so ``lockgate.config`` can import
them without an import cycle (``lockgate.shadow`` imports ``lockgate.config``,
so these cannot live there)::

    from lockgate.observability.settings import LoggingSettings, ShadowSettings, TracingSettings

    class Config(_Strict):
        ...
        tracing: TracingSettings = TracingSettings()
        logging: LoggingSettings = LoggingSettings()
        shadow: ShadowSettings | None = None
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LoggingSettings", "ShadowConfig", "ShadowSettings", "TracingSettings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TracingSettings(_Strict):
    """``tracing:``. Also switched on by ``OTEL_EXPORTER_OTLP_ENDPOINT`` in the environment."""

    enabled: bool = False
    exporter: Literal["otlp", "console", "memory"] = "otlp"
    """``otlp`` (HTTP/protobuf to ``endpoint`` or the OTEL_* env vars), ``console``
    (stdout), ``memory`` (tests)."""
    endpoint: str | None = None
    """OTLP base URL, e.g. http://collector:4318 (``/v1/traces`` is appended)."""
    service_name: str = "lockgate"
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)


class LoggingSettings(_Strict):
    """``logging:``: structured logs on stderr."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class ShadowConfig(_Strict):
    """One mirrored model: ``percent`` of its calls also go to ``candidate``."""

    model: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    """A deployment id (as in ``x-lockgate-deployment``), or a public model name
    (its first deployment)."""
    percent: float = Field(ge=0, le=100)
    timeout: float = Field(60.0, gt=0)
    """Seconds for one candidate call (on top of the deployment's own timeouts)."""


class ShadowSettings(_Strict):
    """``shadow:`` in lockgate.yaml."""

    routes: list[ShadowConfig] = Field(default_factory=list)
    concurrency: int = Field(4, ge=1, le=256)
    """Candidate calls in flight at once."""
    max_pending: int = Field(1000, ge=1)
    """Queued samples; when full, new samples are dropped (and counted)."""
    drain_timeout: float = Field(10.0, ge=0)
    """Seconds ``aclose`` waits for queued samples before abandoning them."""
