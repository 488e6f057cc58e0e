"""OpenTelemetry traces: one span per pipeline stage, nearly free when tracing is off.

Use::

    from lockgate.observability.tracing import span

    with span("lockgate.request", request_id=call.request_id, model=call.model):
        with span("authenticate"):
            ...
        with span("upstream", deployment=target.id, attempt=n):
            ...

When tracing is disabled (the default) :func:`span` returns one shared no-op
context manager: no OpenTelemetry module is imported, no object is allocated
besides the keyword dict. When enabled, it is
``tracer.start_as_current_span(name, attributes=...)`` (``None`` attributes
are left out; an exception escaping the block is recorded and sets the span's
status to ERROR). Spans nest through contextvars, so they follow ``await``.

Enable with :func:`configure_tracing`, once at start-up, from
:class:`~lockgate.settings.TracingSettings` (``tracing:
{enabled: true, exporter: otlp|console, endpoint: ..., sample_ratio: ...}``)
or simply ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) in the environment, which turns on
the OTLP/HTTP exporter. OTLP and console export run in a background batch
processor (no network on the request path); ``exporter="memory"`` or an
``exporter=`` object (tests: ``InMemorySpanExporter``) export synchronously.
lockgate uses its own ``TracerProvider`` (not the global one), so configuring
twice (tests) is safe; :func:`shutdown_tracing` flushes and turns tracing off.

Packages: ``opentelemetry-sdk`` and, for OTLP, ``opentelemetry-exporter-otlp-
proto-http`` (imported only when that exporter is chosen).

Where it is used
----------------
* :class:`~lockgate.runtime.Runtime` calls :func:`configure_tracing` with
  ``config.tracing`` when it is built and :func:`shutdown_tracing` last in ``aclose``.
* The pipeline opens the root ``lockgate.request`` span (request_id, model, source,
  stream) and one span per stage named in :class:`STAGE` (authenticate, policy, limits,
  guards.input, cache, guards.output; ``upstream`` per attempt with deployment and
  attempt, in ``pipeline.resilience``); status, error_class, deployment and token
  counts are set on the current span with :func:`set_attributes` when the call is
  recorded. A stream's root span covers authentication, policy, limits and input
  guards only. Shadow mirrors run under ``shadow``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from lockgate.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

__all__ = [
    "STAGE",
    "configure_tracing",
    "current_trace_ids",
    "set_attributes",
    "shutdown_tracing",
    "span",
    "tracing_enabled",
]

ENDPOINT_VARS: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class STAGE:
    """Span names for the pipeline stages (one span each)."""

    REQUEST: Final = "lockgate.request"
    AUTHENTICATE: Final = "authenticate"
    POLICY: Final = "policy"
    LIMITS: Final = "limits"
    INPUT_GUARDS: Final = "guards.input"
    CACHE: Final = "cache"
    ROUTE: Final = "route"
    UPSTREAM: Final = "upstream"
    OUTPUT_GUARDS: Final = "guards.output"
    SETTLE: Final = "settle"
    AUDIT: Final = "audit"
    SHADOW: Final = "shadow"


class _NoSpan(AbstractContextManager[None]):
    """The shared do-nothing span used while tracing is off."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NO_SPAN: Final = _NoSpan()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def tracing_enabled() -> bool:
    return _tracer is not None


def span(name: str, **attrs: Any) -> AbstractContextManager[Any]:
    """A span around the ``with`` block (the shared no-op while tracing is off)."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(
        name, attributes={k: v for k, v in attrs.items() if v is not None}
    )


def start_span(name: str, **attrs: Any) -> Any:
    """Start a span that outlives a ``with`` block (a stream's request span); None while
    tracing is off. Make it current with :func:`use_span`, finish it with :func:`end_span`."""
    tracer = _tracer
    if tracer is None:
        return None
    return tracer.start_span(name, attributes={k: v for k, v in attrs.items() if v is not None})


def use_span(opened: Any) -> AbstractContextManager[Any]:
    """Make a span from :func:`start_span` current for the block (it stays open)."""
    if opened is None:
        return _NO_SPAN
    from opentelemetry import trace

    return trace.use_span(opened, end_on_exit=False)


def end_span(opened: Any) -> None:
    if opened is not None:
        opened.end()


def set_attributes(**attrs: Any) -> None:
    """Set attributes on the current span (no-op while tracing is off)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    for key, value in attrs.items():
        if value is not None:
            current.set_attribute(key, value)


def current_trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` as hex of the current span, for log correlation; None if off."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _wanted(settings: TracingSettings, env: Mapping[str, str]) -> tuple[bool, str | None]:
    endpoint = settings.endpoint or next((env[v] for v in ENDPOINT_VARS if env.get(v)), None)
    if settings.enabled:
        return True, endpoint
    return (endpoint is not None and settings.endpoint is None), endpoint


def configure_tracing(
    settings: TracingSettings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> bool:
    """Turn tracing on or off for this process; True when spans are now recorded.

    ``exporter`` (any OTel ``SpanExporter``) overrides the configured one and
    is used synchronously (tests).
    """
    settings = settings or TracingSettings()
    env = os.environ if env is None else env
    enabled, endpoint = _wanted(settings, env)
    if exporter is not None:
        enabled = True
    shutdown_tracing()
    if not enabled:
        return False

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.exporter == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    elif settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = None
        if endpoint is not None:
            url = endpoint.rstrip("/")
            if not url.endswith("/v1/traces") and endpoint != env.get(ENDPOINT_VARS[0]):
                url += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("lockgate")
    return True


def shutdown_tracing() -> None:
    """Flush pending spans and turn tracing off (no-op when it is off)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()
