"""DELETE capture on the real PostgreSQL and MariaDB: old values, row order, --on-delete."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

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
from lockgate.cdc.database import CdcDatabase
from lockgate.runtime import Runtime
from lockgate.testing.stub_upstream import StubUpstream
from tests.cdc.conftest import UserDb


@pytest.fixture
async def db(userdb: UserDb) -> Any:
    d = open_database(userdb.url, pool_size=10)
    await d.open()
    await install_capture(d, "tickets", "tickets", ["body"], ops="insert,update,delete")
    yield d
    await d.aclose()


async def _consumer(runtime: Runtime, db: CdcDatabase, dest: Destination,
                    **kw: Any) -> CdcConsumer:
    spec = await db.capture("tickets")
    assert spec is not None
    return CdcConsumer(db, CdcLedger(runtime.store.engine), spec,
                       task_transform(runtime.task_runner("cdc"), "gist", "text"), dest,
                       concurrency=16, lease=5.0, poll_interval=0.05, backoff_base=0.05,
                       **kw)


def _side(userdb: UserDb, table: str) -> dict[str, list[tuple[str, Any]]]:
    """row key -> [(op, result), ...] in write order."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for row_key, op, result in userdb.q(f"SELECT row_key, op, result FROM {table} ORDER BY seq"):
        value = json.loads(result) if userdb.kind == "mariadb" else result
        out.setdefault(row_key.replace(" ", ""), []).append((op, value))
    return out


def _triggers(userdb: UserDb) -> list[str]:
    if userdb.kind == "postgres":
        return sorted(r[0] for r in userdb.q("SELECT tgname FROM pg_trigger WHERE NOT "
                                             "tgisinternal"))
    return sorted(r[0] for r in userdb.q("SELECT trigger_name FROM information_schema.triggers"
                                         " WHERE trigger_schema = DATABASE()"))


async def test_delete_carries_old_values_and_obeys_where(userdb: UserDb) -> None:
    d = open_database(userdb.url)
    await d.open()
    try:
        spec = await install_capture(d, "tickets", "tickets", ["body", "status"],
                                     where="status <> 'spam'", ops="delete,INSERT, update")
        assert spec.ops == ("INSERT", "UPDATE", "DELETE")
        assert len(_triggers(userdb)) == (2 if userdb.kind == "postgres" else 3)
        userdb.q("INSERT INTO tickets (id, body, status) VALUES (1, 'a', 'open')")
        userdb.q("UPDATE tickets SET body = 'b' WHERE id = 1")
        userdb.q("DELETE FROM tickets WHERE id = 1")
        userdb.q("INSERT INTO tickets (id, body, status) VALUES (2, 'junk', 'spam')")
        userdb.q("DELETE FROM tickets WHERE id = 2")  # the old row is outside --where
        userdb.q("INSERT INTO tickets (id, body, status) VALUES (3, 'c', 'open')")
        userdb.q("UPDATE tickets SET note = 'unwatched' WHERE id = 3")
        userdb.q("DELETE FROM tickets WHERE id = 3")
        rows = userdb.q(f"SELECT op, row_key, {'`key`' if userdb.kind == 'mariadb' else 'key'},"
                        f" data FROM {userdb.outbox} ORDER BY id")
        got = [(op, rk.replace(" ", "")) for op, rk, _, _ in rows]
        assert got == [("INSERT", "[1]"), ("UPDATE", "[1]"), ("DELETE", "[1]"),
                       ("INSERT", "[3]"), ("DELETE", "[3]")]
        key, data = rows[2][2], rows[2][3]
        if userdb.kind == "mariadb":
            key, data = json.loads(key), json.loads(data)
        assert key == {"id": 1} and data == {"id": 1, "body": "b", "status": "open"}
        assert await d.uninstall(None) == ["tickets"]
        assert _triggers(userdb) == []
        userdb.q("INSERT INTO tickets (id, body) VALUES (9, 'x')")
        userdb.q("DELETE FROM tickets WHERE id = 9")  # no trigger left to fail
    finally:
        await d.aclose()


async def test_default_ops_do_not_capture_deletes(userdb: UserDb) -> None:
    d = open_database(userdb.url)
    await d.open()
    try:
        spec = await install_capture(d, "tickets", "tickets", ["body"])
        assert spec.ops == ("INSERT", "UPDATE")
        userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'a')")
        userdb.q("DELETE FROM tickets WHERE id = 1")
        assert [r[0] for r in userdb.q(f"SELECT op FROM {userdb.outbox}")] == ["INSERT"]
        with pytest.raises(CdcSqlError, match="unknown operation 'truncate'"):
            await install_capture(d, "other", "tickets", ["body"], ops="insert,truncate")
        with pytest.raises(CdcSqlError, match="at least one"):
            await install_capture(d, "other", "tickets", ["body"], ops=" , ")
        await d.uninstall(None)
    finally:
        await d.aclose()


async def test_remove_forgets_the_rows_results_in_row_order(
        userdb: UserDb, db: CdcDatabase, runtime: Runtime, stub: StubUpstream) -> None:
    # insert -> update -> delete of row 1 (and a kept row 2), all before the consumer runs:
    # a delete handled before the row's earlier changes would leave their results behind
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'one')")
    userdb.q("INSERT INTO tickets (id, body) VALUES (2, 'two')")
    userdb.q("UPDATE tickets SET body = 'one v1' WHERE id = 1")
    userdb.q("DELETE FROM tickets WHERE id = 1")
    calls = stub.total
    stats = await (await _consumer(runtime, db, Destination(side_table="ai_rm"))).drain()
    assert stats.applied == 4 and stats.dead == 0
    assert stub.total - calls == 3  # the DELETE needed no model call
    assert _side(userdb, "ai_rm") == {"[2]": [("INSERT", "two")]}
    # the row comes back: its history starts afresh; a redelivered applied delete is dropped
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'reborn')")
    userdb.q("DELETE FROM tickets WHERE id = 2")
    spec = await db.capture("tickets")
    assert spec is not None
    ledger = CdcLedger(runtime.store.engine)
    claimed = await db.claim(spec, 5, 0.05)
    [delete] = [c for c in claimed if c.op == "DELETE"]
    await ledger.mark(delete)  # as if applied by a consumer that died before the outbox
    await asyncio.sleep(0.1)  # leases run out
    stats = await (await _consumer(runtime, db, Destination(side_table="ai_rm"))).drain()
    assert stats.duplicates == 1 and stats.applied == 1
    assert _side(userdb, "ai_rm") == {"[2]": [("INSERT", "two")],
                                      "[1]": [("INSERT", "reborn")]}


async def test_mark_leaves_a_tombstone_after_the_rows_results(
        userdb: UserDb, db: CdcDatabase, runtime: Runtime) -> None:
    for i in range(1, 5):
        userdb.q("INSERT INTO tickets (id, body) VALUES (%s, %s)", (i, f"r{i}"))
    for i in range(1, 5):
        userdb.q("UPDATE tickets SET body = %s WHERE id = %s", (f"r{i} v1", i))
    userdb.q("DELETE FROM tickets WHERE id IN (1, 3)")
    consumer = await _consumer(runtime, db, Destination(side_table="ai_mark"), on_delete="mark")
    assert (await consumer.drain()).applied == 10
    side = _side(userdb, "ai_mark")
    for i in (1, 3):
        assert side[f"[{i}]"] == [("INSERT", f"r{i}"), ("UPDATE", f"r{i} v1"), ("DELETE", None)]
    for i in (2, 4):
        assert side[f"[{i}]"] == [("INSERT", f"r{i}"), ("UPDATE", f"r{i} v1")]


async def test_task_runs_on_the_deleted_rows_old_values(
        userdb: UserDb, db: CdcDatabase, runtime: Runtime) -> None:
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'last words')")
    userdb.q("DELETE FROM tickets WHERE id = 1")
    consumer = await _consumer(runtime, db, Destination(side_table="ai_task"), on_delete="task")
    assert (await consumer.drain()).applied == 2
    assert _side(userdb, "ai_task") == {"[1]": [("INSERT", "last words"),
                                                ("DELETE", "last words")]}


async def test_column_write_back_with_deletes(userdb: UserDb, db: CdcDatabase,
                                              runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="no column to write"):
        await _consumer(runtime, db, Destination(column="summary"), on_delete="task")
    userdb.q("INSERT INTO tickets (id, body) VALUES (1, 'gone soon')")
    userdb.q("INSERT INTO tickets (id, body) VALUES (2, 'stays')")
    userdb.q("UPDATE tickets SET body = 'gone now' WHERE id = 1")
    userdb.q("DELETE FROM tickets WHERE id = 1")
    stats = await (await _consumer(runtime, db, Destination(column="summary"))).drain()
    assert stats.applied == 4 and stats.dead == 0 and stats.retries == 0
    assert userdb.q("SELECT id, summary FROM tickets") == [(2, "stays")]
    assert userdb.q(f"SELECT count(*) FROM {userdb.outbox}")[0][0] == 0


async def test_delete_event_says_deleted(userdb: UserDb, db: CdcDatabase,
                                         runtime: Runtime) -> None:
    from lockgate.events.transports import open_transport

    url = f"redis://127.0.0.1:6379/0/lgcdc{uuid.uuid4().hex[:8]}:del"
    sink = open_transport(url, group="cdc-test")
    reader = open_transport(url, group="reader")
    await reader.open()
    try:
        userdb.q("INSERT INTO tickets (id, body) VALUES (7, 'short-lived')")
        userdb.q("DELETE FROM tickets WHERE id = 7")
        assert (await (await _consumer(runtime, db, Destination(event=sink))).drain()
                ).applied == 2
        got = [m.data for m in await reader.fetch(5, 1.0)]
        assert [(e["event"], e["op"]) for e in got] == [("inserted", "INSERT"),
                                                        ("deleted", "DELETE")]
        assert got[1]["key"] == {"id": 7} and got[1]["data"] == {"id": 7, "body": "short-lived"}
        assert got[1]["result"] is None and got[0]["result"] == "short-lived"
        assert got[0]["change_id"] != got[1]["change_id"]
    finally:
        await reader.drop()
        await reader.aclose()
        await sink.aclose()
