"""The drift monitor on SQLite and PostgreSQL: one alert per shift, none on stable
streams, one reader at a time across processes (the lease), alerts in the store."""

from __future__ import annotations

import json
import random
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa

from lockgate.alerts import AlertCenter
from lockgate.feedback import DriftMonitor, FeedbackService, Subject, drift_subject
from lockgate.settings import DriftSettings
from lockgate.store import Store
from lockgate.store.tables import feedback
from tests.feedback.conftest import usage

SHIFT_AT = 1500
MAX_DELAY = 150  # events after the shift; docs/feedback.md


async def drain(monitor: DriftMonitor) -> int:
    total = 0
    while (n := await monitor.check()) > 0:
        total += n
    return total


async def bulk_decisions(store: Store, rates: list[tuple[float, int]], seed: int,
                         task: str = "refunds", deployment: str = "fast#0") -> None:
    """Reviewer decisions straight into the table (fast), in order."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows = [{
        "feedback_id": "fb_" + secrets.token_hex(8), "created_at": now, "kind":
        "review_edited" if rng.random() < p else "review_approved", "source": "review",
        "task": task, "model": "fast", "deployment": deployment,
    } for p, n in rates for _ in range(n)]
    async with store.engine.begin() as conn:
        for i in range(0, len(rows), 2000):
            await conn.execute(feedback.insert(), rows[i:i + 2000])


async def test_override_shift_raises_exactly_one_alert_within_documented_events(
    store: Store,
) -> None:
    svc = FeedbackService(store.engine)
    center = AlertCenter(store.engine)
    monitor = DriftMonitor(store.engine, center, DriftSettings())
    rng = random.Random(11)
    await bulk_decisions(store, [(0.05, SHIFT_AT - 100)], seed=11)
    await drain(monitor)
    for i in range(SHIFT_AT - 100, SHIFT_AT + 600):  # the last ones through the real API
        p = 0.05 if i < SHIFT_AT else 0.40
        await svc.record("review_edited" if rng.random() < p else "review_approved",
                         subject=Subject(review_id=f"rev_{i}", task="refunds", model="fast",
                                         deployment="fast#0"),
                         source="review")
        if i % 200 == 199:
            await drain(monitor)  # the monitor reads as rows arrive
    await drain(monitor)
    alerts = await center.list(kind="drift")
    assert [a.subject for a in alerts] == [drift_subject("override_rate", "refunds", "fast#0")]
    details = alerts[0].details
    assert details["baseline_mean"] < 0.1
    at = int(details["at"].removeprefix("feedback:"))
    async with store.engine.connect() as conn:
        ids = await conn.execute(sa.select(feedback.c.id).order_by(feedback.c.id))
        order = [r[0] for r in ids]
    delay = order.index(at) - SHIFT_AT
    assert 0 <= delay <= MAX_DELAY, delay
    assert monitor.raised == [alerts[0].subject]


async def test_stable_stream_of_10000_raises_nothing(store: Store) -> None:
    await bulk_decisions(store, [(0.05, 10_000)], seed=5)
    center = AlertCenter(store.engine)
    monitor = DriftMonitor(store.engine, center, DriftSettings())
    assert await drain(monitor) == 10_000
    assert await center.list() == [] and monitor.alarms == []


async def test_usage_contract_violations_and_latency(store: Store) -> None:
    rng = random.Random(2)
    center = AlertCenter(store.engine)
    settings = DriftSettings(window=10, window_min_samples=30)
    monitor = DriftMonitor(store.engine, center, settings)
    await drain(monitor)  # the first holder starts at the end of the usage history
    body = json.dumps({"metadata": {"task": "invoices"}, "messages": []})
    records = []
    for i in range(2000):
        shifted = i >= 1200
        failed = rng.random() < (0.30 if shifted else 0.02)
        records.append(usage(
            f"req_{i}", request_body=body, deployment="fast#0",
            status=502 if failed else 200,
            error_class="output_contract_failed" if failed else None,
            latency_ms=rng.gauss(900 if shifted else 300, 20),
        ))
    records.append(usage("req_shadow", source="shadow", latency_ms=99_999))
    for i in range(0, len(records), 500):
        await store.write_usage(records[i:i + 500])
    await drain(monitor)
    subjects = sorted(a.subject for a in await center.list())
    assert subjects == [
        drift_subject("contract_violation_rate", "invoices", "fast#0"),
        drift_subject("p95_latency", "invoices", "fast#0"),
    ]
    # refusals and cost did not move: no alarm for them
    assert {a["metric"] for a in monitor.alarms} == {"contract_violation_rate", "p95_latency"}


async def test_two_monitors_share_the_work_through_the_lease(store: Store, db_url: str) -> None:
    other = await Store.open(db_url)
    try:
        settings = DriftSettings(lease_seconds=60)
        a = DriftMonitor(store.engine, AlertCenter(store.engine), settings, owner="gw-a")
        b = DriftMonitor(other.engine, AlertCenter(other.engine), settings, owner="gw-b")
        await bulk_decisions(store, [(0.05, 1500)], seed=1)
        assert await a.check() == 1500 and a.leader
        assert await b.check() == 0 and not b.leader
        await bulk_decisions(store, [(0.40, 500)], seed=2)
        await b.check()
        await a.check()
        await b.check()
        alerts = await AlertCenter(store.engine).list()
        assert len(alerts) == 1 and a.raised == [alerts[0].subject] and b.alarms == []
        # a stops: b takes over where a left off (no row is read twice)
        await a.lease.release()
        await bulk_decisions(store, [(0.05, 10)], seed=3)
        assert await b.check() == 10 and b.leader
        assert await a.check() == 0 and not a.leader
    finally:
        await other.close()
