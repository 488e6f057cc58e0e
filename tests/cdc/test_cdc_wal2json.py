"""Trigger-free CDC with wal2json on a PostgreSQL cluster running wal_level=logical."""

from __future__ import annotations

import pytest

from lockgate.cdc import (
    CdcConsumer,
    CdcLedger,
    CdcSqlError,
    Destination,
    install_capture,
    open_database,
    task_transform,
)
from lockgate.cdc.database import open_capture
from lockgate.runtime import Runtime
from tests.cdc.conftest import UserDb
from tests.support.postgres import fresh_database


async def test_shared_server_without_logical_wal_is_a_clear_error() -> None:
    gen = fresh_database("lgwal")
    url = next(gen)
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
        db = open_database(url, source="wal2json")
        await db.open()
        try:
            with pytest.raises(CdcSqlError, match="wal_level=logical"):
                await install_capture(db, "t", "t", ["body"])
        finally:
            await db.aclose()
    finally:
        for _ in gen:
            pass


def _consumer(runtime: Runtime, db: object, spec: object, dest: Destination) -> CdcConsumer:
    return CdcConsumer(db, CdcLedger(runtime.store.engine), spec,  # type: ignore[arg-type]
                       task_transform(runtime.task_runner("cdc"), "gist", "text"), dest,
                       concurrency=8, lease=5, poll_interval=0.05, backoff_base=0.05)


async def test_wal2json_capture_write_back_order_and_restart(walldb: UserDb,
                                                             runtime: Runtime) -> None:
    db = open_database(walldb.url, source="wal2json")
    await db.open()
    try:
        spec = await install_capture(db, "tickets", "tickets", ["body"])
        assert spec.source == "wal2json"
    finally:
        await db.aclose()
    assert walldb.q("SELECT relreplident FROM pg_class WHERE relname = 'tickets'") == [("f",)]
    # one multi-row transaction, single inserts, watched and unwatched updates
    walldb.q("INSERT INTO tickets (id, body) SELECT g, 'body ' || g FROM generate_series(1, 5) g")
    walldb.q("INSERT INTO tickets (id, body) VALUES (6, 'body 6')")
    walldb.q("UPDATE tickets SET note = 'not watched' WHERE id = 2")
    for v in range(1, 4):
        walldb.q("UPDATE tickets SET body = %s WHERE id = 1", (f"body 1 v{v}",))

    # a first consumer applies a few changes, then "dies" before advancing the slot
    db, spec = await open_capture(walldb.url, "tickets")
    first = _consumer(runtime, db, spec, Destination(side_table="ticket_ai"))
    await first.prepare()
    claimed = await db.claim(spec, 3, 5)
    assert [c.row_key for c in claimed] == ["[1]", "[2]", "[3]"]  # one change per row
    for c in claimed:
        await first._one(c)
    await db.aclose()  # no advance happened: the slot still holds everything

    db, spec = await open_capture(walldb.url, "tickets")
    try:
        second = _consumer(runtime, db, spec, Destination(side_table="ticket_ai"))
        stats = await second.drain()
        # 9 changes in all: the 3 applied before are marked in lockgate_cdc.wal_applied (in
        # the write-back's transaction) and never delivered again
        assert stats.duplicates == 0 and stats.applied == 6
        rows = walldb.q("SELECT row_key, result FROM ticket_ai ORDER BY seq")
        assert len(rows) == 9 and len({r for r, _ in rows}) == 6
        assert [res for key, res in rows if key == "[1]"] == [
            "body 1", "body 1 v1", "body 1 v2", "body 1 v3"]  # per-row order
        # column write-back: the writes change only 'summary' and never come back
        col = _consumer(runtime, db, spec, Destination(column="summary"))
        walldb.q("UPDATE tickets SET body = 'fresh' WHERE id = 4")
        assert (await col.drain()).applied == 1
        assert walldb.q("SELECT summary FROM tickets WHERE id = 4") == [("fresh",)]
        assert (await col.drain()).applied == 1  # nothing new: the write-back was skipped
        assert await db.depth(spec) == 0
    finally:
        await db.aclose()

    db = open_database(walldb.url)
    await db.open()
    try:
        assert await db.uninstall(None) == ["tickets"]
    finally:
        await db.aclose()
    assert walldb.q("SELECT count(*) FROM pg_replication_slots")[0][0] == 0
    assert walldb.q("SELECT relreplident FROM pg_class WHERE relname = 'tickets'") == [("d",)]


ORDERS = ("CREATE TABLE orders (id integer PRIMARY KEY, amount numeric, due date, body text, "
          "status text, summary text)")


async def test_wal2json_where_is_typed_in_the_database_and_deletes_are_captured(
        walldb: UserDb, runtime: Runtime) -> None:
    walldb.q(ORDERS)
    db = open_database(walldb.url, source="wal2json")
    await db.open()
    try:
        with pytest.raises(CdcSqlError, match="--where"):  # compiled at install
            await install_capture(db, "orders", "orders", ["body"], where="amount > 'abc'")
        with pytest.raises(CdcSqlError, match="';'"):
            await install_capture(db, "orders", "orders", ["body"], where="true; select 1")
        assert walldb.q("SELECT count(*) FROM pg_replication_slots")[0][0] == 0
        spec = await install_capture(db, "orders", "orders", ["body", "amount"],
                                     where="amount > 100 AND status <> 'spam' AND due < "
                                           "'2030-01-01'", ops="insert,update,delete")
        assert spec.ops == ("INSERT", "UPDATE", "DELETE") and spec.where
    finally:
        await db.aclose()
    evil = "'); DROP TABLE orders; --"
    walldb.q("INSERT INTO orders VALUES (1, 150, '2026-01-01', 'big', 'open')")
    walldb.q("INSERT INTO orders VALUES (2, 9, '2026-01-01', 'small', 'open')")  # '9' > '100'
    walldb.q("INSERT INTO orders VALUES (3, 500, '2026-01-01', %s, %s)", (evil, "x' OR 'a'='a"))
    walldb.q("INSERT INTO orders VALUES (4, 200, '2026-01-01', 'spam', 'spam')")
    walldb.q("INSERT INTO orders VALUES (5, 900, '2031-06-01', 'late', 'open')")  # a date
    walldb.q("UPDATE orders SET amount = 300 WHERE id = 2")  # now inside
    walldb.q("DELETE FROM orders WHERE id IN (1, 2, 4)")  # 4: its old row is outside

    db, spec = await open_capture(walldb.url, "orders")
    try:
        consumer = CdcConsumer(db, CdcLedger(runtime.store.engine), spec,
                               task_transform(runtime.task_runner("cdc"), "gist", "text"),
                               Destination(side_table="orders_ai"), concurrency=8, lease=5,
                               poll_interval=0.05, on_delete="mark")
        stats = await consumer.drain()
        assert stats.applied == 5 and stats.dead == 0
    finally:
        await db.aclose()
    got: dict[str, list[tuple[str, object]]] = {}
    for row_key, op, result in walldb.q("SELECT row_key, op, result FROM orders_ai ORDER BY seq"):
        got.setdefault(row_key, []).append((op, result))
    assert got == {"[1]": [("INSERT", "big"), ("DELETE", None)],
                   "[2]": [("UPDATE", "small"), ("DELETE", None)],
                   "[3]": [("INSERT", evil)]}
    assert walldb.q("SELECT id FROM orders ORDER BY id") == [(3,), (5,)]  # nothing injected
    db = open_database(walldb.url)
    await db.open()
    try:
        assert await db.uninstall(None) == ["orders"]
    finally:
        await db.aclose()
    assert walldb.q("SELECT count(*) FROM pg_namespace WHERE nspname = 'lockgate_cdc'") == [(0,)]


async def test_wal2json_one_leader_and_no_double_apply(walldb: UserDb) -> None:
    from lockgate.cdc import WriteBack

    db = open_database(walldb.url, source="wal2json")
    await db.open()
    try:
        await install_capture(db, "tickets", "tickets", ["body"])
    finally:
        await db.aclose()
    walldb.q("INSERT INTO tickets (id, body) VALUES (1, 'once')")
    a, spec = await open_capture(walldb.url, "tickets")
    b, _ = await open_capture(walldb.url, "tickets")
    try:
        [change] = await a.claim(spec, 5, 5)
        assert await b.claim(spec, 5, 5) == []  # a leads: b does not touch the slot
        await a.ensure_side_table("ai_once")
        wb = WriteBack("side", "ai_once", "result")
        assert await a.complete(spec, change, wb) is True
        # b believing it leads (split brain) cannot apply the same change again
        assert await b.complete(spec, change, wb) is False
        assert walldb.q("SELECT count(*) FROM ai_once") == [(1,)]
        await a.aclose()  # the leader goes away: b takes over and skips what was applied
        assert await b.claim(spec, 5, 5) == []
        assert getattr(b, "leading", False)
        walldb.q("INSERT INTO tickets (id, body) VALUES (2, 'next')")
        assert [c.row_key for c in await b.claim(spec, 5, 5)] == ["[2]"]
    finally:
        await a.aclose()
        await b.aclose()
