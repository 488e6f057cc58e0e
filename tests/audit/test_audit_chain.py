"""The audit hash chain: batched and concurrent writes verify; edits, deletes, inserts do not."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

import lockgate
from lockgate.store import AuditWriter, Store, chain
from lockgate.store.chain import (
    ChainConflict,
    ChainReport,
    RowsAlreadyStored,
    _datetime,
    link,
    padded_parts,
    verify_chain,
)
from lockgate.store.engine import create_engine
from lockgate.store.migrate import alembic_config, run_migrations
from lockgate.store.records import usage_row
from lockgate.store.tables import audit_chain, usage_records

u = usage_records
RecordFactory = Callable[..., Any]


async def verify(store: Store, **kwargs: object) -> ChainReport:
    async with store.engine.connect() as conn:
        return await verify_chain(conn, **kwargs)  # type: ignore[arg-type]


async def write(store: Store, make_record: RecordFactory, tmp_path: Path, n: int,
                prefix: str = "", batch_size: int = 7) -> AuditWriter:
    w = AuditWriter(store, batch_size=batch_size, flush_interval_ms=10,
                    spill_dir=tmp_path / f"spill{prefix}")
    w.start()
    for i in range(n):
        w.submit(make_record(f"{prefix}{i}", cost=0.001 * i))
    await w.close()
    return w


async def execute(store: Store, sql: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(sql))


async def test_batched_writes_verify_ok(store: Store, make_record: RecordFactory,
                                        tmp_path: Path) -> None:
    w = await write(store, make_record, tmp_path, 50)
    assert w.batches >= 8 and w.written == 50
    w2 = await write(store, make_record, tmp_path, 3, prefix="")  # duplicates: skipped
    assert w2.duplicates == 3
    report = await verify(store)
    assert report.ok, report.problem
    assert report.records == 50 and report.head_seq == 50
    assert report.line().startswith("ok, 50 records")
    small_pages = await verify(store, page=3)
    assert small_pages.ok and small_pages.records == 50


async def test_edited_cost_is_detected(store: Store, make_record: RecordFactory,
                                       tmp_path: Path) -> None:
    await write(store, make_record, tmp_path, 20)
    await execute(store, "UPDATE usage_records SET cost = 0 WHERE request_id = 'req_audit_7'")
    report = await verify(store, page=4)
    assert not report.ok
    assert report.request_id == "req_audit_7" and report.seq == 8
    assert "edited" in (report.problem or "")
    assert report.records == 7


async def test_edit_with_recomputed_hash_breaks_the_next_link(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await write(store, make_record, tmp_path, 10)
    async with store.engine.begin() as conn:
        prev = (await conn.execute(sa.select(u.c.chain_hash).where(u.c.seq == 3))).scalar_one()
        row = (await conn.execute(sa.select(u).where(u.c.seq == 4))).mappings().one()
        forged = {**row, "cost": 99.0}
        await conn.execute(u.update().where(u.c.seq == 4)
                           .values(cost=99.0, chain_hash=link(prev, 4, forged)))
    report = await verify(store)
    assert not report.ok and report.seq == 5


async def test_deleted_row_is_detected(store: Store, make_record: RecordFactory,
                                       tmp_path: Path) -> None:
    await write(store, make_record, tmp_path, 20)
    await execute(store, "DELETE FROM usage_records WHERE request_id = 'req_audit_4'")
    report = await verify(store)
    assert not report.ok
    assert report.seq == 5 and "record #5 deleted" in (report.problem or "")


async def test_deleted_last_rows_are_detected(store: Store, make_record: RecordFactory,
                                              tmp_path: Path) -> None:
    await write(store, make_record, tmp_path, 12)
    await execute(store, "DELETE FROM usage_records WHERE seq >= 11")
    report = await verify(store)
    assert not report.ok
    assert "records #11..#12 deleted from the end" in (report.problem or "")


async def test_inserted_row_is_detected(store: Store, make_record: RecordFactory,
                                        tmp_path: Path) -> None:
    await write(store, make_record, tmp_path, 5)
    row = usage_row(make_record("forged"))
    async with store.engine.begin() as conn:
        await conn.execute(u.insert().values(**{**row, "created_at": sa.func.now()}))
    report = await verify(store)
    assert not report.ok and report.request_id == "req_audit_forged"
    assert "not in the chain" in (report.problem or "")


async def test_row_appended_beyond_the_head_is_detected(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await write(store, make_record, tmp_path, 5)
    async with store.engine.begin() as conn:
        prev = (await conn.execute(sa.select(u.c.chain_hash).where(u.c.seq == 5))).scalar_one()
        row = usage_row(make_record("tail"))
        stored = {**row, "created_at": _datetime(row["created_at"])}
        await conn.execute(u.insert().values(**stored, seq=6, chain_hash=link(prev, 6, stored)))
    report = await verify(store)
    assert not report.ok and "beyond the chain head" in (report.problem or "")


async def test_anchor_detects_a_rewritten_chain(store: Store, make_record: RecordFactory,
                                                tmp_path: Path) -> None:
    await write(store, make_record, tmp_path, 8)
    first = await verify(store)
    anchor = (first.head_seq, first.head_hash)
    await write(store, make_record, tmp_path, 4, prefix="more")
    assert (await verify(store, anchor=anchor)).ok
    # rewrite from #3 onwards, recomputing every hash and the head: only the anchor sees it
    async with store.engine.begin() as conn:
        rows = (await conn.execute(sa.select(u).order_by(u.c.seq))).mappings().all()
        prev = "0" * 64
        for row in rows:
            values = dict(row)
            if row["seq"] == 3:
                values["cost"] = 0.0
            digest = link(prev, row["seq"], values)
            await conn.execute(u.update().where(u.c.id == row["id"])
                               .values(cost=values["cost"], chain_hash=digest))
            prev = digest
        await conn.execute(audit_chain.update().values(head_hash=prev))
    assert (await verify(store)).ok
    report = await verify(store, anchor=anchor)
    assert not report.ok and "anchor" in (report.problem or "")


async def test_two_writers_in_one_process_interleave_and_verify(
    db_url: str, make_record: RecordFactory, tmp_path: Path
) -> None:
    first, second = await Store.open(db_url), await Store.open(db_url, migrate=False)
    try:
        await asyncio.gather(
            write(first, make_record, tmp_path, 120, prefix="a", batch_size=5),
            write(second, make_record, tmp_path, 120, prefix="b", batch_size=3),
        )
        report = await verify(first)
        assert report.ok, report.problem
        assert report.records == 240
    finally:
        await first.close()
        await second.close()


WRITER = """
import asyncio, sys, time
from lockgate.pipeline.call import UsageRecord
from lockgate.store import AuditWriter, Store

async def main(url, prefix, n):
    store = await Store.open(url)
    w = AuditWriter(store, batch_size=4, flush_interval_ms=5, spill_dir=None)
    w.start()
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        w.submit(UsageRecord(f"req_{prefix}_{i}", time.time(), None, None, "m", "d", "chat",
                             "http", 200, None, 1, 2, 0.5, 1.0, 0.1, False))
        if i % 4 == 3:
            await asyncio.sleep(0)
    await w.close()
    await store.close()
    print(w.written, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_writer_processes_still_verify(store: Store, db_url: str) -> None:
    src = str(Path(lockgate.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, db_url, name, "150",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )
        for name in ("p1", "p2")
    ]
    for p in procs:
        assert p.stdout is not None
        assert (await p.stdout.readline()).strip() == b"ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    # verify while both keep writing: every snapshot is a consistent chain
    checks = 0
    while any(p.returncode is None for p in procs) and checks < 50:
        during = await verify(store)
        assert during.ok, during.problem
        checks += 1
        await asyncio.sleep(0.01)
    outs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o[0].strip() for o in outs] == [b"150", b"150"]
    report = await verify(store)
    assert report.ok, report.problem
    assert report.records == 300


async def test_migration_chains_rows_written_before_the_chain(
    db_url: str, make_record: RecordFactory
) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0001"))
            await conn.commit()
        async with engine.begin() as conn:
            for i in range(6):  # only the 0001 columns: what the old writer inserted
                row = usage_row(make_record(f"old{i}", cost=0.1 * i))
                del row["detail"]  # added by 0004
                await conn.execute(u.insert().values(
                    **{**row, "created_at": _datetime(row["created_at"])}))
    finally:
        await engine.dispose()
    assert await run_migrations(db_url) is True
    store = await Store.open(db_url)
    try:
        report = await verify(store)
        assert report.ok and report.records == 6, report.problem
        await store.write_usage([make_record("new")])
        report = await verify(store)
        assert report.ok and report.records == 7, report.problem
    finally:
        await store.close()


def test_padded_parts_keep_items_in_order_and_pad_with_the_last() -> None:
    for n in (1, 2, 3, 255, 256, 257, 500, 1000):
        items = list(range(n))
        parts = padded_parts(items, largest=256)
        assert all(len(p) & (len(p) - 1) == 0 and len(p) <= 256 for p in parts)
        unpadded = [x for part in parts for x in dict.fromkeys(part)]
        assert unpadded == items
        assert all(set(part[len(dict.fromkeys(part)):]) <= {part[-1]} for part in parts)
    assert padded_parts([]) == []
    assert [len(p) for p in padded_parts(list(range(200)))] == [32] * 6 + [8]
    assert padded_parts([1, 2, 3]) == [[1, 2, 3, 3]]


async def test_batches_of_every_size_use_few_statement_shapes(
    store: Store, make_record: RecordFactory
) -> None:
    """Each distinct SQL text is a prepared statement in the driver's per-connection cache
    (about a megabyte for a 500-row VALUES list); batch sizes 1..300 must not make 300 of them."""
    texts: set[str] = set()

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        texts.add(statement)

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        rid = 0
        for size in range(1, 301):
            rows = [usage_row(make_record(f"s{rid + i}")) for i in range(size)]
            rid += size
            assert await store.write_usage_rows(rows) == size
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
    shapes = [t for t in texts if "usage_records" in t]
    # the INSERT (and the IN lookup, when a retry needs it), each padded to 1, 2, 4 ... 64
    assert len(shapes) <= 2 * 7, len(shapes)
    report = await verify(store)
    assert report.ok and report.records == sum(range(1, 301))


async def test_row_stored_outside_the_chain_meanwhile_is_a_conflict(
    store: Store, make_record: RecordFactory, monkeypatch: Any
) -> None:
    """A row that a non-chained writer stored between the duplicate lookup and the insert is
    skipped by the INSERT; the short count must raise (the writer retries), not chain a gap."""
    rows = [usage_row(make_record(f"c{i}")) for i in range(5)]
    assert await store.write_usage_rows(rows[:1]) == 1

    async def nothing_stored(conn: Any, request_ids: Any) -> set[str]:
        return set()  # as if the lookup ran before the other writer committed

    monkeypatch.setattr(chain, "_existing", nothing_stored)
    with pytest.raises(ChainConflict, match="1 usage rows"):
        await store.write_usage_rows(rows)
    monkeypatch.undo()
    assert await store.write_usage_rows(rows) == 4  # the retry re-reads the chain
    report = await verify(store)
    assert report.ok and report.records == 5


async def test_a_batch_with_stored_rows_is_written_again_without_them(
    store: Store, make_record: RecordFactory
) -> None:
    """The writer's batches skip the duplicate look-up (``assume_new``); a batch holding a row
    stored already (a retry, a replayed spill) is rolled back and written without it."""
    rows = [usage_row(make_record(f"d{i}")) for i in range(70)]  # two INSERT parts
    assert await store.write_usage_rows(rows[65:66]) == 1
    async with store.engine.begin() as conn:
        with pytest.raises(RowsAlreadyStored, match="1 of 70"):
            await chain.insert_chained(conn, rows, assume_new=True)
        await conn.rollback()
    assert await store.write_usage_rows(rows) == 69
    async with store.engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(u))).scalar_one()
    assert count == 70
    report = await verify(store)
    assert report.ok and report.records == 70 and report.head_seq == 70
