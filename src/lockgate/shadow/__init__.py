"""Shadow traffic: mirror a share of a model's calls to a candidate deployment, off the hot path.

Configured under ``shadow:`` in lockgate.yaml
(:class:`~lockgate.observability.settings.ShadowSettings`)::

    shadow:
      concurrency: 4          # candidate calls in flight
      max_pending: 1000       # queued samples; beyond: dropped (and counted)
      drain_timeout: 10       # seconds aclose waits for queued samples
      routes:
        - {model: support, candidate: support-next, percent: 10, timeout: 60}

One job per module:

- :mod:`~lockgate.shadow.mirror`: sampling (dice roll, bounded queue) and the
  workers that send each sample to its candidate *through the pipeline*
  (``source="shadow"``, pinned to the candidate, not governed, not cached, audited);
  ``build_mirror(runtime)`` wires it to the runtime's pipeline and audit writer;
- :mod:`~lockgate.shadow.routes`: the configured routes, resolved against the deployments;
- :mod:`~lockgate.shadow.compare`: text / JSON agreement of the two answers;
- :mod:`~lockgate.shadow.rows`: one ``shadow_results`` row per sample, written by the
  shared batched writer (``AuditWriter.submit_shadow``) with the audit rows;
- :mod:`~lockgate.shadow.report`: :func:`shadow_report`, behind ``lockgate shadow report``.

The pipeline sees only :class:`lockgate.pipeline.mirror.Mirror` (``Controls.mirror``);
it never imports this package. Streams and cache hits are not mirrored.
"""

from lockgate.settings import ShadowConfig, ShadowSettings
from lockgate.shadow.compare import compare, completion_text
from lockgate.shadow.mirror import (
    Answer,
    CallRunner,
    ResultSink,
    ShadowMirror,
    build_mirror,
    shadow_request_id,
)
from lockgate.shadow.report import ShadowStats, shadow_report
from lockgate.shadow.routes import ShadowRoute, resolve_routes
from lockgate.shadow.rows import Outcome, Sample, result_row

__all__ = [
    "Answer",
    "CallRunner",
    "Outcome",
    "ResultSink",
    "Sample",
    "ShadowConfig",
    "ShadowMirror",
    "ShadowRoute",
    "ShadowSettings",
    "ShadowStats",
    "build_mirror",
    "compare",
    "completion_text",
    "resolve_routes",
    "result_row",
    "shadow_report",
    "shadow_request_id",
]
