"""Drift and degradation detection over new feedback and usage rows, alerting once.

:class:`DriftMonitor` runs in every gateway and worker (``Runtime.start(monitor=True)``)
but only the holder of the ``drift`` lease (table ``monitor_leases``) works: it reads
rows past its id cursors (``feedback.id``, ``usage_records.id``), feeds one
:class:`~lockgate.feedback.detectors.PageHinkley` per (metric, task, deployment) and
raises an alarm through :class:`~lockgate.alerts.AlertCenter` as the incident
``kind="drift", subject="<metric>|task=<task>|deployment=<deployment>"``. The cursors
are saved with the lease, so a successor resumes where the holder stopped (it learns
fresh baselines). Two guards against N alerts from N processes: one reader at a time,
and one row per open incident in the store.

Metrics (0/1 per event unless said):

* ``override_rate`` — per reviewer decision: edited or rejected (1) vs approved (0);
* ``thumbs_down_rate`` — per thumbs: down (1) vs up (0);
* ``refusal_rate`` — per chat call: refused (``message.refusal``, ``finish_reason:
  content_filter``, a refused RAG answer: needs ``log_bodies``; or a refusal error class);
* ``contract_violation_rate`` — per chat call: ``output_contract_failed`` after repair;
* ``p95_latency`` — p95 of ``latency_ms`` over each ``window`` calls;
* ``cost_per_call`` — mean ``cost`` over each ``window`` calls.

Usage rows carry no task column: the task is read from a logged request body
(``metadata.task``) and is ``-`` otherwise. Shadow calls (``source=shadow``) are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.alerts import AlertCenter
from lockgate.feedback.calls import is_refusal, parse_json
from lockgate.feedback.detectors import PageHinkley
from lockgate.feedback.lease import Lease
from lockgate.feedback.model import OVERRIDE_KINDS, REVIEW_KINDS
from lockgate.settings.feedback import DriftSettings
from lockgate.store.tables import feedback, usage_records

__all__ = ["DriftMonitor", "Signal", "drift_subject"]

log = logging.getLogger("lockgate.feedback.drift")

CONTRACT_FAILED = "output_contract_failed"
_WINDOW_METRICS = frozenset({"p95_latency", "cost_per_call"})
_NO_TASK = "-"


def drift_subject(metric: str, task: str | None, deployment: str | None) -> str:
    return f"{metric}|task={task or _NO_TASK}|deployment={deployment or _NO_TASK}"


@dataclass(frozen=True, slots=True)
class Signal:
    metric: str
    task: str
    deployment: str
    value: float
    row: str
    """Where it came from (``feedback:<id>`` / ``usage:<id>``), for the alert details."""


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass
class _Window:
    latency: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)


class DriftMonitor:
    LEASE = "drift"

    def __init__(self, engine: AsyncEngine, center: AlertCenter, settings: DriftSettings,
                 *, owner: str | None = None) -> None:
        self.engine = engine
        self.center = center
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = Lease(engine, self.LEASE, self.owner, settings.lease_seconds)
        self.detectors: dict[tuple[str, str, str], PageHinkley] = {}
        self.windows: dict[tuple[str, str], _Window] = {}
        self.leader = False
        self.raised: list[str] = []
        """Subjects this monitor's alarms opened (AlertCenter said True), oldest first."""
        self.alarms: list[dict[str, Any]] = []
        """Every alarm of this monitor's detectors (opened or already open)."""

    # ------------------------------------------------------------ signals

    def feedback_signals(self, row: Any) -> list[Signal]:
        task, dep = row["task"] or _NO_TASK, row["deployment"] or _NO_TASK
        ref = f"feedback:{row['id']}"
        out = []
        if row["kind"] in REVIEW_KINDS:
            out.append(Signal("override_rate", task, dep,
                              1.0 if row["kind"] in OVERRIDE_KINDS else 0.0, ref))
        if row["thumbs"] in ("up", "down"):
            out.append(Signal("thumbs_down_rate", task, dep,
                              1.0 if row["thumbs"] == "down" else 0.0, ref))
        return out

    def usage_signals(self, row: Any) -> list[Signal]:
        if row["kind"] != "chat":
            return []
        request = parse_json(row["request_body"])
        meta = request.get("metadata") if isinstance(request, dict) else None
        task = meta.get("task") if isinstance(meta, dict) else None
        task = task if isinstance(task, str) and task else _NO_TASK
        dep = row["deployment"] or _NO_TASK
        ref = f"usage:{row['id']}"
        error = row["error_class"]
        ok = int(row["status"]) < 400
        out = [Signal("contract_violation_rate", task, dep,
                      1.0 if error == CONTRACT_FAILED else 0.0, ref)]
        if ok or error in ("content_filter", "refusal"):
            refused = is_refusal(parse_json(row["response_body"]), error)
            out.append(Signal("refusal_rate", task, dep, 1.0 if refused else 0.0, ref))
        if ok:
            win = self.windows.setdefault((task, dep), _Window())
            win.latency.append(float(row["latency_ms"]))
            win.cost.append(float(row["cost"]))
            if len(win.latency) >= self.settings.window:
                out.append(Signal("p95_latency", task, dep, _p95(win.latency), ref))
                out.append(Signal("cost_per_call", task, dep,
                                  sum(win.cost) / len(win.cost), ref))
                self.windows[(task, dep)] = _Window()
        return out

    def _detector(self, metric: str, task: str, dep: str) -> PageHinkley:
        key = (metric, task, dep)
        found = self.detectors.get(key)
        if found is None:
            s = self.settings
            if metric in _WINDOW_METRICS:
                found = PageHinkley(min_events=s.window_min_samples, delta=s.delta,
                                    threshold=s.threshold, min_std=1e-9,
                                    min_rel_std=s.window_min_rel_std)
            else:
                found = PageHinkley(min_events=s.min_events, delta=s.delta,
                                    threshold=s.threshold, min_std=s.rate_min_std)
            self.detectors[key] = found
        return found

    async def feed(self, signal: Signal) -> bool:
        """One value into its detector; on an alarm, raise the incident. True if raised
        by this call (a new incident)."""
        if signal.metric not in self.settings.metrics:
            return False
        det = self._detector(signal.metric, signal.task, signal.deployment)
        baseline_mean, baseline_std, seen = det.mean, det.std, det.seen
        if not det.update(signal.value):
            return False
        subject = drift_subject(signal.metric, signal.task, signal.deployment)
        details = {
            "metric": signal.metric, "task": signal.task, "deployment": signal.deployment,
            "baseline_mean": round(baseline_mean, 6), "baseline_std": round(baseline_std, 6),
            "value": signal.value, "values_seen": seen + 1,
            "values_after_baseline": seen + 1 - det.min_events, "at": signal.row,
        }
        self.alarms.append(details)
        message = (f"{signal.metric} rose above its baseline {baseline_mean:.4g} for task "
                   f"{signal.task} on deployment {signal.deployment}")
        opened = await self.center.raise_once("drift", subject, message, details)
        if opened:
            self.raised.append(subject)
        return opened

    # ------------------------------------------------------------ rounds

    async def check(self) -> int:
        """One round: hold the lease, read new rows, feed them. Returns rows read."""
        cursor = await self.lease.acquire()
        if cursor is None:
            if self.leader:
                log.info("drift monitor: lease lost to another process")
            self.leader = False
            self.detectors.clear()
            self.windows.clear()
            return 0
        self.leader = True
        batch = self.settings.batch
        fb_after = int(cursor.get("feedback", 0))
        us_after = int(cursor.get("usage", -1))
        async with self.engine.connect() as conn:
            if us_after < 0:  # first holder ever: start from now, not from history
                last = (await conn.execute(sa.select(sa.func.max(usage_records.c.id)))).scalar()
                us_after = int(last or 0)
            fb_rows = (await conn.execute(
                sa.select(feedback.c.id, feedback.c.kind, feedback.c.thumbs, feedback.c.task,
                          feedback.c.deployment)
                .where(feedback.c.id > fb_after).order_by(feedback.c.id).limit(batch)
            )).mappings().all()
            u = usage_records.c
            us_rows = (await conn.execute(
                sa.select(u.id, u.kind, u.source, u.status, u.error_class, u.deployment,
                          u.latency_ms, u.cost, u.request_body, u.response_body)
                .where(u.id > us_after, u.source != "shadow").order_by(u.id).limit(batch)
            )).mappings().all()
        for row in fb_rows:
            for sig in self.feedback_signals(row):
                await self.feed(sig)
        for row in us_rows:
            for sig in self.usage_signals(row):
                await self.feed(sig)
        new_cursor = {"feedback": int(fb_rows[-1]["id"]) if fb_rows else fb_after,
                      "usage": int(us_rows[-1]["id"]) if us_rows else us_after}
        if not await self.lease.save(new_cursor):
            self.leader = False
            self.detectors.clear()
            self.windows.clear()
        return len(fb_rows) + len(us_rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while await self.check() >= self.settings.batch and not stop.is_set():
                    pass  # catch up before sleeping
            except Exception:
                log.exception("drift monitor round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.interval)
        with contextlib.suppress(Exception):
            await self.lease.release()
