"""Review webhooks to a real receiver on loopback: created, decided, sla_breached, signed;
and the SLA breach is an alert listed once."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import orjson
import pytest

from lockgate.alerts.webhooks import SIGNATURE_HEADER, verify
from lockgate.pipeline.call import Principal
from lockgate.review import NewReview
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from tests.multi.test_multi_canary import Hooks

SECRET = "review-hook-secret-0123"


@pytest.mark.asyncio
async def test_review_webhooks_are_signed_and_sent(own_database_url: str, tmp_path: Path) -> None:
    hooks = Hooks()
    os.environ["LG_TEST_REVIEW_SECRET"] = SECRET
    cfg = parse_config(json.dumps({
        "home": str(tmp_path), "database_url": own_database_url,
        "review": {"webhook_url": hooks.url, "webhook_secret": "env:LG_TEST_REVIEW_SECRET",
                   "sweep_interval_s": 0.1},
    }))
    rt = await Runtime.start(cfg, jobs=False, warm_up=False, monitor=True)  # (as a server)
    try:
        assert rt.review is not None and rt.alerts is not None
        admin = Principal(key_id="alice", team_id=None, is_master=True)
        a = await rt.review.submit(NewReview(task="wh", source="http", input={"q": 1},
                                             output={"amount": 5}, reasons=["r"]))
        b = await rt.review.submit(NewReview(task="wh", source="http", input={"q": 2},
                                             output={}, reasons=["r"], team="l1",
                                             escalate_to="l2", sla_s=0.05))
        await rt.review.decide(a.id, admin, "approve")
        await asyncio.sleep(0.1)
        await rt.review.sweep()
        await rt.review.sweep()  # a second sweep breaches nothing more
        deadline = time.monotonic() + 10
        while len(hooks.received) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        events = []
        for headers, raw in hooks.received:
            assert verify(SECRET, raw, headers[SIGNATURE_HEADER.lower()])
            doc = orjson.loads(raw)
            assert headers["x-lockgate-event"] == doc["event"]
            events.append((doc["event"], doc["review"]["id"]))
        assert sorted(events) == sorted([
            ("review.created", a.id), ("review.created", b.id),
            ("review.decided", a.id), ("review.sla_breached", b.id)])
        alerts = await rt.alerts.list("open")
        breached = [al for al in alerts if al.kind == "review_sla" and al.subject == b.id]
        assert len(breached) == 1
    finally:
        await rt.aclose()
        hooks.close()
        os.environ.pop("LG_TEST_REVIEW_SECRET", None)
