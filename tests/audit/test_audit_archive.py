"""Audit retention: old rows move to compressed JSONL files; archived + live verify as one
chain; edits, deletions and wrong anchors in either part are caught (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from lockgate.store import Store
from lockgate.store.archive import (
    ArchiveError,
    AuditVerdict,
    archive_audit,
    list_archives,
    read_archive,
    verify_audit,
)
from lockgate.store.chain import get_chained_record
from lockgate.store.tables import audit_archives, usage_records

RecordFactory = Callable[..., Any]
DAY = 86_400.0


async def seed(store: Store, make_record: RecordFactory, n: int, start: int = 0,
               age_days: float = 0.0) -> None:
    now = time.time()
    await store.write_usage([
        make_record(start + i, cost=0.001 * i, created_at=now - age_days * DAY)
        for i in range(n)
    ])


async def verify(store: Store, directory: Path, **kwargs: Any) -> AuditVerdict:
    async with store.engine.connect() as conn:
        return await verify_audit(conn, directory, **kwargs)


async def live_count(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(usage_records))).scalar_one())


async def test_archive_by_rows_then_verify_both_parts(store: Store, make_record: RecordFactory,
                                                      tmp_path: Path) -> None:
    await seed(store, make_record, 30)
    before = await verify(store, tmp_path)
    assert before.ok and before.live == 30 and before.files == 0
    report = await archive_audit(store, tmp_path, max_rows=10, file_rows=8)
    assert report.rows == 20 and [f.rows for f in report.files] == [8, 8, 4]
    assert (report.files[0].first_seq, report.files[-1].last_seq) == (1, 20)
    assert await live_count(store) == 10
    assert sorted(p.name for p in tmp_path.glob("*.jsonl.gz")) == [f.file for f in report.files]

    after = await verify(store, tmp_path)
    assert after.ok, after.problem
    assert (after.archived, after.live, after.files) == (20, 10, 3)
    assert (after.head_seq, after.head_hash) == (before.head_seq, before.head_hash)
    assert after.line().startswith("ok, 30 records (20 archived in 3 file(s), 10 live)")

    # the chain goes on from the archived base
    await seed(store, make_record, 5, start=100)
    again = await verify(store, tmp_path)
    assert again.ok and again.records == 35 and again.head_seq == 35
    first_live = await _record(store, "req_audit_20")
    assert first_live["seq"] == 21 and first_live["link_ok"] is True
    nothing = await archive_audit(store, tmp_path, max_rows=15)
    assert nothing.files == [] and nothing.base_seq == 20


async def test_archive_by_age_keeps_young_rows(store: Store, make_record: RecordFactory,
                                               tmp_path: Path) -> None:
    await seed(store, make_record, 12, age_days=40)
    await seed(store, make_record, 6, start=50, age_days=1)
    report = await archive_audit(store, tmp_path, max_age=timedelta(days=30))
    assert report.rows == 12 and report.base_seq == 12
    assert await live_count(store) == 6
    async with store.engine.connect() as conn:
        [entry] = await list_archives(conn)
    assert entry.newest_at < entry.created_at - timedelta(days=39)
    # the file holds exactly the rows, and their hashes
    rows = read_archive(tmp_path / entry.file)
    header = next(rows)
    archived = list(rows)
    assert header["rows"] == 12 and [r["seq"] for r in archived] == list(range(1, 13))
    assert archived[-1]["chain_hash"] == entry.last_hash
    assert archived[3]["request_id"] == "req_audit_3" and archived[3]["cost"] == 0.003
    assert (await verify(store, tmp_path)).ok
    # everything old: the live table may end up empty and still verify against the head
    report = await archive_audit(store, tmp_path, max_age=timedelta(hours=1))
    assert report.rows == 6 and await live_count(store) == 0
    final = await verify(store, tmp_path)
    assert final.ok and final.records == 18 and final.live == 0


async def test_edited_archive_file_is_caught(store: Store, make_record: RecordFactory,
                                             tmp_path: Path) -> None:
    await seed(store, make_record, 20)
    await archive_audit(store, tmp_path, max_rows=5, file_rows=10)
    async with store.engine.connect() as conn:
        first, second = await list_archives(conn)
    path = tmp_path / second.file
    lines = gzip.decompress(path.read_bytes()).splitlines()
    row = orjson.loads(lines[3])
    row["cost"] = 0.0  # seq 13: make it free
    lines[3] = orjson.dumps(row)
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))

    changed = await verify(store, tmp_path)
    assert not changed.ok and "sha256 does not match" in (changed.problem or "")
    # someone who also fixes the recorded sha256 still cannot hide the edit
    import hashlib

    async with store.transaction(write=True) as conn:
        await conn.execute(audit_archives.update()
                           .where(audit_archives.c.first_seq == second.first_seq)
                           .values(sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    edited = await verify(store, tmp_path)
    assert not edited.ok and "archived record #13" in (edited.problem or "")
    assert "edited" in (edited.problem or "")
    assert first.file != second.file


async def test_missing_file_and_live_only(store: Store, make_record: RecordFactory,
                                          tmp_path: Path) -> None:
    await seed(store, make_record, 12)
    report = await archive_audit(store, tmp_path, max_rows=4)
    (tmp_path / report.files[0].file).unlink()
    missing = await verify(store, tmp_path)
    assert not missing.ok and "is missing" in (missing.problem or "")
    live = await verify(store, tmp_path, read_files=False)
    assert live.ok and live.live == 4 and "NOT read" in live.line()


async def test_deleted_archive_row_or_live_row_is_caught(
        store: Store, make_record: RecordFactory, tmp_path: Path) -> None:
    await seed(store, make_record, 12)
    await archive_audit(store, tmp_path, max_rows=4, file_rows=4)
    async with store.transaction(write=True) as conn:
        await conn.execute(usage_records.delete().where(usage_records.c.seq == 9))
    gap = await verify(store, tmp_path)
    assert not gap.ok and "record #9 deleted" in (gap.problem or "")

    async with store.transaction(write=True) as conn:
        await conn.execute(audit_archives.delete().where(audit_archives.c.first_seq == 1))
    hole = await verify(store, tmp_path, read_files=False)
    assert not hole.ok and "does not continue the chain at #1" in (hole.problem or "")


async def test_anchor_inside_the_archive(store: Store, make_record: RecordFactory,
                                         tmp_path: Path) -> None:
    await seed(store, make_record, 10)
    mid = await _record(store, "req_audit_3")
    await archive_audit(store, tmp_path, max_rows=2)
    good = await verify(store, tmp_path, anchor=(mid["seq"], mid["chain_hash"]))
    assert good.ok, good.problem
    wrong = await verify(store, tmp_path, anchor=(mid["seq"], "f" * 64))
    assert not wrong.ok and "does not match the anchor" in (wrong.problem or "")
    head = await verify(store, tmp_path)
    assert (await verify(store, tmp_path, anchor=(head.head_seq, head.head_hash))).ok


async def test_a_broken_chain_is_not_archived(store: Store, make_record: RecordFactory,
                                              tmp_path: Path) -> None:
    await seed(store, make_record, 10)
    async with store.transaction(write=True) as conn:
        await conn.execute(usage_records.update().where(usage_records.c.seq == 4)
                           .values(cost=9.0))
    with pytest.raises(ArchiveError, match="#4 does not match its hash"):
        await archive_audit(store, tmp_path, max_rows=1)
    assert await live_count(store) == 10
    async with store.engine.connect() as conn:
        assert await list_archives(conn) == []


async def test_concurrent_archivers_agree(store: Store, make_record: RecordFactory,
                                          tmp_path: Path) -> None:
    await seed(store, make_record, 60)
    reports = await asyncio.gather(
        archive_audit(store, tmp_path, max_rows=10, file_rows=10),
        archive_audit(store, tmp_path, max_rows=10, file_rows=10),
    )
    assert sum(r.rows for r in reports) == 50
    assert any(r.stopped for r in reports) or min(r.rows for r in reports) == 0
    assert await live_count(store) == 10
    verdict = await verify(store, tmp_path)
    assert verdict.ok and verdict.records == 60 and verdict.files == 5


async def _record(store: Store, request_id: str) -> dict[str, Any]:
    async with store.engine.connect() as conn:
        row = await get_chained_record(conn, request_id)
    assert row is not None
    return row


async def test_the_retention_loop_archives_on_its_timer(
        store: Store, make_record: RecordFactory, tmp_path: Path) -> None:
    from lockgate.store.retention import AuditRetainer

    await seed(store, make_record, 9)
    retainer = AuditRetainer(store, tmp_path, interval=0.05, max_age=None, max_rows=4,
                             file_rows=100)
    stop = asyncio.Event()
    task = asyncio.create_task(retainer.run(stop))
    deadline = time.monotonic() + 10
    while retainer.archived < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await seed(store, make_record, 2, start=50)
    while retainer.archived < 7 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert retainer.archived == 7 and retainer.failures == 0
    assert await live_count(store) == 4
    assert (await verify(store, tmp_path)).records == 11


async def test_a_failing_round_is_counted_not_raised(
        store: Store, make_record: RecordFactory, tmp_path: Path) -> None:
    from lockgate.store.retention import AuditRetainer

    await seed(store, make_record, 5)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the archive directory should be")
    retainer = AuditRetainer(store, blocked, interval=1, max_age=None, max_rows=1,
                             file_rows=100)
    assert await retainer.run_once() == 0
    assert retainer.failures == 1 and await live_count(store) == 5
