"""An alert as read back from the store: a plain frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["ALERT_STATES", "Alert", "AlertState", "incident_key"]

AlertState = Literal["open", "acked", "resolved"]
ALERT_STATES: tuple[AlertState, ...] = ("open", "acked", "resolved")


def incident_key(kind: str, subject: str) -> str:
    """What makes two raises the same incident: the kind and the subject."""
    return f"{kind}|{subject}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    kind: str
    subject: str
    state: AlertState
    message: str
    details: dict[str, Any] = field(hash=False)
    raised_count: int
    """How many times the incident was raised while open (by any process)."""
    raised_at: datetime
    last_seen_at: datetime
    acked_at: datetime | None = None
    acked_by: str | None = None
    resolved_at: datetime | None = None
    delivery: str | None = None
    """The webhook outcome of the first delivery (``delivered 200 (attempt 1)``, ...)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "alert",
            "kind": self.kind,
            "subject": self.subject,
            "state": self.state,
            "message": self.message,
            "details": self.details,
            "raised_count": self.raised_count,
            "raised_at": _iso(self.raised_at),
            "last_seen_at": _iso(self.last_seen_at),
            "acked_at": _iso(self.acked_at),
            "acked_by": self.acked_by,
            "resolved_at": _iso(self.resolved_at),
            "delivery": self.delivery,
        }
