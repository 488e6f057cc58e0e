"""Alerts, once per incident across every gateway and worker (table ``alerts``).

:class:`AlertCenter` (``Runtime.alerts``) is the one way lockgate raises an alert:
the queue monitor (:mod:`lockgate.jobs.monitor`) and the drift monitor
(:mod:`lockgate.feedback.drift`) call ``raise_once``/``resolve``; people call
``list``/``ack`` through ``/v1/alerts`` and ``lockgate alerts``. Deliveries: the log,
``lockgate_alerts_total`` on ``/metrics`` and signed webhooks (:mod:`.webhooks`, the
scheme job callbacks use too).
"""

from lockgate.alerts.center import AlertCenter, AlertCounter
from lockgate.alerts.model import ALERT_STATES, Alert, AlertState, incident_key
from lockgate.alerts.webhooks import SIGNATURE_HEADER, WebhookSender, sign, verify

__all__ = [
    "ALERT_STATES",
    "SIGNATURE_HEADER",
    "Alert",
    "AlertCenter",
    "AlertCounter",
    "AlertState",
    "WebhookSender",
    "incident_key",
    "sign",
    "verify",
]
