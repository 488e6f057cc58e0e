"""The audit writer gives the event loop back while it prepares a large batch, so requests
are not held behind milliseconds of row building and hashing (issue 12, c=1 latency tail)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.store import AuditWriter, Store, chain
from lockgate.store.records import usage_row
from lockgate.store.tables import usage_records

ROWS = 3 * chain.YIELD_EVERY + 10


class Ticker:
    """Counts event-loop turns taken by another task."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            self.ticks += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._stop = True


async def test_hashing_a_batch_lets_the_loop_run(
    store: Store, make_record: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticker = Ticker()
    seen: list[int] = []
    real_link = chain.link

    def link(prev: str, seq: int, row: Any) -> str:
        seen.append(ticker.ticks)
        return real_link(prev, seq, row)

    monkeypatch.setattr(chain, "link", link)
    task = asyncio.create_task(ticker.run())
    rows = [usage_row(make_record(i)) for i in range(ROWS)]
    written = await store.write_rows(rows)
    ticker.stop()
    await task
    assert written == (ROWS, 0)
    # the loop ran between the first and the last row hashed: once per YIELD_EVERY rows
    assert len(set(seen)) >= ROWS // chain.YIELD_EVERY
    async with store.engine.connect() as conn:
        seqs = sorted(r[0] for r in await conn.execute(sa.select(usage_records.c.seq)))
    assert len(seqs) == ROWS
    assert seqs == list(range(seqs[0], seqs[0] + ROWS))  # one unbroken run of links


async def test_converting_a_batch_lets_the_loop_run(
    store: Store, make_record: Callable[..., Any], tmp_path: Path,
) -> None:
    writer = AuditWriter(store, flush_interval_ms=60_000, batch_size=10_000,
                         spill_dir=tmp_path / "spill")
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    before = ticker.ticks
    await asyncio.sleep(0)
    records = [make_record(f"c{i}") for i in range(ROWS)]
    start = ticker.ticks
    rows = await writer._convert(records)
    turns = ticker.ticks - start
    ticker.stop()
    await task
    assert before <= start
    assert len(rows) == ROWS
    assert turns >= ROWS // chain.YIELD_EVERY


async def test_a_writer_that_is_behind_takes_longer_stretches(
    store: Store, make_record: Callable[..., Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With more than a batch still queued the loop is saturated: the writer returns to it
    every YIELD_EVERY_BEHIND rows instead of every YIELD_EVERY, or it falls further behind."""
    writer = AuditWriter(store, flush_interval_ms=60_000, batch_size=10,
                         spill_dir=tmp_path / "spill")
    steps: list[int] = []
    real = store.write_rows

    async def spy(*args: Any, yield_every: int = chain.YIELD_EVERY) -> tuple[int, int]:
        steps.append(yield_every)
        return await real(*args, yield_every=yield_every)

    monkeypatch.setattr(store, "write_rows", spy)
    for i in range(35):
        writer.submit(make_record(f"b{i}"))
    assert await writer._drain()
    # 35 queued: 25 and 15 left behind the first two batches (behind), 5 behind the third
    assert steps == [chain.YIELD_EVERY_BEHIND, chain.YIELD_EVERY_BEHIND, chain.YIELD_EVERY]
    assert writer.written == 30 and writer.pending == 5
