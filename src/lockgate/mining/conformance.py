"""Conformance of traces against declared reference paths (sequence alignment).

A reference is one or more allowed activity sequences. Each distinct trace (variant) is
aligned to every reference path with a longest-common-subsequence alignment: events of
the trace not matched are *inserted* (log moves), activities of the path not matched are
*skipped* (model moves); both cost 1. The best path wins. Trace fitness is
``1 - cost / (len(trace) + len(path))`` (1.0 = exactly the path, 0.0 = nothing in common),
the usual normalisation of alignment cost for a sequence model.

Holds: exact optimal alignments for sequence references; results weighted by the number of
cases per variant. Partial: references are sequences (alternatives as several paths), not
Petri nets with concurrency or loops — a loop in the log shows as inserted events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Alignment", "ConformanceReport", "align", "check_conformance"]


@dataclass(frozen=True, slots=True)
class Alignment:
    cost: int
    fitness: float
    path: int
    """Index of the best reference path."""
    skipped: tuple[str, ...]
    inserted: tuple[str, ...]


def _lcs_moves(trace: Sequence[str], path: Sequence[str]) -> tuple[int, list[str], list[str]]:
    n, m = len(trace), len(path)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        ti = trace[i]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if ti == path[j] else max(below[j], row[j + 1])
    skipped: list[str] = []
    inserted: list[str] = []
    i = j = 0
    while i < n and j < m:
        if trace[i] == path[j]:
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            inserted.append(trace[i])
            i += 1
        else:
            skipped.append(path[j])
            j += 1
    inserted.extend(trace[i:])
    skipped.extend(path[j:])
    return len(inserted) + len(skipped), skipped, inserted


def align(trace: Sequence[str], paths: Sequence[Sequence[str]]) -> Alignment:
    best: Alignment | None = None
    for p, path in enumerate(paths):
        cost, skipped, inserted = _lcs_moves(trace, path)
        total = len(trace) + len(path)
        fit = 1.0 - cost / total if total else 1.0
        if best is None or cost < best.cost or (cost == best.cost and fit > best.fitness):
            best = Alignment(cost, fit, p, tuple(skipped), tuple(inserted))
    assert best is not None
    return best


@dataclass(slots=True)
class ConformanceReport:
    reference: list[list[str]]
    cases: int = 0
    fitting_cases: int = 0
    mean_fitness: float = 0.0
    deviations: list[dict[str, Any]] = field(default_factory=list)
    """{"kind": "skipped"|"inserted", "activity", "cases", "occurrences"}, most cases first."""
    per_variant: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fitting_share(self) -> float:
        return self.fitting_cases / self.cases if self.cases else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "cases": self.cases,
                "fitting_cases": self.fitting_cases, "fitting_share": self.fitting_share,
                "mean_fitness": self.mean_fitness, "deviations": self.deviations}


def check_conformance(
    variants: Sequence[tuple[Sequence[str], int]], paths: Sequence[Sequence[str]]
) -> ConformanceReport:
    """``variants``: (trace, number of cases) pairs; ``paths``: the allowed sequences."""
    report = ConformanceReport(reference=[list(p) for p in paths])
    if not paths:
        return report
    dev_cases: dict[tuple[str, str], int] = {}
    dev_occ: dict[tuple[str, str], int] = {}
    weighted = 0.0
    for trace, count in variants:
        al = align(trace, paths)
        report.cases += count
        weighted += al.fitness * count
        if al.cost == 0:
            report.fitting_cases += count
        report.per_variant.append({"fitness": al.fitness, "cost": al.cost, "path": al.path,
                                   "skipped": list(al.skipped), "inserted": list(al.inserted)})
        for kind, acts in (("skipped", al.skipped), ("inserted", al.inserted)):
            for act in set(acts):
                dev_cases[(kind, act)] = dev_cases.get((kind, act), 0) + count
            for act in acts:
                dev_occ[(kind, act)] = dev_occ.get((kind, act), 0) + count
    report.mean_fitness = weighted / report.cases if report.cases else 0.0
    report.deviations = [
        {"kind": kind, "activity": act, "cases": n, "occurrences": dev_occ[(kind, act)]}
        for (kind, act), n in sorted(dev_cases.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return report
