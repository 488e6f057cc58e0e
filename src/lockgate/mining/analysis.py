"""Mining one :class:`~lockgate.mining.log.EventLog`: DFG, variants, steps, bottlenecks,
rework and conformance, all from numpy columns (no per-event Python work except variants).

Definitions (docs/mining.md has worked examples):

* **DFG edge** a -> b: b directly follows a in a case. Its duration is b's timestamp minus
  a's (completion to completion). ``rework`` counts the edges whose b already happened
  earlier in the case (the edge that re-enters a step).
* **Step** (per activity): executions, cases, starts/ends of cases, executions per day over
  the log's span (throughput), the *sojourn* before each execution (time since the previous
  event of the case; none for a case's first event), and with start times the *waiting*
  (start minus the previous completion) and *processing* (completion minus start) times.
* **Case throughput time**: last minus first timestamp of the case.
* **Variants**: distinct activity sequences, most cases first, with mean throughput time.
* **Bottlenecks**: steps and edges ranked by the share of all case time they account for
  (sum of their sojourn/edge durations over the sum of case throughput times); ties by
  median.
* **Rework**: per activity, cases where it ran more than once and the extra executions;
  self-loops (a -> a) are part of it.
* **Conformance**: see :mod:`lockgate.mining.conformance`.

Holds: exact numbers (tests compare them with hand-computed answers and a published example
log). Partial: time is calendar time (no working-hours calendars).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate.lazy import lazy_module
from lockgate.mining.conformance import ConformanceReport, check_conformance
from lockgate.mining.log import EventLog
from lockgate.mining.stats import Grouped, grouped, summary

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

__all__ = ["MiningResult", "mine"]

DAY = 86400.0


@dataclass(slots=True)
class MiningResult:
    overview: dict[str, Any]
    activities: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    start_activities: dict[str, int]
    end_activities: dict[str, int]
    variants: list[dict[str, Any]]
    bottlenecks: dict[str, list[dict[str, Any]]]
    rework: list[dict[str, Any]]
    conformance: ConformanceReport | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self, *, max_variants: int | None = 50) -> dict[str, Any]:
        variants = self.variants if max_variants is None else self.variants[:max_variants]
        out: dict[str, Any] = {
            "overview": self.overview,
            "activities": self.activities,
            "dfg": {"edges": self.edges, "start": self.start_activities,
                    "end": self.end_activities},
            "variants": variants,
            "variants_total": len(self.variants),
            "bottlenecks": self.bottlenecks,
            "rework": self.rework,
            "conformance": self.conformance.to_dict() if self.conformance else None,
        }
        return out


def _stats_row(g: Grouped, key: int) -> dict[str, float] | None:
    return g.row(key)


def mine(log: EventLog, *, reference: Sequence[Sequence[str]] | None = None,
         top: int = 5) -> MiningResult:
    import time

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    n = len(log)
    names = log.activities
    n_act = max(len(names), 1)
    case, act, ts, start = log.case, log.act, log.ts, log.start
    first = np.r_[True, case[1:] != case[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:] - 1, n - 1] if n else np.zeros(0, dtype=np.int64)
    n_cases = len(starts)
    case_tp = ts[ends] - ts[starts] if n else np.zeros(0)
    total_case_time = float(case_tp.sum())
    span = float(ts.max() - ts.min()) if n else 0.0
    days = max(span / DAY, 1.0 / 24.0) if n else 1.0

    # ------------------------------------------------------------ DFG
    same = ~first[1:] if n else np.zeros(0, dtype=bool)
    src = act[:-1][same]
    dst = act[1:][same]
    dur = (ts[1:] - ts[:-1])[same]
    edge_key = src * n_act + dst
    g_edges = grouped(edge_key, dur)
    # rework: the first index of each (case, activity) pair; a later index is a repetition
    pair = case * n_act + act
    _, first_idx, inverse = np.unique(pair, return_index=True, return_inverse=True)
    repeated = np.arange(n) != first_idx[inverse.reshape(-1)] if n else np.zeros(0, bool)
    rework_edge = repeated[1:][same]
    rework_counts = np.bincount(edge_key[rework_edge], minlength=n_act * n_act) \
        if len(edge_key) else np.zeros(n_act * n_act, dtype=np.int64)
    edges: list[dict[str, Any]] = []
    for i, key in enumerate(g_edges.keys.tolist()):
        a, b = divmod(int(key), n_act)
        edges.append({
            "source": names[a], "target": names[b], "count": int(g_edges.count[i]),
            "mean_s": float(g_edges.mean[i]), "median_s": float(g_edges.median[i]),
            "p90_s": float(g_edges.p90[i]), "total_s": float(g_edges.total[i]),
            "share_of_case_time": (float(g_edges.total[i]) / total_case_time
                                   if total_case_time > 0 else 0.0),
            "rework": int(rework_counts[key]),
        })
    edges.sort(key=lambda e: (-e["count"], e["source"], e["target"]))
    start_acts = np.bincount(act[starts], minlength=n_act) if n else np.zeros(n_act, np.int64)
    end_acts = np.bincount(act[ends], minlength=n_act) if n else np.zeros(n_act, np.int64)
    timings["dfg"] = (time.perf_counter() - t0) * 1000

    # ------------------------------------------------------------ steps
    t1 = time.perf_counter()
    count = np.bincount(act, minlength=n_act) if n else np.zeros(n_act, np.int64)
    cases_with = np.bincount(act[first_idx], minlength=n_act) if n else np.zeros(n_act, np.int64)
    extra = np.bincount(act[repeated], minlength=n_act) if n else np.zeros(n_act, np.int64)
    pair_counts = np.bincount(inverse.reshape(-1)) if n else np.zeros(0, np.int64)
    rework_cases = np.bincount(act[first_idx][pair_counts > 1], minlength=n_act) \
        if n else np.zeros(n_act, np.int64)
    g_soj = grouped(dst, dur)
    has_start = ~np.isnan(start)
    g_wait: Grouped | None = None
    g_proc: Grouped | None = None
    if has_start.any():
        prev_done = np.r_[np.nan, ts[:-1]] if n else np.zeros(0)
        wmask = has_start & ~first
        g_wait = grouped(act[wmask], start[wmask] - prev_done[wmask])
        g_proc = grouped(act[has_start], ts[has_start] - start[has_start])
    activities: list[dict[str, Any]] = []
    for a in range(len(names)):
        soj = _stats_row(g_soj, a)
        row: dict[str, Any] = {
            "activity": names[a], "count": int(count[a]), "cases": int(cases_with[a]),
            "case_starts": int(start_acts[a]), "case_ends": int(end_acts[a]),
            "per_day": float(count[a]) / days,
            "sojourn": soj,
            "share_of_case_time": (soj["total_s"] / total_case_time
                                   if soj and total_case_time > 0 else 0.0),
            "waiting": _stats_row(g_wait, a) if g_wait is not None else None,
            "processing": _stats_row(g_proc, a) if g_proc is not None else None,
            "rework_cases": int(rework_cases[a]), "extra_executions": int(extra[a]),
        }
        activities.append(row)
    activities.sort(key=lambda r: (-r["count"], r["activity"]))
    timings["steps"] = (time.perf_counter() - t1) * 1000

    # ------------------------------------------------------------ variants
    t2 = time.perf_counter()
    codes = act.astype(np.int32)
    variant_of: dict[bytes, int] = {}
    case_variant = np.empty(n_cases, dtype=np.int64)
    raw = codes.tobytes()
    bounds = np.r_[starts, n] * 4
    for c, (s, e) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
        case_variant[c] = variant_of.setdefault(raw[s:e], len(variant_of))
    v_count = np.bincount(case_variant, minlength=len(variant_of))
    v_tp = np.bincount(case_variant, weights=case_tp, minlength=len(variant_of))
    variants: list[dict[str, Any]] = []
    for key, vid in variant_of.items():
        seq = np.frombuffer(key, dtype=np.int32).tolist()
        c = int(v_count[vid])
        variants.append({"activities": [names[x] for x in seq], "count": c,
                         "share": c / n_cases if n_cases else 0.0,
                         "mean_throughput_s": float(v_tp[vid]) / c if c else 0.0})
    variants.sort(key=lambda v: (-v["count"], v["activities"]))
    for rank, v in enumerate(variants, 1):
        v["rank"] = rank
    timings["variants"] = (time.perf_counter() - t2) * 1000

    # ------------------------------------------------------------ bottlenecks, rework
    step_rank = sorted(
        (r for r in activities if r["sojourn"]),
        key=lambda r: (-r["share_of_case_time"], -r["sojourn"]["median_s"], r["activity"]),
    )[:top]
    edge_rank = sorted(edges, key=lambda e: (-e["share_of_case_time"], -e["median_s"],
                                             e["source"], e["target"]))[:top]
    bottlenecks = {
        "steps": [{"activity": r["activity"], "share_of_case_time": r["share_of_case_time"],
                   "median_s": r["sojourn"]["median_s"], "mean_s": r["sojourn"]["mean_s"],
                   "count": r["sojourn"]["count"]} for r in step_rank],
        "edges": [{"source": e["source"], "target": e["target"],
                   "share_of_case_time": e["share_of_case_time"], "median_s": e["median_s"],
                   "mean_s": e["mean_s"], "count": e["count"]} for e in edge_rank],
    }
    self_loops = {e["source"]: e["count"] for e in edges if e["source"] == e["target"]}
    rework = [
        {"activity": r["activity"], "cases": r["rework_cases"],
         "share_of_cases": r["rework_cases"] / n_cases if n_cases else 0.0,
         "extra_executions": r["extra_executions"],
         "self_loops": self_loops.get(r["activity"], 0),
         "entered_from": sorted(
             ({"source": e["source"], "count": e["rework"]} for e in edges
              if e["target"] == r["activity"] and e["rework"]),
             key=lambda x: (-x["count"], x["source"]))}
        for r in activities if r["rework_cases"]
    ]
    rework.sort(key=lambda r: (-r["cases"], r["activity"]))

    conformance = None
    if reference:
        t3 = time.perf_counter()
        conformance = check_conformance(
            [(v["activities"], v["count"]) for v in variants], reference)
        for v, pv in zip(variants, conformance.per_variant, strict=True):
            v["fitness"] = pv["fitness"]
        timings["conformance"] = (time.perf_counter() - t3) * 1000

    tp = summary(case_tp)
    overview = {
        "events": n, "cases": n_cases, "activities": len(names), "variants": len(variants),
        "first_event": float(ts.min()) if n else None,
        "last_event": float(ts.max()) if n else None,
        "span_s": span, "cases_per_day": n_cases / days if n else 0.0,
        "throughput": tp,
        "resources": len(log.resources),
    }
    timings["total"] = (time.perf_counter() - t0) * 1000
    return MiningResult(
        overview=overview, activities=activities, edges=edges,
        start_activities={names[a]: int(c) for a, c in enumerate(start_acts.tolist()) if c},
        end_activities={names[a]: int(c) for a, c in enumerate(end_acts.tolist()) if c},
        variants=variants, bottlenecks=bottlenecks, rework=rework, conformance=conformance,
        timings_ms=timings,
    )
