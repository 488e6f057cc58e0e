"""Prometheus metrics: cheap counters and histograms, one registry per process.

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (``lockgate serve
--workers N`` does) so ``/metrics`` aggregates all workers.

Labels come from closed sets only, never from client input: a requested model
becomes the ``model`` label only when it is a configured model or a virtual model
that exists (``rag/<collection>``); anything else is :data:`UNKNOWN_MODEL`. The
pipeline decides (``Pipeline.model_label``); :meth:`Metrics.observe_call` also
refuses over-long names as a last line of defence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from lockgate.metrics_tally import CallTally, TallyFlusher

UNKNOWN_MODEL = "unknown"
"""The ``model`` label of calls naming no configured (or existing virtual) model."""
MAX_LABEL_CHARS = 200
"""Longer label values are replaced by :data:`UNKNOWN_MODEL` (configured names are short)."""
_MAX_CACHED_CHILDREN = 4096
"""Labelled series kept by :meth:`Metrics.observe_call`."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        flusher = TallyFlusher()
        r.register(flusher)  # first: reading the registry flushes the call tally
        self.requests = Counter(
            "lockgate_requests", "Model calls by public model, kind and status",
            ["model", "kind", "status"], registry=r,
        )
        self.latency = Histogram(
            "lockgate_request_latency_seconds", "Total latency of model calls",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.overhead = Histogram(
            "lockgate_overhead_seconds", "Time spent in lockgate, excluding the upstream",
            ["model"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "lockgate_tokens", "Tokens by public model and direction",
            ["model", "direction"], registry=r,
        )
        self.cost = Counter("lockgate_cost", "Cost in pricing currency", ["model"], registry=r)
        self.upstream_errors = Counter(
            "lockgate_upstream_errors", "Provider failures by deployment and kind",
            ["deployment", "kind"], registry=r,
        )
        self.governance_denials = Counter(
            "lockgate_governance_denials", "Calls refused by limits/budgets "
            "(reason: rate_limit, budget, state_unavailable)", ["reason"], registry=r,
        )
        self.cache = Counter(
            "lockgate_cache", "Response cache lookups by result (hit, miss)", ["result"],
            registry=r,
        )
        self.guard_actions = Counter(
            "lockgate_guard_actions", "Guardrail actions (guard: pii, injection, contract, "
            "input, output; action: the policy action or error code)", ["guard", "action"],
            registry=r,
        )
        self.kill_switch_hits = Counter(
            "lockgate_kill_switch_hits", "Calls stopped or rerouted by a kill switch",
            ["switch"], registry=r,
        )
        self.breaker_state = Gauge(
            "lockgate_breaker_state", "Circuit breaker per deployment as last seen by this "
            "process (0 closed, 1 half-open, 2 open)", ["deployment"], registry=r,
            multiprocess_mode="max",
        )
        self.governance = Gauge(
            "lockgate_governance", "Governance counters of this process (admitted, limit_hits, "
            "budget_denials, state_errors, fail_open_admits, settles, releases, settle_errors, "
            "pending_settles)", ["stat"], registry=r, multiprocess_mode="livesum",
        )
        self.canary_rollbacks = Counter(
            "lockgate_canary_rollbacks", "Canary deployments rolled back automatically (counted "
            "by the gateway that made the rollback)", ["deployment"], registry=r,
        )
        self.canary_state = Gauge(
            "lockgate_canary_state", "Canary deployment as last seen by this process "
            "(0 serving, 1 rolled back)", ["deployment"], registry=r, multiprocess_mode="max",
        )
        self._refreshers: list[Callable[[], None]] = []
        self._children: dict[tuple[object, ...], Any] = {}
        self._tally: CallTally | None = None
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # other processes read the files
            self._tally = CallTally(self._series, self.requests, self.latency, self.overhead,
                                    self.tokens, self.cost)
            flusher.tallies.append(self._tally)
        self.audit_pending = Gauge(
            "lockgate_audit_pending", "Audit records waiting to be written",
            registry=r, multiprocess_mode="livesum",
        )
        self.audit_backlog = Gauge(
            "lockgate_audit_backlog_seconds", "Age of the oldest audit record waiting to be "
            "written (0 when none): how far the audit database is behind",
            registry=r, multiprocess_mode="max",
        )
        self.audit = Gauge(
            "lockgate_audit", "Audit writer counters of this process since start (written, "
            "duplicates, batches, failed_flushes, spilled, replayed, rejected, lost, "
            "shadow_written)",
            ["stat"], registry=r, multiprocess_mode="livesum",
        )

    def observe_call(
        self, model: str, kind: str, status: int, latency_s: float, overhead_s: float,
        prompt_tokens: int, completion_tokens: int, cost: float,
    ) -> None:
        """``model`` must already be a closed-set label (see the module docstring).

        In one process the call is counted in a :class:`~lockgate.metrics_tally.CallTally`
        that reading the registry flushes; with ``PROMETHEUS_MULTIPROC_DIR`` it is written
        straight to the series."""
        if len(model) > MAX_LABEL_CHARS:
            model = UNKNOWN_MODEL
        if self._tally is not None:
            self._tally.add(model, kind, status, latency_s, overhead_s, prompt_tokens,
                            completion_tokens, cost)
            return
        self._series(self.requests, model, kind, str(status)).inc()
        self._series(self.latency, model).observe(latency_s)
        self._series(self.overhead, model).observe(overhead_s)
        if prompt_tokens:
            self._series(self.tokens, model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._series(self.tokens, model, "completion").inc(completion_tokens)
        if cost:
            self._series(self.cost, model).inc(cost)

    def _series(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: ``labels()`` validates and takes a lock
        on every call (for each series a call tally flush or a written-through call touches).
        Kept while the cache is small: labels come from closed sets, the bound is a guard."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < _MAX_CACHED_CHILDREN:
                self._children[key] = child
        return child

    def on_render(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` before each render (copy plain-int stats into gauges)."""
        self._refreshers.append(fn)

    def render(self) -> bytes:
        for fn in self._refreshers:
            fn()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
