"""Model-call metrics counted in plain dicts, moved into the Prometheus series when read.

:meth:`lockgate.metrics.Metrics.observe_call` runs once per model call and touched eight
Prometheus values each time (the request counter, two histograms of two values each,
tokens, cost): every ``inc`` checks its arguments and takes a lock, ~5 % of a chat call's
CPU at the gateway's peak (bench/RESULTS.md, issue 12, sixth pass). A :class:`CallTally`
adds the same observations to plain dicts under one lock instead, and :meth:`CallTally.flush`
moves them into the series: one ``inc`` per series and histogram bucket that changed.

When the flush happens: :class:`TallyFlusher` is the first collector of the registry, so
anything that reads the registry (``/metrics``, ``generate_latest``, ``get_sample_value``)
flushes first and reads exact values. That holds only while this process's registry is the
only reader; with ``PROMETHEUS_MULTIPROC_DIR`` (several workers) each value is a file that
another process reads, so :class:`~lockgate.metrics.Metrics` writes straight through there
instead (no tally).

Histograms: the flush adds each bucket's count to the child's ``_buckets[i]`` and the total to
``_sum``, the values prometheus_client's own ``Histogram.observe`` increments (a bucket is
the first upper bound >= the value, as there). Those are private attributes of
prometheus_client; tests/observability/test_metrics_series.py compares a tallied histogram
with one fed by ``observe`` sample for sample, so a release that changes them fails there.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CallTally", "HistogramTally", "TallyFlusher"]


class HistogramTally:
    """Counts per bucket and the sum of the values observed since the last flush."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # the histogram's upper bounds, +Inf last
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def apply(self, child: Any) -> None:
        """Add the counts and the sum to a prometheus_client histogram child."""
        child._sum.inc(self.total)
        buckets = child._buckets
        for i, n in enumerate(self.counts):
            if n:
                buckets[i].inc(n)


class CallTally:
    """What :meth:`Metrics.observe_call` saw since the last flush, per labelled series."""

    def __init__(self, series: Callable[..., Any], requests: Any, latency: Any, overhead: Any,
                 tokens: Any, cost: Any) -> None:
        self._series = series  # Metrics._series: (metric, *labels) -> child
        self._requests, self._latency, self._overhead = requests, latency, overhead
        self._tokens, self._cost = tokens, cost
        self._latency_bounds = tuple(latency._upper_bounds)
        self._overhead_bounds = tuple(overhead._upper_bounds)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.calls: dict[tuple[str, str, int], int] = {}
        self.latencies: dict[str, HistogramTally] = {}
        self.overheads: dict[str, HistogramTally] = {}
        self.token_counts: dict[tuple[str, str], int] = {}
        self.costs: dict[str, float] = {}

    def add(self, model: str, kind: str, status: int, latency_s: float, overhead_s: float,
            prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        with self._lock:
            key = (model, kind, status)
            calls = self.calls
            calls[key] = calls.get(key, 0) + 1
            lat = self.latencies.get(model)
            if lat is None:
                lat = self.latencies[model] = HistogramTally(self._latency_bounds)
            lat.add(latency_s)
            ovh = self.overheads.get(model)
            if ovh is None:
                ovh = self.overheads[model] = HistogramTally(self._overhead_bounds)
            ovh.add(overhead_s)
            if prompt_tokens or completion_tokens:
                tokens = self.token_counts
                if prompt_tokens:
                    tk = (model, "prompt")
                    tokens[tk] = tokens.get(tk, 0) + prompt_tokens
                if completion_tokens:
                    tk = (model, "completion")
                    tokens[tk] = tokens.get(tk, 0) + completion_tokens
            if cost:
                self.costs[model] = self.costs.get(model, 0.0) + cost

    def flush(self) -> None:
        """Move everything counted so far into the Prometheus series."""
        with self._lock:
            calls, latencies, overheads = self.calls, self.latencies, self.overheads
            token_counts, costs = self.token_counts, self.costs
            self._reset()
            series = self._series
            for (model, kind, status), n in calls.items():
                series(self._requests, model, kind, str(status)).inc(n)
            for model, tally in latencies.items():
                tally.apply(series(self._latency, model))
            for model, tally in overheads.items():
                tally.apply(series(self._overhead, model))
            for (model, direction), n in token_counts.items():
                series(self._tokens, model, direction).inc(n)
            for model, total in costs.items():
                series(self._cost, model).inc(total)


class TallyFlusher:
    """A registry collector with no metrics of its own: registered first, its ``collect``
    flushes the tallies before the registry's other collectors are read."""

    def __init__(self) -> None:
        self.tallies: list[CallTally] = []

    def collect(self) -> Iterable[Any]:
        for tally in self.tallies:
            tally.flush()
        return ()

    def describe(self) -> Iterable[Any]:
        return ()
