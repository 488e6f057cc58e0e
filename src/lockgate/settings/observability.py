"""``tracing:`` (OpenTelemetry spans) and ``logging:`` (structured logs) of lockgate.yaml.

The features are :mod:`lockgate.observability.tracing` and :mod:`lockgate.observability.logging`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["LoggingSettings", "TracingSettings"]


class TracingSettings(Strict):
    """``tracing:``. Also switched on by ``OTEL_EXPORTER_OTLP_ENDPOINT`` in the environment."""

    enabled: bool = False
    exporter: Literal["otlp", "console", "memory"] = "otlp"
    """``otlp`` (HTTP/protobuf to ``endpoint`` or the OTEL_* env vars), ``console``
    (stdout), ``memory`` (tests)."""
    endpoint: str | None = None
    """OTLP base URL, e.g. http://collector:4318 (``/v1/traces`` is appended)."""
    service_name: str = "lockgate"
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)


class LoggingSettings(Strict):
    """``logging:``: structured logs on stderr."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
