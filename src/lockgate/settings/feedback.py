"""``feedback:`` section of lockgate.yaml (``Config.feedback``): feedback and drift detection.

::

    feedback:
      max_text_chars: 65536          # comment / corrected output / input / output, each
      drift:
        enabled: true                # the drift monitor runs in `lockgate serve` and workers
        interval: 10                 # seconds between reads of new feedback/usage rows
        min_events: 500              # baseline per (rate, task, deployment) before alarms
        delta: 0.75                  # Page-Hinkley drift allowance, in standard deviations
        threshold: 30                # Page-Hinkley alarm level, in standard deviations
        rate_min_std: 0.2            # floor of a rate's baseline standard deviation
        window: 50                   # calls per p95-latency / cost-per-call sample
        window_min_samples: 30       # baseline samples of those
        window_min_rel_std: 0.05     # their sd floor, as a share of the baseline mean
        metrics: [override_rate, thumbs_down_rate, refusal_rate, contract_violation_rate,
                  p95_latency, cost_per_call]

The detector is a one-sided (increase) Page-Hinkley test on standardised values; see
docs/feedback.md for the detection delay these defaults give.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["DRIFT_METRICS", "DriftMetric", "DriftSettings", "FeedbackSettings"]

DriftMetric = Literal[
    "override_rate",
    "thumbs_down_rate",
    "refusal_rate",
    "contract_violation_rate",
    "p95_latency",
    "cost_per_call",
]
DRIFT_METRICS: tuple[DriftMetric, ...] = (
    "override_rate",
    "thumbs_down_rate",
    "refusal_rate",
    "contract_violation_rate",
    "p95_latency",
    "cost_per_call",
)


class DriftSettings(Strict):
    enabled: bool = True
    interval: float = Field(10.0, gt=0)
    """Seconds between reads of new rows."""
    min_events: int = Field(500, ge=2)
    """0/1 values (one per call or feedback) a rate detector learns its baseline from."""
    delta: float = Field(0.75, ge=0)
    """Page-Hinkley allowance per value, in baseline standard deviations."""
    threshold: float = Field(30.0, gt=0)
    """Page-Hinkley alarm level (lambda), in baseline standard deviations."""
    rate_min_std: float = Field(0.2, gt=0)
    """Floor of a rate's baseline standard deviation (0.2: about that of a 5 % rate)."""
    window: int = Field(50, ge=2)
    """Calls per sample of p95 latency and of cost per call."""
    window_min_samples: int = Field(30, ge=2)
    """Samples (windows) a latency/cost detector learns its baseline from."""
    window_min_rel_std: float = Field(0.05, ge=0)
    """Floor of a latency/cost baseline's standard deviation, as a share of its mean."""
    metrics: tuple[DriftMetric, ...] = DRIFT_METRICS
    lease_seconds: float = Field(30.0, gt=0)
    """One process at a time runs the detectors (a lease in the store); another takes
    over this long after the holder stops renewing."""
    batch: int = Field(5000, ge=1)
    """Rows read per table per round."""


class FeedbackSettings(Strict):
    max_text_chars: int = Field(65536, ge=1)
    drift: DriftSettings = DriftSettings()
