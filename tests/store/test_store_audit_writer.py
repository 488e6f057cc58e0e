"""AuditWriter: batching, draining on close, surviving a failing database, spill and replay."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from lockgate.store import AuditOverflow, AuditWriter, Store
from lockgate.store.tables import facade_calls, shadow_results, usage_records

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


async def test_rows_arriving_during_a_write_wait_for_the_next_interval(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    """Under a steady trickle (one connection's requests) the writer makes one transaction
    per interval, not one per write's duration: rows submitted while a batch is being
    written wait for the next wake-up unless a full batch is waiting (it used to loop
    until the queue was empty: ~65 transactions of a dozen rows per second at c=1)."""
    w = writer(store, tmp_path, flush_interval_ms=300, batch_size=1000)
    w.start()
    real = w._write_rows
    arrived = 0

    async def slow_write(rows: Any, yield_every: int = 4) -> None:
        nonlocal arrived
        while arrived < 5:  # requests keep coming while the first transaction runs
            w.submit(make_record(1000 + arrived))
            arrived += 1
            await asyncio.sleep(0.01)
        await real(rows, yield_every)

    w._write_rows = slow_write  # type: ignore[method-assign]
    for n in range(3):
        w.submit(make_record(n))
    await until(lambda: w.batches >= 1)
    await asyncio.sleep(0.1)  # well inside the 300 ms interval
    assert w.batches == 1 and w.pending == 5  # the 5 late rows wait: no second transaction
    await until(lambda: w.batches >= 2)
    assert w.written == 8  # the next interval took them
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
        w.submit(object())  # type: ignore[arg-type]  # malformed: dead-lettered once
        await until(lambda: w.failed_flushes >= 3)
        assert w.pending == 30 and w.written == 0
    finally:
        await bring_table_back(store)
    assert await w.flush(timeout=30) is True
    await w.close()
    stats = w.stats()
    assert (stats.written, stats.pending, stats.spilled, stats.lost) == (30, 0, 0, 0)
    assert stats.rejected == 1
    assert await count_rows(store) == 30


class TcpProxy:
    """A TCP forwarder to PostgreSQL that can be cut (connections dropped, port refusing)."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update({writer.transport, up_writer.transport})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_database_outage_loses_nothing(
    backend: str, db_url: str, make_record: RecordFactory, tmp_path: Path
) -> None:
    """SQLite: the file is locked by another connection. PostgreSQL: connections cut and refused."""
    await (await Store.open(db_url)).close()  # migrated before the outage
    proxy = TcpProxy()
    lock: sqlite3.Connection | None = None
    if backend == "postgres":
        await proxy.start()
        url = db_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        store = await Store.open(url, migrate=False)
    else:
        store = await Store.open(db_url, migrate=False, sqlite_busy_timeout_ms=50)
    try:
        assert await store.ping()
        w = writer(store, tmp_path, flush_interval_ms=10, write_timeout=5.0)
        w.start()
        if backend == "postgres":
            await proxy.stop()
        else:
            lock = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
        for n in range(40):
            w.submit(make_record(n))
        await until(lambda: w.failed_flushes >= 3)
        assert w.written == 0 and w.pending == 40
        if backend == "postgres":
            await proxy.start()
        else:
            assert lock is not None
            lock.execute("ROLLBACK")
        assert await w.flush(timeout=60) is True
        await w.close()
        assert (w.written, w.pending, w.spilled, w.lost) == (40, 0, 0, 0)
        assert await count_rows(store) == 40
    finally:
        if lock is not None:
            lock.close()
        await store.close()
        if backend == "postgres" and proxy._server is not None:
            await proxy.stop()


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


# ---------------------------------------------------------------- shadow rows: the second kind


def shadow_result(n: int | str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "created_at": datetime.now(UTC), "request_id": f"req_shadow_{n}", "model": "support",
        "primary_deployment": "support/a", "candidate_deployment": "support/b",
        "primary_text": "yes", "candidate_text": "yes", "primary_latency_ms": 10.0,
        "candidate_latency_ms": 5.0, "primary_cost": 0.5, "candidate_cost": 0.25,
        "candidate_prompt_tokens": 1, "candidate_completion_tokens": 1,
        "candidate_error": None, "text_match": True, "json_match": None,
    }
    row.update(kw)
    return row


async def shadow_ids(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        result = await conn.execute(
            sa.select(shadow_results.c.request_id).order_by(shadow_results.c.request_id))
        return [r[0] for r in result]


async def empty_shadow_results(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(shadow_results.delete())


async def test_shadow_rows_share_the_batch_transaction_with_usage_rows(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await empty_shadow_results(store)
    w = writer(store, tmp_path)
    w.start()
    for n in range(3):
        w.submit(make_record(n))
        w.submit_shadow(shadow_result(n, json_match=n == 1))
    assert w.pending == 6  # submit_shadow never writes by itself either
    await w.close()
    stats = w.stats()
    assert (stats.batches, stats.written, stats.shadow_written) == (1, 3, 3)
    assert (stats.pending, stats.duplicates, stats.rejected, stats.lost) == (0, 0, 0, 0)
    assert await count_rows(store) == 3
    assert await shadow_ids(store) == [f"req_shadow_{n}" for n in range(3)]
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.select(shadow_results).where(
            shadow_results.c.request_id == "req_shadow_1"))).mappings().one()
    assert stored["json_match"] is True and stored["text_match"] is True
    assert stored["candidate_cost"] == 0.25 and stored["created_at"].tzinfo is not None


async def test_shadow_rows_wait_out_an_outage_with_the_audit_rows(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    """One queue, one backoff: a failing batch keeps both kinds; nothing is written twice."""
    await empty_shadow_results(store)
    await take_table_offline(store)
    w = writer(store, tmp_path, flush_interval_ms=10)
    w.start()
    try:
        w.submit(make_record("u"))
        w.submit_shadow(shadow_result("s"))
        await until(lambda: w.failed_flushes >= 2)
        assert (w.pending, w.written, w.shadow_written) == (2, 0, 0)
        assert await shadow_ids(store) == []  # rolled back with the usage rows
    finally:
        await bring_table_back(store)
    assert await w.flush(timeout=30) is True
    await w.close()
    assert (w.written, w.shadow_written, w.lost) == (1, 1, 0)
    assert await shadow_ids(store) == ["req_shadow_s"]


async def test_shadow_rows_spill_and_replay_as_shadow_rows(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await empty_shadow_results(store)
    spill = tmp_path / "spill"
    await take_table_offline(store)
    try:
        w = writer(store, tmp_path, flush_interval_ms=10)
        w.start()
        for n in range(3):
            w.submit(make_record(n))
        w.submit_shadow(shadow_result("a"))
        w.submit_shadow(shadow_result("b"))
        await w.close(timeout=0.2)  # database down: everything is spilled
        assert (w.spilled, w.written, w.shadow_written, w.lost) == (5, 0, 0, 0)
        lines = [orjson.loads(line) for path in spill.glob("audit-*.jsonl")
                 for line in path.read_bytes().splitlines()]
        kinds = sorted(str(line.get("_kind")) for line in lines)
        assert kinds == ["None", "None", "None", "shadow", "shadow"]
        w.submit_shadow(shadow_result("late"))  # after close: straight to a spill file
        assert (w.spilled, w.lost) == (6, 0)
    finally:
        await bring_table_back(store)
    w2 = writer(store, tmp_path)
    w2.start()
    await until(lambda: w2.replayed == 6)
    await w2.close()
    assert (w2.written, w2.shadow_written) == (3, 3)
    assert await count_rows(store) == 3
    assert await shadow_ids(store) == ["req_shadow_a", "req_shadow_b", "req_shadow_late"]


async def test_malformed_shadow_row_is_dead_lettered_alone(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    await empty_shadow_results(store)
    w = writer(store, tmp_path)
    w.submit(make_record("ok"))
    w.submit_shadow(shadow_result("good"))
    w.submit_shadow(shadow_result("bad", candidate_deployment=None))
    await w.close()
    assert (w.written, w.shadow_written, w.rejected, w.lost) == (1, 1, 1, 0)
    assert await shadow_ids(store) == ["req_shadow_good"]
    dead = b"".join(p.read_bytes() for p in (tmp_path / "spill").glob("rejected-*.jsonl"))
    assert b"req_shadow_bad" in dead and b"candidate_deployment" in dead


async def test_backlog_seconds_is_the_age_of_the_oldest_queued_record(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    w = writer(store, tmp_path)  # not started: records stay queued
    assert w.backlog_seconds() == 0.0
    now = time.time()
    w.submit(make_record("old", created_at=now - 42.0))
    w.submit(make_record("new", created_at=now - 1.0))
    assert w.backlog_seconds(now) == pytest.approx(42.0)
    w.submit_shadow({"request_id": "s", "created_at": now - 50.0})  # behind the oldest
    assert w.backlog_seconds(now) == pytest.approx(42.0)
    await w.flush(timeout=30)
    assert w.pending == 0 and w.backlog_seconds() == 0.0
    await w.close()


def facade_batch(n: int | str, **overrides: Any) -> dict[str, Any]:
    now = time.time()
    calls = [[now - 0.01, now, "GET", f"/tickets/{n}", 200, f"case-{n}", "127.0.0.1", None,
              False]]
    row: dict[str, Any] = {"facade": "crm", "upstream": "127.0.0.1:9000", "first_at": now,
                           "last_at": now, "n_calls": 1, "calls": orjson.dumps(calls).decode()}
    row.update(overrides)
    return row


async def facade_batches(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        result = await conn.execute(sa.select(facade_calls.c.calls).order_by(facade_calls.c.id))
        return [orjson.loads(r[0])[0][3] for r in result]


async def test_facade_call_batches_batch_spill_and_replay_like_the_others(
    store: Store, make_record: RecordFactory, tmp_path: Path
) -> None:
    """The facade call log rides the same queue: one transaction with the audit rows, and
    an outage spills them tagged, to be written back as facade rows (never usage rows)."""
    async with store.engine.begin() as conn:
        await conn.execute(facade_calls.delete())
    w = writer(store, tmp_path)
    w.start()
    w.submit(make_record("f0"))
    w.submit_facade(facade_batch(1))
    w.submit_facade(facade_batch("bad", calls="not json"))  # malformed: dead-lettered alone
    await w.close()
    assert (w.written, w.facade_written, w.rejected, w.lost) == (1, 1, 1, 0)
    assert await facade_batches(store) == ["/tickets/1"]

    await take_table_offline(store)
    try:
        w = writer(store, tmp_path, flush_interval_ms=10)
        w.start()
        w.submit(make_record("f1"))
        w.submit_facade(facade_batch(2))
        await w.close(timeout=0.2)  # database down: both spilled
        assert (w.spilled, w.facade_written, w.lost) == (2, 0, 0)
    finally:
        await bring_table_back(store)
    w2 = writer(store, tmp_path)
    w2.start()
    await until(lambda: w2.replayed == 2)
    await w2.close()
    assert (w2.written, w2.facade_written) == (1, 1)
    assert await facade_batches(store) == ["/tickets/1", "/tickets/2"]


async def test_heap_is_released_once_after_a_large_backlog_is_written(
    store: Store, make_record: RecordFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lockgate.store import audit_writer

    calls: list[int] = []

    def fake_release() -> bool:  # the real malloc_trim is tested in tests/test_interpreter.py
        calls.append(1)
        return True

    monkeypatch.setattr(audit_writer, "release_free_heap", fake_release)
    monkeypatch.setattr(audit_writer, "RELEASE_HEAP_AFTER", 300)
    w = writer(store, tmp_path, batch_size=100)
    w.start()
    for n in range(200):  # a backlog below the threshold: nothing to give back
        w.submit(make_record(n))
    await until(lambda: w.pending == 0)
    await asyncio.sleep(0.05)
    assert calls == [] and w.heap_releases == 0
    for n in range(200, 600):  # 400 queued at once: released once they are all written
        w.submit(make_record(n))
    await until(lambda: w.heap_releases == 1)
    assert w.pending == 0 and w.written == 600 and calls == [1]
    await asyncio.sleep(0.05)
    assert w.heap_releases == 1  # once per backlog, not on every idle step
    await w.close()
