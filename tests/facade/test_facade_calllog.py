"""The call log: calls wait as tuples and leave as one row per batch (a second, or
``max_batch`` calls, or close); a refusing sink costs the batch, loudly, never the proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from lockgate.facade.calllog import CallLog
from lockgate.mining.facade_source import calls_of
from lockgate.store.records import facade_call_row


def _call(i: int) -> Any:
    return (100.0 + i, 100.5 + i, "GET", f"/t/{i}", 200, f"c{i}", "127.0.0.1", None, False)


async def test_batches_by_time_size_and_close() -> None:
    rows: list[dict[str, Any]] = []
    log = CallLog(rows.append, "crm", "10.0.0.5:9000", interval=0.05, max_batch=3)
    for i in range(4):  # three leave at once (max_batch), one waits for the timer
        log.add(_call(i))
    assert [r["n_calls"] for r in rows] == [3]
    await asyncio.sleep(0.2)
    assert [r["n_calls"] for r in rows] == [3, 1]
    log.add(_call(9))
    log.close()  # what waits is handed over at close
    assert [r["n_calls"] for r in rows] == [3, 1, 1]
    first = facade_call_row(rows[0])  # the writer accepts the row as it is
    assert (first["first_at"], first["last_at"], first["upstream"]) == (100.5, 102.5,
                                                                       "10.0.0.5:9000")
    calls = list(calls_of(rows[0]["calls"]))
    assert [c["path"] for c in calls] == ["/t/0", "/t/1", "/t/2"]
    assert calls[0] == {"started_at": 100.0, "finished_at": 100.5, "method": "GET",
                        "path": "/t/0", "status": 200, "case_id": "c0", "client": "127.0.0.1",
                        "rules": None, "upgraded": False}
    assert (log.batches, log.calls, log.lost) == (3, 5, 0)


async def test_a_refusing_sink_drops_the_batch_loudly(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(row: dict[str, Any]) -> None:
        raise RuntimeError("queue full")

    log = CallLog(refuse, "crm", "u", max_batch=2)
    log.add(_call(1))
    log.add(_call(2))  # the batch is handed over here and refused
    assert (log.lost, log.batches, log.pending) == (2, 0, [])
    assert "2 logged calls dropped" in caplog.text


def test_malformed_call_arrays_are_skipped() -> None:
    good = list(_call(1))
    text = orjson.dumps([good, [1, 2], "x", good]).decode()
    assert len(list(calls_of(text))) == 2
    assert list(calls_of("not json")) == [] and list(calls_of('{"a": 1}')) == []
