"""The consumer on the real PostgreSQL and MariaDB: write-backs, order, DLQ, events, NOTIFY."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest
import sqlalchemy as sa

from lockgate.cdc import (
    CdcConsumer,
    CdcLedger,
    Destination,
    install_capture,
    open_database,
    task_transform,
)
from lockgate.cdc.database import CdcDatabase
from lockgate.runtime import Runtime
from lockgate.store.tables import cdc_applied, cdc_dead
from lockgate.testing.stub_upstream import StubUpstream
from tests.cdc.conftest import UserDb


async def _consumer(runtime: Runtime, db: CdcDatabase, dest: Destination, *, task: str = "gist",
                    select: str | None = "text", **kw: object) -> CdcConsumer:
    spec = await db.capture("tickets")
    assert spec is not None
    opts: dict[str, object] = {"concurrency": 8, "lease": 5.0, "poll_interval": 0.05,
                               "backoff_base": 0.05, "backoff_cap": 0.1, **kw}
    return CdcConsumer(db, CdcLedger(runtime.store.engine), spec,
                       task_transform(runtime.task_runner("cdc"), task, select), dest,
                       **opts)  # type: ignore[arg-type]


async def _count(runtime: Runtime, table: sa.Table) -> int:
    async with runtime.store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar()
                   or 0)


@pytest.fixture
async def db(userdb: UserDb) -> object:
    d = open_database(userdb.url, pool_size=10)
    await d.open()
    await install_capture(d, "tickets", "tickets", ["body"])
    yield d
    await d.aclose()


async def test_write_back_column_applies_and_never_retriggers(
        userdb: UserDb, db: CdcDatabase, runtime: Runtime) -> None:
    for i in range(1, 13):
        userdb.q("INSERT INTO tickets (id, body, status) VALUES (%s, %s, 'open')",
                 (i, f"ticket {i} text"))
    consumer = await _consumer(runtime, db, Destination(column="summary"))
    stats = await consumer.drain()
    assert stats.applied == 12 and stats.dead == 0
    rows = userdb.q("SELECT id, summary FROM tickets ORDER BY id")
    assert rows == [(i, f"ticket {i} text") for i in range(1, 13)]  # the model's answers
    # the write-backs updated 12 rows of the captured table: none came back as a change
    assert userdb.q(f"SELECT count(*) FROM {userdb.outbox}")[0][0] == 0
    assert (await consumer.drain()).applied == 12
    assert await _count(runtime, cdc_applied) == 12
    # an application's own update is captured again as usual
    userdb.q("UPDATE tickets SET body = 'new text' WHERE id = 3")
    assert (await consumer.drain()).applied == 13
    assert userdb.q("SELECT summary FROM tickets WHERE id = 3") == [("new text",)]


async def test_write_back_to_a_watched_column_is_refused(db: CdcDatabase,
                                                         runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="watched"):
        await _consumer(runtime, db, Destination(column="body"))


async def test_side_table_keeps_per_row_order(userdb: UserDb, db: CdcDatabase,
                                              runtime: Runtime) -> None:
    rows, versions = 6, 5
    for i in range(rows):
        userdb.q("INSERT INTO tickets (id, body) VALUES (%s, %s)", (i, f"r{i} v0"))
    for v in range(1, versions):
        for i in range(rows):
            userdb.q("UPDATE tickets SET body = %s WHERE id = %s", (f"r{i} v{v}", i))
    consumer = await _consumer(runtime, db, Destination(side_table="ticket_ai"),
                               concurrency=16)
    stats = await consumer.drain()
    assert stats.applied == rows * versions
    got = userdb.q("SELECT row_key, result FROM ticket_ai ORDER BY seq")
    by_row: dict[str, list[str]] = {}
    for row_key, result in got:
        value = json.loads(result) if userdb.kind == "mariadb" else result  # psycopg: decoded
        by_row.setdefault(row_key.replace(" ", ""), []).append(value)
    assert len(by_row) == rows
    for i in range(rows):
        assert by_row[f"[{i}]"] == [f"r{i} v{v}" for v in range(versions)]


async def test_poison_goes_to_the_dlq_and_transient_errors_retry(
        userdb: UserDb, db: CdcDatabase, runtime: Runtime, stub: StubUpstream) -> None:
    # task 'label' needs input.kind: the captured row has no such column -> permanent
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'x')")
    consumer = await _consumer(runtime, db, Destination(side_table="ai_out"), task="label",
                               select="label")
    stats = await consumer.drain()
    assert stats.dead == 1 and stats.applied == 0
    assert await _count(runtime, cdc_dead) == 1
    dead = await CdcLedger(runtime.store.engine).dead_list("tickets")
    assert "TaskInputInvalid" in dead[0]["error"] and dead[0]["payload"]["data"]["body"] == "x"
    assert userdb.q(f"SELECT count(*) FROM {userdb.outbox}")[0][0] == 0
    # two upstream failures, then success: retried, applied once
    async with aiohttp.ClientSession() as s:
        await s.post(stub.base_url + "/_script", json=["error-500", "error-500"])
    userdb.q("INSERT INTO tickets (id, body) VALUES (2, 'retry me')")
    consumer = await _consumer(runtime, db, Destination(side_table="ai_out"), max_attempts=5)
    stats = await consumer.drain(idle_rounds=40)
    assert stats.retries == 2 and stats.applied == 1
    # always failing: dead after max_attempts deliveries
    async with aiohttp.ClientSession() as s:
        await s.post(stub.base_url + "/_script", json=["error-500"] * 3)
    userdb.q("INSERT INTO tickets (id, body) VALUES (3, 'doomed')")
    consumer = await _consumer(runtime, db, Destination(side_table="ai_out"), max_attempts=3)
    stats = await consumer.drain(idle_rounds=40)
    assert stats.dead == 1 and stats.retries == 2
    dead = await CdcLedger(runtime.store.engine).dead_list("tickets")
    assert [d["attempts"] for d in dead] == [1, 3]


async def test_event_destination_carries_the_change_id(
        userdb: UserDb, db: CdcDatabase, runtime: Runtime) -> None:
    from lockgate.events.transports import open_transport

    url = f"redis://127.0.0.1:6379/0/lgcdc{uuid.uuid4().hex[:8]}:out"
    sink = open_transport(url, group="cdc-test")
    reader = open_transport(url, group="reader")
    await reader.open()
    try:
        userdb.q("INSERT INTO tickets (id, body) VALUES (7, 'event me')")
        consumer = await _consumer(runtime, db, Destination(event=sink))
        assert (await consumer.drain()).applied == 1
        got = await reader.fetch(5, 1.0)
        assert len(got) == 1
        ev = got[0].data
        assert ev["result"] == "event me" and ev["key"] == {"id": 7} and ev["op"] == "INSERT"
        assert ev["change_id"].startswith("tickets:")
    finally:
        await reader.drop()
        await reader.aclose()
        await sink.aclose()


async def test_redelivered_applied_change_is_dropped(userdb: UserDb, db: CdcDatabase,
                                                     runtime: Runtime) -> None:
    """Dedup by change id: a change recorded as applied is not run again."""
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'once')")
    spec = await db.capture("tickets")
    assert spec is not None
    ledger = CdcLedger(runtime.store.engine)
    [change] = await db.claim(spec, 1, 0.1)
    await ledger.mark(change)  # e.g. an event was published, then the consumer died
    await asyncio.sleep(0.2)  # the lease runs out
    consumer = await _consumer(runtime, db, Destination(side_table="ai_once"))
    stats = await consumer.drain()
    assert stats.duplicates == 1 and stats.applied == 0
    assert userdb.q("SELECT count(*) FROM ai_once")[0][0] == 0


async def test_notify_wakes_the_consumer_on_postgres(userdb: UserDb, db: CdcDatabase,
                                                     runtime: Runtime) -> None:
    if userdb.kind != "postgres":
        pytest.skip("NOTIFY is PostgreSQL's; MariaDB polls")
    consumer = await _consumer(runtime, db, Destination(column="summary"),
                               poll_interval=3600.0)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.sleep(0.3)  # the consumer is now waiting (an hour, unless woken)
        userdb.q("INSERT INTO tickets (id, body) VALUES (5, 'wake up')")
        for _ in range(100):
            if consumer.stats.applied:
                break
            await asyncio.sleep(0.05)
        assert consumer.stats.applied == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_lease_is_extended_while_the_task_runs(
        userdb: UserDb, db: CdcDatabase, stub: StubUpstream, tmp_path: object) -> None:
    from pathlib import Path

    from lockgate.settings import parse_config
    from tests.cdc.conftest import config_text

    rt = await Runtime.start(parse_config(config_text(stub, Path(str(tmp_path)) / "slow",
                                                      model="slow:1500")),
                             jobs=False, warm_up=False)
    try:
        userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'slow one')")
        consumer = await _consumer(rt, db, Destination(side_table="ai_slow"), lease=0.6)
        work = asyncio.create_task(consumer.drain())
        await asyncio.sleep(1.0)  # past the first lease: only the extension keeps the claim
        spec = await db.capture("tickets")
        assert spec is not None
        assert await db.claim(spec, 5, 0.6) == []  # nobody else can take it
        stats = await work
        assert stats.applied == 1
        assert userdb.q("SELECT count(*) FROM ai_slow")[0][0] == 1
    finally:
        await rt.aclose()


async def test_two_consumers_share_a_capture_in_row_order(userdb: UserDb, db: CdcDatabase,
                                                          runtime: Runtime) -> None:
    rows, versions = 8, 4
    for i in range(rows):
        userdb.q("INSERT INTO tickets (id, body) VALUES (%s, %s)", (i, f"r{i} v0"))
    for v in range(1, versions):
        for i in range(rows):
            userdb.q("UPDATE tickets SET body = %s WHERE id = %s", (f"r{i} v{v}", i))
    other = open_database(userdb.url, pool_size=10)
    await other.open()
    try:
        a = await _consumer(runtime, db, Destination(side_table="ai_two"), concurrency=4)
        b = await _consumer(runtime, other, Destination(side_table="ai_two"), concurrency=4)
        sa_, sb = await asyncio.gather(a.drain(idle_rounds=5), b.drain(idle_rounds=5))
    finally:
        await other.aclose()
    assert sa_.applied + sb.applied == rows * versions
    assert sa_.applied and sb.applied  # both did work
    got = userdb.q("SELECT row_key, result FROM ai_two ORDER BY seq")
    by_row: dict[str, list[str]] = {}
    for row_key, result in got:
        value = json.loads(result) if userdb.kind == "mariadb" else result
        by_row.setdefault(row_key.replace(" ", ""), []).append(value)
    for i in range(rows):
        assert by_row[f"[{i}]"] == [f"r{i} v{v}" for v in range(versions)]
