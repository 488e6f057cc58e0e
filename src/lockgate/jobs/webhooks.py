"""Signed webhooks for job callbacks: the sender lives in :mod:`lockgate.alerts.webhooks`
(alerts use the same scheme); this module keeps the jobs feature's import path."""

from lockgate.alerts.webhooks import SIGNATURE_HEADER, WebhookSender, sign, verify

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "sign", "verify"]
