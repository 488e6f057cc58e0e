"""The review webhooks' outbox on SQLite and PostgreSQL, to a real receiver on loopback.

A decision made by a process that dies before sending is delivered by another instance; a
5xx is retried under the same delivery id; a 404 is dead at once and kept; two instances
never take the same row; a taker that died leaves its rows due again at the lease's end."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from typing import Any

import orjson
import pytest

from lockgate.jobs.webhooks import SIGNATURE_HEADER, WebhookSender, verify
from lockgate.pipeline.call import Principal
from lockgate.review import NewReview, ReviewRepository, ReviewService
from lockgate.review.webhook_outbox import ReviewWebhookOutbox
from lockgate.settings import ReviewSettings
from lockgate.store import Store
from tests.support.cli_console import wide_console  # noqa: F401  (fixture)

SECRET = "review-outbox-secret-0123"
ADMIN = Principal(key_id="alice", team_id=None, is_master=True)


class Receiver:
    """Records every POST; answers with the next scripted status (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                me.received.append(({k.lower(): v for k, v in self.headers.items()},
                                    self.rfile.read(n)))
                self.send_response(me.statuses.pop(0) if me.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, str, str]]:
        out = []
        for headers, raw in self.received:
            assert verify(SECRET, raw, headers[SIGNATURE_HEADER.lower()])
            doc = orjson.loads(raw)
            assert headers["x-lockgate-event"] == doc["event"]
            assert headers["x-lockgate-delivery"] == doc["delivery_id"]
            out.append((doc["event"], doc["review"]["id"], doc["delivery_id"]))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _outbox(store: Store, url: str, **kw: Any) -> ReviewWebhookOutbox:
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.1)
    return ReviewWebhookOutbox(store, WebhookSender(SECRET), url, **kw)


def _review(**kw: Any) -> NewReview:
    return NewReview(task="wh", source="http", input={"q": 1}, output={"amount": 5},
                     reasons=["r"], **kw)


async def _drain(outbox: ReviewWebhookOutbox, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await outbox.run_once()
        if not await outbox.rows(state="pending"):
            return
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_a_decision_whose_process_died_is_delivered_by_another(own_database_url: str
                                                                     ) -> None:
    hooks = Receiver()
    first, second = await Store.open(own_database_url), await Store.open(own_database_url)
    try:
        # the first instance decides and "dies": its sender never runs
        dying = ReviewService(ReviewSettings(), ReviewRepository(first),
                              webhooks=_outbox(first, hooks.url))
        item = await dying.submit(_review())
        await dying.decide(item.id, ADMIN, "approve")
        assert hooks.received == []
        # the second instance's sender delivers both, each once, signed
        other = _outbox(second, hooks.url)
        await _drain(other)
        got = hooks.events()
        assert sorted(e[:2] for e in got) == [("review.created", item.id),
                                              ("review.decided", item.id)]
        decided = next(orjson.loads(raw) for _, raw in hooks.received
                       if b"review.decided" in raw)
        assert decided["review"]["state"] == "approved"
        rows = await other.rows(item_id=item.id)
        assert {r.state for r in rows} == {"delivered"}
        assert all(r.status and r.status.startswith("delivered 200") for r in rows)
        await other.run_once()
        assert len(hooks.received) == 2  # delivered rows are not sent again
    finally:
        hooks.close()
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_a_5xx_is_retried_under_the_same_delivery_id_and_a_404_is_dead(
        own_database_url: str) -> None:
    hooks = Receiver([503, 500])
    store = await Store.open(own_database_url)
    try:
        outbox = _outbox(store, hooks.url)
        svc = ReviewService(ReviewSettings(), ReviewRepository(store), webhooks=outbox)
        item = await svc.submit(_review())
        await _drain(outbox)
        got = hooks.events()
        assert [e[:2] for e in got] == [("review.created", item.id)] * 3
        assert len({e[2] for e in got}) == 1  # one delivery id on every try
        (row,) = await outbox.rows(item_id=item.id)
        assert row.state == "delivered" and row.attempts == 3
        assert row.status == "delivered 200 (attempt 3)"

        hooks.statuses = [404]
        await svc.decide(item.id, ADMIN, "reject", reason="wrong vendor")
        await _drain(outbox)
        dead = await outbox.rows(item_id=item.id, state="dead")
        assert [r.event for r in dead] == ["review.decided"]
        assert dead[0].status == "failed HTTP 404 (attempt 1, not retried, dead-lettered)"
        assert len(hooks.received) == 4  # not retried
    finally:
        hooks.close()
        await store.close()


@pytest.mark.asyncio
async def test_two_instances_never_take_the_same_row_and_a_dead_taker_lets_go(
        own_database_url: str) -> None:
    stores = [await Store.open(own_database_url) for _ in range(2)]
    try:
        svc = ReviewService(ReviewSettings(), ReviewRepository(stores[0]),
                            webhooks=_outbox(stores[0], "http://127.0.0.1:9/x"))
        ids = [(await svc.submit(_review())).id for _ in range(40)]
        takers = [_outbox(s, "http://127.0.0.1:9/x", batch=7, lease=0.5) for s in stores]
        taken: list[list[str]] = [[], []]
        for _ in range(4):  # both at once, four times: 2 x 4 x 7 >= 40
            got = await asyncio.gather(*(t.take_due() for t in takers))
            for i, rows in enumerate(got):
                taken[i] += [r.item_id for r in rows]
        assert sorted(taken[0] + taken[1]) == sorted(ids)  # each row once, none lost
        assert taken[0] and taken[1]
        # both takers "died" holding their rows: nothing is due until the leases run out
        assert await takers[0].take_due() == []
        again = await takers[1].take_due(now=time.time() + 1.0)
        assert len(again) == 7 and all(r.attempts == 2 for r in again)
    finally:
        for s in stores:
            await s.close()


@pytest.mark.asyncio
async def test_old_delivered_rows_are_purged(own_database_url: str) -> None:
    hooks = Receiver()
    store = await Store.open(own_database_url)
    try:
        outbox = _outbox(store, hooks.url, keep_delivered_s=3600)
        svc = ReviewService(ReviewSettings(), ReviewRepository(store), webhooks=outbox)
        item = await svc.submit(_review())
        await _drain(outbox)
        assert [r.state for r in await outbox.rows()] == ["delivered"]
        assert await outbox.purge() == 0  # younger than an hour
        assert await outbox.purge(now=time.time() + 7200) == 1
        assert await outbox.rows(item_id=item.id) == []
    finally:
        hooks.close()
        await store.close()


@pytest.mark.usefixtures("wide_console")
def test_cli_lists_and_resends_dead_webhooks(tmp_path: Any) -> None:
    """``lockgate review webhooks list|resend``: a 404'd row is listed dead, resent, then
    delivered; bad input is one line and a non-zero exit."""
    from typer.testing import CliRunner

    from lockgate.cli.app import app

    db = f"sqlite:///{tmp_path / 'lg.db'}"
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"home: {tmp_path}\ndatabase_url: {db}\n")
    hooks = Receiver([404])

    async def dead_row() -> tuple[str, str]:
        store = await Store.open(db)
        try:
            outbox = _outbox(store, hooks.url)
            svc = ReviewService(ReviewSettings(), ReviewRepository(store), webhooks=outbox)
            item = await svc.submit(_review())
            await _drain(outbox)
            (row,) = await outbox.rows(item_id=item.id)
            assert row.state == "dead"
            return item.id, row.id
        finally:
            await store.close()

    async def deliver() -> list[str]:
        store = await Store.open(db)
        try:
            outbox = _outbox(store, hooks.url)
            await _drain(outbox)
            return [r.state for r in await outbox.rows()]
        finally:
            await store.close()

    try:
        item_id, row_id = asyncio.run(dead_row())
        runner = CliRunner()
        out = runner.invoke(app, ["review", "webhooks", "list", "--state", "dead",
                                  "-c", str(cfg)])
        assert out.exit_code == 0 and row_id in out.output and "HTTP 404" in out.output
        out = runner.invoke(app, ["review", "webhooks", "resend", "rwh_nope", "-c", str(cfg)])
        assert out.exit_code == 1 and "no dead webhook row" in out.output
        out = runner.invoke(app, ["review", "webhooks", "resend", "-c", str(cfg)])
        assert out.exit_code == 2
        out = runner.invoke(app, ["review", "webhooks", "list", "--state", "odd", "-c", str(cfg)])
        assert out.exit_code == 2 and "--state" in out.output
        out = runner.invoke(app, ["review", "webhooks", "resend", row_id, "-c", str(cfg)])
        assert out.exit_code == 0 and "1 webhook row(s) due again" in out.output
        assert asyncio.run(deliver()) == ["delivered"]
        out = runner.invoke(app, ["review", "webhooks", "list", "--item", item_id,
                                  "-c", str(cfg)])
        assert out.exit_code == 0 and "delivered" in out.output
        assert len(hooks.received) == 2  # the 404, then the resend
    finally:
        hooks.close()
