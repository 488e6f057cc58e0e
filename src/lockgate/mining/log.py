"""The event log: one event = (case id, activity, timestamp, resource), held as columns.

:class:`Event` is one row as sources and importers produce it. :class:`EventLog` is the
columnar form every analysis reads: activity, case and resource names are dictionary
encoded to small integers, timestamps are float64 Unix seconds, and the rows are sorted by
(case, timestamp, arrival order) once, at construction. ``start`` holds a start timestamp
(XES ``lifecycle:transition=start`` or a CSV ``start`` column) or NaN when the log has only
completion times.

Holds: stable order for equal timestamps (the order events were given in). Partial: no
per-event attributes beyond resource (they are dropped at import).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    I64 = npt.NDArray[np.int64]
    F64 = npt.NDArray[np.float64]
else:
    np = lazy_module("numpy")

__all__ = ["Event", "EventLog", "MiningInputError"]


class MiningInputError(ValueError):
    """An event log (or a request about one) that cannot be mined: a 400 / one CLI line."""


@dataclass(frozen=True, slots=True)
class Event:
    case_id: str
    activity: str
    timestamp: float
    """Completion time, Unix seconds."""
    resource: str | None = None
    start: float | None = None
    """Start time (Unix seconds) when the log records one."""


class EventLog:
    """Columns sorted by (case, timestamp, input order); names dictionary-encoded."""

    __slots__ = (
        "act",
        "activities",
        "case",
        "case_names",
        "resource",
        "resources",
        "start",
        "ts",
    )

    def __init__(
        self,
        case: I64,
        act: I64,
        ts: F64,
        *,
        case_names: Sequence[str],
        activities: Sequence[str],
        resource: I64 | None = None,
        resources: Sequence[str] = (),
        start: F64 | None = None,
        presorted: bool = False,
    ) -> None:
        n = len(case)
        if len(act) != n or len(ts) != n:
            raise MiningInputError("event log columns differ in length")
        if n and not np.all(np.isfinite(ts)):
            raise MiningInputError("an event has no valid timestamp")
        res = resource if resource is not None else np.full(n, -1, dtype=np.int64)
        st = start if start is not None else np.full(n, np.nan)
        if not presorted and n:
            order = np.lexsort((np.arange(n), ts, case))
            case, act, ts, res, st = case[order], act[order], ts[order], res[order], st[order]
        self.case = case.astype(np.int64, copy=False)
        self.act = act.astype(np.int64, copy=False)
        self.ts = ts.astype(np.float64, copy=False)
        self.resource = res.astype(np.int64, copy=False)
        self.start = st.astype(np.float64, copy=False)
        self.case_names = list(case_names)
        self.activities = list(activities)
        self.resources = list(resources)

    def __len__(self) -> int:
        return len(self.case)

    @property
    def n_cases(self) -> int:
        if not len(self.case):
            return 0
        return int(np.count_nonzero(np.r_[True, self.case[1:] != self.case[:-1]]))

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventLog:
        cases: dict[str, int] = {}
        acts: dict[str, int] = {}
        ress: dict[str, int] = {}
        c: list[int] = []
        a: list[int] = []
        t: list[float] = []
        r: list[int] = []
        s: list[float] = []
        for ev in events:
            c.append(cases.setdefault(ev.case_id, len(cases)))
            a.append(acts.setdefault(ev.activity, len(acts)))
            t.append(float(ev.timestamp))
            r.append(-1 if ev.resource is None else ress.setdefault(ev.resource, len(ress)))
            s.append(np.nan if ev.start is None else float(ev.start))
        return cls(
            np.asarray(c, dtype=np.int64), np.asarray(a, dtype=np.int64),
            np.asarray(t, dtype=np.float64), case_names=list(cases), activities=list(acts),
            resource=np.asarray(r, dtype=np.int64), resources=list(ress),
            start=np.asarray(s, dtype=np.float64),
        )

    def events(self) -> list[Event]:
        """Back to rows (tests and small logs; the analysis never needs this)."""
        out: list[Event] = []
        for i in range(len(self)):
            r = int(self.resource[i])
            st = float(self.start[i])
            out.append(Event(self.case_names[int(self.case[i])], self.activities[int(self.act[i])],
                             float(self.ts[i]), None if r < 0 else self.resources[r],
                             None if np.isnan(st) else st))
        return out

    def filter_time(self, since: float | None, until: float | None) -> EventLog:
        """Events with since <= timestamp < until (whole cases are not kept together)."""
        mask = np.ones(len(self), dtype=bool)
        if since is not None:
            mask &= self.ts >= since
        if until is not None:
            mask &= self.ts < until
        if mask.all():
            return self
        return EventLog(self.case[mask], self.act[mask], self.ts[mask],
                        case_names=self.case_names, activities=self.activities,
                        resource=self.resource[mask], resources=self.resources,
                        start=self.start[mask], presorted=True)
