"""Facade counters (on the process registry, so ``/metrics`` shows them).

``lockgate_facade_requests_total{facade, outcome}`` -- outcome: ``pass`` (no rule),
``ruled`` (a rule applied), ``blocked``, ``upstream_error``, ``closed`` (a protective rule
could not run: fail closed).
``lockgate_facade_enrichment_misses_total{facade, rule, reason}`` -- enrichment that fell
back to the unchanged answer: ``timeout``, ``error``, ``not_json``, ``too_large``,
``unplaceable``.
``lockgate_facade_shadow_total{facade, rule, differs}`` -- shadow-mode rule results.
Labels are configured names and closed sets only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["FacadeMetrics"]


class FacadeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.requests = Counter(
            "lockgate_facade_requests", "Requests through a facade by outcome",
            ["facade", "outcome"], registry=r,
        )
        self.misses = Counter(
            "lockgate_facade_enrichment_misses", "Enrichments that failed open, by reason",
            ["facade", "rule", "reason"], registry=r,
        )
        self.shadow = Counter(
            "lockgate_facade_shadow", "Shadow-mode rule results (differs: would change the "
            "answer)", ["facade", "rule", "differs"], registry=r,
        )
