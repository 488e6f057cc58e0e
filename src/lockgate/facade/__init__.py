"""Facade (sidecar) proxy: lockgate in front of a legacy HTTP service (an adapter).

``facades:`` in lockgate.yaml (:mod:`lockgate.settings.facades`); served by
``lockgate serve``/``up`` next to the gateway, or alone by ``lockgate facade``.

Two layers per facade: :mod:`.fastpath` (the public listener: raw asyncio protocols +
httptools) proxies requests no rule matches straight to the upstream and routes the others
over a private Unix socket to :class:`FacadeProxy` (aiohttp), which applies the rules.

What holds: exact streaming pass-through for requests no rule matches; rules by method +
path (+ media type + JSON predicate) that run a task through the pipeline and place the
result in a response JSON field, a response header, a request field, an event or a job;
enrichment fails open within ``budget_ms`` (misses counted in
``lockgate_facade_enrichment_misses_total``); ``redact`` (PII detectors) and ``block``
fail closed; shadow mode logs the difference and changes nothing.

Upgrades (WebSocket) are tunnelled to the upstream byte for byte after its ``101``; rules
never apply to them. Every answered call is handed to the AuditWriter as a ``facade_calls``
row (``log_calls``), the call log process mining reads.

Partial: HTTP/1.1 to clients (no HTTP/2); ``redact`` uses the PII detectors of
:mod:`lockgate.guards`, not a model; trailers are dropped.
"""

from lockgate.facade.metrics import FacadeMetrics
from lockgate.facade.proxy import FacadeProxy
from lockgate.facade.rules import Body, Rule, RuleEngine
from lockgate.facade.server import FACADE_PRINCIPAL, Facades, serve_facade

__all__ = [
    "FACADE_PRINCIPAL",
    "Body",
    "FacadeMetrics",
    "FacadeProxy",
    "Facades",
    "Rule",
    "RuleEngine",
    "serve_facade",
]
