"""Streaming change detection: a one-sided Page-Hinkley test on standardised values.

Page-Hinkley (Page 1954; Hinkley 1971), as in river's ``drift.PageHinkley``, watching for
an *increase* of the mean (a degradation: more overrides, more refusals, slower, dearer):

* the first ``min_events`` values are the baseline: their mean ``mu`` and standard
  deviation ``sigma`` (Welford; floored at ``min_std`` and ``min_rel_std * |mu|``, so a
  0 % baseline or a short, noisy one still has a sensible scale) are then frozen;
* after that each value ``x`` adds ``z = (x - mu) / sigma - delta`` to a cumulative sum
  ``m``; ``M`` is the smallest ``m`` so far; the test alarms when ``m - M > threshold``;
* after an alarm the detector starts over (a new baseline is learnt from what follows),
  so one sustained shift gives one alarm.

Both parameters are in baseline standard deviations, so one setting fits a 5 % rate and
a 900 ms latency alike. The expected delay after a shift of ``s`` standard deviations
is about ``threshold / (s - delta)`` values; with a stable mean the sum drifts down by
``delta`` per value and an excursion of ``threshold`` is exponentially unlikely
(docs/feedback.md has the measured numbers, tests/feedback/test_feedback_detectors.py
the checks). This is the whole algorithm: a few lines kept here rather than a
dependency on river (and its numpy/scipy/pandas) for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PageHinkley"]


@dataclass(slots=True)
class PageHinkley:
    min_events: int = 500
    delta: float = 0.75
    threshold: float = 30.0
    min_std: float = 0.2
    """Floor of sigma (0.2 suits 0/1 rates: the sd of a 5 % rate is 0.22)."""
    min_rel_std: float = 0.0
    """Floor of sigma as a share of the baseline mean (for latency, cost)."""
    # baseline (Welford)
    n: int = 0
    mean: float = 0.0
    _m2: float = 0.0
    std: float = 0.0
    # test
    cum: float = 0.0
    low: float = 0.0
    seen: int = field(default=0)
    """Values since the last reset (baseline + tested)."""
    alarms: int = 0

    def reset(self) -> None:
        self.n, self.mean, self._m2, self.std = 0, 0.0, 0.0, 0.0
        self.cum = self.low = 0.0
        self.seen = 0

    @property
    def warm(self) -> bool:
        return self.n >= self.min_events

    @property
    def statistic(self) -> float:
        """``m - M``: how far the sum has climbed above its lowest point."""
        return self.cum - self.low

    def update(self, x: float) -> bool:
        """Feed one value; True when it completes a detected increase (then reset)."""
        if not math.isfinite(x):
            return False
        self.seen += 1
        if not self.warm:
            self.n += 1
            d = x - self.mean
            self.mean += d / self.n
            self._m2 += d * (x - self.mean)
            if self.warm:
                var = self._m2 / (self.n - 1) if self.n > 1 else 0.0
                self.std = max(math.sqrt(var), self.min_std,
                               self.min_rel_std * abs(self.mean))
            return False
        self.cum += (x - self.mean) / self.std - self.delta
        self.low = min(self.low, self.cum)
        if self.cum - self.low > self.threshold:
            self.alarms += 1
            self.reset()
            return True
        return False
