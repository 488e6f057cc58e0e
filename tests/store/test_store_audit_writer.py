"""AuditWriter: batching, draining on close, surviving a failing database, spill and replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from lockgate.store import AuditOverflow, AuditWriter, Store
from lockgate.store.tables import usage_records

RecordFactory = Callable[..., Any]


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for a state (not a speed): generous timeout, fails loudly if never reached."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def count_rows(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(usage_records))).scalar_one()
        )


async def take_table_offline(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE usage_records RENAME TO usage_records_off"))


async def bring_table_back(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE usage_records_off RENAME TO usage_records"))


def writer(store: Store, tmp_path: Path, **kwargs: Any) -> AuditWriter:
    options: dict[str, Any] = {
        "flush_interval_ms": 60_000,  # only size, flush() or close() trigger writes
        "batch_size": 50,
        "spill_dir": tmp_path / "spill",
        "retry_initial": 0.01,
        "retry_max": 0.05,
    }
    options.update(kwargs)
    return AuditWriter(store, **options)


async def test_full_batches_are_written_without_waiting_for_the_interval(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path)
    w.start()
    for n in range(100):
        w.submit(make_record(n))
    assert w.pending == 100  # submit never writes by itself
    await until(lambda: w.pending == 0)
    assert w.batches == 2 and w.written == 100
    assert await count_rows(store) == 100
    await w.close()


async def test_interval_flushes_a_partial_batch(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path, flush_interval_ms=20, batch_size=1000)
    w.start()
    for n in range(3):
        w.submit(make_record(n))
    await until(lambda: w.pending == 0)
    assert (w.batches, w.written) == (1, 3)
    assert await count_rows(store) == 3
    await w.close()


async def test_close_drains_everything_in_few_transactions(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path, batch_size=100)
    w.start()
    for n in range(1234):
        w.submit(make_record(n))
    await w.close()
    stats = w.stats()
    assert (stats.pending, stats.written, stats.batches) == (0, 1234, 13)
    assert (stats.failed_flushes, stats.spilled, stats.lost) == (0, 0, 0)
    assert await count_rows(store) == 1234


async def test_close_without_start_still_drains(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path)
    for n in range(10):
        w.submit(make_record(n))
    await w.close()
    assert await count_rows(store) == 10
    await w.close()  # idempotent


async def test_duplicate_request_ids_are_counted_not_fatal(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await store.write_usage([make_record("old")])
    w = writer(store, tmp_path)
    for name in ("a", "old", "b", "a"):
        w.submit(make_record(name))
    await w.close()
    assert (w.written, w.duplicates, w.batches) == (2, 2, 1)
    assert await count_rows(store) == 3


async def test_database_failure_is_retried_until_it_recovers(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await take_table_offline(store)
    w = writer(store, tmp_path, flush_interval_ms=10)
    w.start()
    try:
        for n in range(30):
            w.submit(make_record(n))
        await until(lambda: w.failed_flushes >= 3)
        assert w.pending == 30 and w.written == 0
    finally:
        await bring_table_back(store)
    assert await w.flush(timeout=30) is True
    await w.close()
    stats = w.stats()
    assert (stats.written, stats.pending, stats.spilled, stats.lost) == (30, 0, 0, 0)
    assert await count_rows(store) == 30


async def test_overflow_spills_to_disk_and_is_replayed_on_next_start(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    await take_table_offline(store)
    try:
        w = writer(store, tmp_path, batch_size=10, max_queue=20, flush_interval_ms=10)
        w.start()
        for n in range(50):
            w.submit(make_record(n))  # never raises: the spill dir takes the overflow
        await until(lambda: w.spilled > 0)
        await w.close(timeout=0.2)  # database still down: the rest is spilled too
        assert (w.spilled, w.written, w.pending, w.lost) == (50, 0, 0, 0)
        spilled_ids = {
            orjson.loads(line)["request_id"]
            for path in spill.glob("audit-*.jsonl")
            for line in path.read_bytes().splitlines()
        }
        assert len(spilled_ids) == 50
    finally:
        await bring_table_back(store)

    w2 = writer(store, tmp_path)
    w2.start()
    await until(lambda: w2.replayed == 50)
    await w2.close()
    assert await count_rows(store) == 50
    assert w2.written == 50
    assert [p.name for p in spill.iterdir() if p.name.startswith("audit-")] == []


async def test_full_queue_without_spill_dir_refuses_loudly(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path, spill_dir=None, max_queue=5)
    for n in range(5):
        w.submit(make_record(n))
    with pytest.raises(AuditOverflow, match="audit queue is full"):
        w.submit(make_record(99))
    await w.close()
    assert await count_rows(store) == 5


async def test_rows_the_database_refuses_are_isolated_and_dead_lettered(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    async with store.engine.begin() as conn:
        if store.backend == "postgresql":
            await conn.execute(
                sa.text(
                    "ALTER TABLE usage_records ADD CONSTRAINT lg_test_poison "
                    "CHECK (prompt_tokens <> 666)"
                )
            )
        else:
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER lg_test_poison BEFORE INSERT ON usage_records "
                    "WHEN NEW.prompt_tokens = 666 BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
    try:
        w = writer(store, tmp_path, batch_size=20)
        for n in range(12):
            w.submit(make_record(n, prompt_tokens=666 if n == 7 else 1))
        w.submit(object())  # type: ignore[arg-type]  # malformed: not a record at all
        await w.close()
        assert (w.written, w.rejected, w.pending, w.lost) == (11, 2, 0, 0)
        assert await count_rows(store) == 11
        dead = b"".join(p.read_bytes() for p in (tmp_path / "spill").glob("rejected-*.jsonl"))
        assert b"req_test_7" in dead and b"malformed usage record" in dead
    finally:
        async with store.engine.begin() as conn:
            if store.backend == "postgresql":
                await conn.execute(
                    sa.text("ALTER TABLE usage_records DROP CONSTRAINT lg_test_poison")
                )
            else:
                await conn.execute(sa.text("DROP TRIGGER lg_test_poison"))


async def test_record_after_close_is_spilled_not_lost(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path)
    await w.close()
    w.submit(make_record("late"))
    assert (w.spilled, w.lost) == (1, 0)
    w2 = writer(store, tmp_path)
    w2.start()
    await until(lambda: w2.replayed == 1)
    await w2.close()
    assert [r.request_id for r in await store.recent_usage(5)] == ["req_test_late"]
