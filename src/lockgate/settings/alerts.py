"""``alerts:`` section of lockgate.yaml (``Config.alerts``): where incidents are delivered.

Every alert (queue thresholds, drift and degradation) is raised through
:class:`lockgate.alerts.AlertCenter`: one row per open incident in the store, one
delivery by the process that opened it. Deliveries go to the log, the
``lockgate_alerts`` counter on ``/metrics`` and, with a URL, a signed webhook::

    alerts:
      webhook_url: https://ops.example/hooks/lockgate   # default: jobs.alerts.url
      webhook_secret: env:LOCKGATE_ALERT_SECRET        # default: jobs.webhook_secret
      webhook_attempts: 5
      gauge_interval: 15          # seconds between refreshes of lockgate_alerts_open
"""

from __future__ import annotations

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["AlertsSettings"]


class AlertsSettings(Strict):
    webhook_url: str | None = None
    """Signed webhook for every alert (``alert.raised``, ``alert.resolved``); unset: the
    queue alerts' ``jobs.alerts.url`` if set, else no webhook (log + metrics only)."""
    webhook_secret: str | None = None
    """HMAC key (``env:NAME``); unset: ``jobs.webhook_secret``. No secret: no webhook."""
    webhook_attempts: int = Field(5, ge=1, le=20)
    gauge_interval: float = Field(15.0, gt=0)
    """Seconds between reads of the open incidents into ``lockgate_alerts_open`` (each
    gateway and worker that runs monitors)."""
