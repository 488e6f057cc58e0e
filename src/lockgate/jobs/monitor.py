"""Queue gauges for Prometheus, threshold alerts (signed webhooks) and result expiry.

:class:`QueueMonitor` polls ``queue.stats()`` every ``alerts.interval``
seconds, sets the gauges (``lockgate_jobs_depth``, ``lockgate_jobs_oldest_age_seconds``,
``lockgate_jobs_in_flight``, ``lockgate_jobs_dlq``), raises an alert when a threshold
is crossed and resolves it when it clears, drops expired results (``queue.expire_results``)
and, ``tombstone_ttl`` after that, the jobs themselves (``queue.forget``: the idempotency
window ends). Run one per process that serves the API or runs workers; they are idempotent.

With an :class:`~lockgate.alerts.AlertCenter` (what :class:`~lockgate.runtime.Runtime`
passes) the alert is the incident ``kind="queue", subject="<queue>:<metric>"`` in the
store: N gateways and workers watching one queue raise it once and deliver it once
(``alert.raised`` / ``alert.resolved`` webhooks, the log, ``lockgate_alerts_total``).
Without one (a monitor on its own), this process sends ``queue.alert`` /
``queue.resolved`` webhooks itself, once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from lockgate.alerts import AlertCenter, WebhookSender
from lockgate.jobs.model import QueueStats
from lockgate.jobs.queue import JobQueue
from lockgate.settings.jobs import AlertSettings

__all__ = ["JobsGauges", "QueueMonitor", "breaches"]

log = logging.getLogger("lockgate.jobs.monitor")


class JobsGauges:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.depth = Gauge(
            "lockgate_jobs_depth", "Jobs waiting", ["queue"], registry=r, multiprocess_mode="max"
        )
        self.oldest_age = Gauge(
            "lockgate_jobs_oldest_age_seconds",
            "Age of the oldest waiting job",
            ["queue"],
            registry=r,
            multiprocess_mode="max",
        )
        self.in_flight = Gauge(
            "lockgate_jobs_in_flight",
            "Jobs leased to workers",
            ["queue"],
            registry=r,
            multiprocess_mode="max",
        )
        self.dlq = Gauge(
            "lockgate_jobs_dlq",
            "Jobs in the dead-letter queue",
            ["queue"],
            registry=r,
            multiprocess_mode="max",
        )

    def set(self, queue: str, stats: QueueStats) -> None:
        self.depth.labels(queue).set(stats.depth)
        self.oldest_age.labels(queue).set(stats.oldest_age)
        self.in_flight.labels(queue).set(stats.in_flight)
        self.dlq.labels(queue).set(stats.dlq)


def breaches(stats: QueueStats, alerts: AlertSettings) -> dict[str, dict[str, float]]:
    """Thresholds crossed now: name -> {value, limit}."""
    out: dict[str, dict[str, float]] = {}
    if alerts.max_depth is not None and stats.depth >= alerts.max_depth:
        out["depth"] = {"value": stats.depth, "limit": alerts.max_depth}
    if alerts.max_age is not None and stats.oldest_age >= alerts.max_age:
        out["oldest_age"] = {"value": round(stats.oldest_age, 3), "limit": alerts.max_age}
    if alerts.max_dlq is not None and stats.dlq >= alerts.max_dlq:
        out["dlq"] = {"value": stats.dlq, "limit": alerts.max_dlq}
    return out


class QueueMonitor:
    def __init__(
        self,
        queue: JobQueue,
        alerts: AlertSettings,
        *,
        name: str = "default",
        gauges: JobsGauges | None = None,
        sender: WebhookSender | None = None,
        tombstone_ttl: float = 30 * 24 * 3600.0,
        center: AlertCenter | None = None,
    ) -> None:
        self.tombstone_ttl = tombstone_ttl
        self.center = center
        self.queue = queue
        self.alerts = alerts
        self.name = name
        self.gauges = gauges or JobsGauges()
        self.sender = sender
        self.active: set[str] = set()
        self.sent: list[dict[str, Any]] = []
        """Alert payloads sent (or logged) by this monitor, newest last."""

    async def check(self) -> QueueStats:
        """One round: gauges, alerts on change, expiry sweep."""
        stats = await self.queue.stats()
        self.gauges.set(self.name, stats)
        now = breaches(stats, self.alerts)
        if self.center is not None:
            await self._incidents(now)
        else:
            for key in sorted(set(now) - self.active):
                await self._alert("queue.alert", key, now[key])
            for key in sorted(self.active - set(now)):
                await self._alert("queue.resolved", key, {})
        self.active = set(now)
        await self.queue.expire_results()
        await self.queue.forget(time.time() - self.tombstone_ttl)
        return stats

    async def _incidents(self, now: dict[str, dict[str, float]]) -> None:
        """Every round: raise what is breached, resolve what is not (both idempotent in the
        store, so every process may do it; only the first raise/resolve delivers). A
        threshold that clears in one process's view resolves the incident for all."""
        assert self.center is not None
        limits = {"depth": self.alerts.max_depth, "oldest_age": self.alerts.max_age,
                  "dlq": self.alerts.max_dlq}
        for key in (k for k, limit in limits.items() if limit is not None):
            subject = f"{self.name}:{key}"
            if key in now:
                detail = now[key]
                message = (f"queue {self.name}: {key} {detail['value']} reached the limit "
                           f"{detail['limit']}")
                if await self.center.raise_once("queue", subject, message,
                                                {"queue": self.name, "metric": key, **detail}):
                    self.sent.append({"event": "alert.raised", "queue": self.name,
                                      "metric": key, "at": time.time(), **detail})
            elif await self.center.resolve("queue", subject):
                self.sent.append({"event": "alert.resolved", "queue": self.name,
                                  "metric": key, "at": time.time()})

    async def _alert(self, event: str, key: str, detail: dict[str, float]) -> None:
        payload: dict[str, Any] = {
            "event": event,
            "queue": self.name,
            "metric": key,
            "at": time.time(),
            **detail,
        }
        self.sent.append(payload)
        log.warning("%s %s %s", event, key, detail)
        if self.alerts.url and self.sender is not None:
            status = await self.sender.send(self.alerts.url, event, payload)
            payload["delivery"] = status

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("queue monitor round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.alerts.interval)
