"""5 reviewers on 2 gateways sharing one PostgreSQL (and one SQLite file) over 500 items:
no item decided twice, none lost. And SLA breaches escalate exactly once across processes."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from lockgate.jobs.webhooks import Attempt, WebhookSender
from lockgate.review import NewReview, ReviewRepository, ReviewService
from lockgate.review.webhook_outbox import ReviewWebhookOutbox
from lockgate.settings import ReviewSettings
from lockgate.store import Store
from lockgate.store.chain import verify_chain
from lockgate.store.tables import usage_records
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config
from tests.review.conftest import REVIEW_YAML

ITEMS = 500


async def _seed(url: str, n: int) -> list[str]:
    store = await Store.open(url)
    try:
        repo = ReviewRepository(store)
        ids = []
        for i in range(n):
            item = await repo.insert(NewReview(
                task="invoice", source="http", input={"n": i}, output={"amount": 20000 + i},
                reasons=["predicate $.amount > 10000"], team="finance"))
            ids.append(item.id)
        return ids
    finally:
        await store.close()


async def _audit_events(url: str) -> tuple[bool, Counter[str]]:
    store = await Store.open(url, migrate=False)
    try:
        async with store.engine.connect() as conn:
            report = await verify_chain(conn)
            rows = (await conn.execute(
                sa.select(usage_records.c.request_id, usage_records.c.error_class)
                .where(usage_records.c.kind == "review"))).all()
        return report.ok, Counter(f"{rid.split(':')[0]}:{ev}" for rid, ev in rows)
    finally:
        await store.close()


def test_five_reviewers_two_gateways(upstream: str, database_url: str,
                                     tmp_path: Path) -> None:
    servers = []
    for i in range(2):
        home = tmp_path / f"gw{i}"
        home.mkdir()
        servers.append(ServerThread(gateway_config(upstream, home, database_url, REVIEW_YAML),
                                    home))
    urls = [s.start() for s in servers]
    try:
        gw = Gateway(urls[0], MASTER, "", tmp_path, database_url)
        keys = [gw.new_key("finance") for _ in range(5)]
        ids = asyncio.run(_seed(database_url, ITEMS))
        decided: list[list[str]] = [[] for _ in keys]
        conflicts = Counter[int]()

        def reviewer(n: int) -> None:
            with httpx.Client(base_url=urls[n % 2], timeout=30,
                              headers={"Authorization": f"Bearer {keys[n]}"}) as c:
                while True:
                    got = c.post("/v1/reviews/claim", json={"task": "invoice"})
                    assert got.status_code == 200, got.text
                    item = got.json()["item"]
                    if item is None:
                        return
                    action = {"action": "approve"} if n % 2 else {
                        "action": "reject", "reason": f"reviewer {n}"}
                    d = c.post(f"/v1/reviews/{item['id']}/decide", json=action)
                    if d.status_code == 409:
                        conflicts[n] += 1
                        continue
                    assert d.status_code == 200, d.text
                    decided[n].append(item["id"])

        threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        all_decided = [i for d in decided for i in d]
        seeded = set(ids)
        mine = [i for i in all_decided if i in seeded]
        assert len(mine) == len(set(mine)) == ITEMS  # none twice, none lost
        assert sum(1 for d in decided if d) >= 2  # the work really was shared
        assert sum(conflicts.values()) == 0  # a claimed item is never decided by another
        ok, events = asyncio.run(_audit_events(database_url))
        assert ok
        for rid in ids:
            assert events[f"{rid}:decided"] == 1
            assert events[f"{rid}:claimed"] == 1
    finally:
        for s in servers:
            s.stop()


class _NoSender(WebhookSender):
    async def attempt(self, url: str, event: str, body: bytes,
                      delivery_id: str | None = None) -> Attempt:
        raise AssertionError("nothing is sent in this test")


@pytest.mark.asyncio
async def test_sla_breach_escalates_once_across_processes(database_url: str) -> None:
    stores = [await Store.open(database_url) for _ in range(2)]
    try:
        settings = ReviewSettings()
        outboxes = [ReviewWebhookOutbox(s, _NoSender("unused"), "http://127.0.0.1:9/unused")
                    for s in stores]
        services = [ReviewService(settings, ReviewRepository(s), webhooks=o)
                    for s, o in zip(stores, outboxes, strict=True)]
        breaches: list[str] = []

        async def on_breach(item: object) -> None:
            breaches.append(item.id)

        for svc in services:
            svc.on_breach.append(on_breach)
        item = await services[0].submit(NewReview(
            task="sla-test", source="http", input={}, output={}, reasons=["r"], team="l1",
            escalate_to="l2", sla_s=0.05))
        await asyncio.sleep(0.1)
        results = await asyncio.gather(*(svc.sweep() for svc in services for _ in range(3)))
        assert sum(r["breached"] for r in results) == 1
        assert breaches == [item.id]
        after = await services[1].repo.get(item.id)
        assert after.sla_breached and after.team == "l2" and after.escalations == 1
        # one webhook row per event, written with the change (not sent here: no sender loop)
        rows = await outboxes[1].rows(item_id=item.id)
        assert sorted(r.event for r in rows) == ["review.created", "review.sla_breached"]
    finally:
        for svc in services:
            await svc.aclose()
        for s in stores:
            await s.close()
