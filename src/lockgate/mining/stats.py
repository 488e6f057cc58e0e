"""Grouped statistics over numpy columns (count, sum, mean, median, p90 per integer key).

Holds: exact medians (mean of the two middle values) and nearest-rank p90, computed with
one sort for all groups together, so the cost is O(n log n) however many groups there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

__all__ = ["Grouped", "grouped", "summary"]


@dataclass(frozen=True, slots=True)
class Grouped:
    keys: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    median: npt.NDArray[np.float64]
    p90: npt.NDArray[np.float64]

    def row(self, key: int) -> dict[str, float] | None:
        pos = int(np.searchsorted(self.keys, key))
        if pos >= len(self.keys) or int(self.keys[pos]) != key:
            return None
        return {"count": int(self.count[pos]), "total_s": float(self.total[pos]),
                "mean_s": float(self.mean[pos]), "median_s": float(self.median[pos]),
                "p90_s": float(self.p90[pos])}


def grouped(keys: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> Grouped:
    """Per distinct key (ascending): count, sum, mean, median and p90 of ``values``."""
    if not len(keys):
        e_i = np.zeros(0, dtype=np.int64)
        e_f = np.zeros(0, dtype=np.float64)
        return Grouped(e_i, e_i, e_f, e_f, e_f, e_f)
    order = np.lexsort((values, keys))
    k = keys[order]
    v = values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[starts, len(k)])
    totals = np.add.reduceat(v, starts)
    lo = v[starts + (counts - 1) // 2]
    hi = v[starts + counts // 2]
    p90_idx = starts + np.ceil(0.9 * counts).astype(np.int64) - 1
    return Grouped(k[starts].astype(np.int64), counts.astype(np.int64), totals,
                   totals / counts, (lo + hi) / 2.0, v[p90_idx])


def summary(values: npt.NDArray[np.float64]) -> dict[str, float]:
    """count/mean/median/p90/max of one column (zeros for an empty one)."""
    if not len(values):
        return {"count": 0, "mean_s": 0.0, "median_s": 0.0, "p90_s": 0.0, "max_s": 0.0}
    g = grouped(np.zeros(len(values), dtype=np.int64), values)
    return {"count": len(values), "mean_s": float(g.mean[0]),
            "median_s": float(g.median[0]), "p90_s": float(g.p90[0]),
            "max_s": float(values.max())}
