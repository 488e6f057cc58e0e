"""AlertCenter: raise an incident once across every process, deliver it once.

``raise_once(kind, subject, message, details)`` inserts a row whose unique
``open_key`` is ``<kind>|<subject>`` (``INSERT ... ON CONFLICT DO NOTHING``, on
PostgreSQL and SQLite alike). The one process whose insert lands delivers the
alert (log line, ``lockgate_alerts_total{kind,event}`` counter, signed webhook) and
gets True; every other raise of the same open incident only bumps
``raised_count``/``last_seen_at`` and gets False. ``resolve(kind, subject)`` closes
the incident (``open_key`` becomes NULL, so a later raise is a new incident) and
the one process that closed it delivers ``alert.resolved``.

``ack(id, by)`` records that a person has seen it: the incident stays open (a queue
still over its threshold is not raised again) unless ``resolve=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from lockgate.alerts.model import ALERT_STATES, Alert, incident_key
from lockgate.alerts.webhooks import WebhookSender
from lockgate.store import InvalidInput, NotFoundError
from lockgate.store.engine import writer_engine
from lockgate.store.tables import alerts

__all__ = ["AlertCenter", "AlertCounter"]

log = logging.getLogger("lockgate.alerts")

_MAX_KEY = 500
_MAX_MESSAGE = 2000

Hook = Callable[[str, Alert], Awaitable[None]]


class AlertCounter:
    """``lockgate_alerts_total{kind, event}``: deliveries by this process (raised, resolved;
    summed over processes, once per incident), and ``lockgate_alerts_open{kind, state}``:
    incidents open/acknowledged in the store (every process reports the same numbers)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.counter = Counter(
            "lockgate_alerts", "Alerts delivered, once per incident across processes "
            "(event: raised, resolved)", ["kind", "event"], registry=registry,
        )
        self.open = Gauge(
            "lockgate_alerts_open", "Incidents not yet resolved, as last read from the store "
            "(state: open, acked)", ["kind", "state"], registry=registry,
            multiprocess_mode="max",
        )
        self._seen: set[tuple[str, str]] = set()

    def set_open(self, counts: dict[tuple[str, str], int]) -> None:
        for key in self._seen - set(counts):
            self.open.labels(*key).set(0)
        for key, n in counts.items():
            self.open.labels(*key).set(n)
        self._seen |= set(counts)

    def inc(self, kind: str, event: str) -> None:
        self.counter.labels(kind, event).inc()


def _now() -> datetime:
    return datetime.now(UTC)


def _jsonable(details: Mapping[str, Any] | None) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise InvalidInput("alert details must be a mapping")
    out: dict[str, Any] = json.loads(json.dumps(dict(details), default=str))
    return out


def _alert(row: RowMapping) -> Alert:
    return Alert(
        id=int(row["id"]), kind=row["kind"], subject=row["subject"], state=row["state"],
        message=row["message"], details=dict(row["details"] or {}),
        raised_count=int(row["raised_count"]), raised_at=row["raised_at"],
        last_seen_at=row["last_seen_at"], acked_at=row["acked_at"], acked_by=row["acked_by"],
        resolved_at=row["resolved_at"], delivery=row["delivery"],
    )


def _check(kind: str, subject: str) -> str:
    for name, value in (("kind", kind), ("subject", subject)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"alert {name} must be non-empty text")
    key = incident_key(kind, subject)
    if len(key) > _MAX_KEY:
        raise InvalidInput(f"alert kind + subject longer than {_MAX_KEY} characters")
    return key


class AlertCenter:
    """Incidents in the store (table ``alerts``), delivered once each."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sender: WebhookSender | None = None,
        url: str | None = None,
        counter: AlertCounter | None = None,
    ) -> None:
        self._engine = engine
        self._writer = writer_engine(engine)
        self.sender = sender
        self.url = url
        self.counter = counter or AlertCounter()
        self.hooks: list[Hook] = []
        """Extra deliveries (``await hook(event, alert)``), e.g. tests or a pager."""

    # ------------------------------------------------------------ raising

    async def raise_once(
        self, kind: str, subject: str, message: str, details: Mapping[str, Any] | None = None
    ) -> bool:
        """Open the incident ``(kind, subject)`` unless it is open already.

        True when this call opened it (and delivered it); False when another raise
        (this process or any other) had: that one's row gets ``raised_count + 1``.
        """
        key = _check(kind, subject)
        now = _now()
        text, data = str(message)[:_MAX_MESSAGE], _jsonable(details)
        values: dict[str, Any] = {
            "kind": kind, "subject": subject, "open_key": key, "state": "open",
            "message": text, "details": data, "raised_count": 1, "raised_at": now,
            "last_seen_at": now,
        }
        async with self._writer.begin() as conn:
            stmt = self._insert().values(**values).on_conflict_do_nothing(
                index_elements=["open_key"]
            ).returning(alerts.c.id)
            new_id = (await conn.execute(stmt)).scalar_one_or_none()
            if new_id is None:
                await conn.execute(
                    alerts.update().where(alerts.c.open_key == key).values(
                        raised_count=alerts.c.raised_count + 1, last_seen_at=now
                    )
                )
                return False
        alert = Alert(id=int(new_id), kind=kind, subject=subject, state="open",
                      message=text, details=data, raised_count=1,
                      raised_at=now, last_seen_at=now)
        status = await self._deliver("alert.raised", alert)
        if status is not None:
            async with self._writer.begin() as conn:
                await conn.execute(
                    alerts.update().where(alerts.c.id == alert.id).values(delivery=status)
                )
        return True

    def _insert(self) -> Any:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(alerts)
        return sqlite.insert(alerts)

    async def resolve(self, kind: str, subject: str, details: Mapping[str, Any] | None = None
                      ) -> bool:
        """Close the open incident ``(kind, subject)``; True if this call closed it."""
        key = _check(kind, subject)
        now = _now()
        async with self._writer.begin() as conn:
            row = (await conn.execute(
                alerts.update().where(alerts.c.open_key == key)
                .values(state="resolved", open_key=None, resolved_at=now)
                .returning(*alerts.c)
            )).mappings().first()
        if row is None:
            return False
        alert = _alert(row)
        if details:
            alert = replace(alert, details={**alert.details, "resolution": _jsonable(details)})
        await self._deliver("alert.resolved", alert)
        return True

    async def is_open(self, kind: str, subject: str) -> bool:
        key = _check(kind, subject)
        async with self._engine.connect() as conn:
            found = await conn.execute(sa.select(alerts.c.id).where(alerts.c.open_key == key))
            return found.first() is not None

    async def refresh_gauge(self) -> dict[tuple[str, str], int]:
        """Read the unresolved incidents per (kind, state) into ``lockgate_alerts_open``."""
        stmt = (sa.select(alerts.c.kind, alerts.c.state, sa.func.count())
                .where(alerts.c.open_key.is_not(None))
                .group_by(alerts.c.kind, alerts.c.state))
        async with self._engine.connect() as conn:
            counts = {(k, s): int(n) for k, s, n in await conn.execute(stmt)}
        self.counter.set_open(counts)
        return counts

    async def watch(self, stop: asyncio.Event, interval: float) -> None:
        """Refresh the gauge every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            try:
                await self.refresh_gauge()
            except Exception:
                log.exception("alert gauge refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    # ------------------------------------------------------------ people

    async def list(
        self, state: str | None = None, *, kind: str | None = None, limit: int = 100
    ) -> list[Alert]:
        """Newest first; ``state`` one of open, acked, resolved (None: all)."""
        if state is not None and state not in ALERT_STATES:
            raise InvalidInput(f"state must be one of {', '.join(ALERT_STATES)}")
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be from 1 to 10000")
        stmt = sa.select(alerts).order_by(alerts.c.id.desc()).limit(limit)
        if state is not None:
            stmt = stmt.where(alerts.c.state == state)
        if kind is not None:
            stmt = stmt.where(alerts.c.kind == kind)
        async with self._engine.connect() as conn:
            return [_alert(r) for r in (await conn.execute(stmt)).mappings()]

    async def get(self, alert_id: int) -> Alert:
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                sa.select(alerts).where(alerts.c.id == alert_id))).mappings().first()
        if row is None:
            raise NotFoundError(f"no alert with id {alert_id}")
        return _alert(row)

    async def ack(self, alert_id: int, by: str, *, resolve: bool = False) -> Alert:
        """Mark seen by ``by`` (kept if already acknowledged); ``resolve`` also closes it."""
        if not isinstance(by, str) or not by.strip():
            raise InvalidInput("ack needs who acknowledged ('by')")
        now = _now()
        async with self._writer.begin() as conn:
            row = (await conn.execute(
                sa.select(alerts).where(alerts.c.id == alert_id))).mappings().first()
            if row is None:
                raise NotFoundError(f"no alert with id {alert_id}")
            values: dict[str, Any] = {}
            if row["acked_at"] is None:
                values.update(acked_at=now, acked_by=by.strip()[:200])
            if row["state"] == "open":
                values["state"] = "acked"
            closing = resolve and row["state"] != "resolved"
            if closing:
                values.update(state="resolved", open_key=None, resolved_at=now)
            if values:
                await conn.execute(alerts.update().where(alerts.c.id == alert_id).values(**values))
            row = (await conn.execute(
                sa.select(alerts).where(alerts.c.id == alert_id))).mappings().one()
        alert = _alert(row)
        if closing:
            await self._deliver("alert.resolved", alert)
        return alert

    # ------------------------------------------------------------ delivery

    async def _deliver(self, event: str, alert: Alert) -> str | None:
        """Log, count, hooks, webhook; returns the webhook outcome (None: no webhook)."""
        log.warning("%s %s %s: %s %s", event, alert.kind, alert.subject, alert.message,
                    json.dumps(alert.details, default=str))
        self.counter.inc(alert.kind, event.removeprefix("alert."))
        for hook in self.hooks:
            try:
                await hook(event, alert)
            except Exception:
                log.exception("alert hook failed")
        if self.sender is None or not self.url:
            return None
        try:
            return await self.sender.send(self.url, event, {"event": event, **alert.as_dict()})
        except Exception as exc:  # a delivery problem must never break the raiser
            log.exception("alert webhook failed")
            return f"failed {type(exc).__name__}"
