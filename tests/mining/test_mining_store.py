"""Stored logs and lockgate's own records as events, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lockgate.mining import MiningInputError, MiningService, UnknownLog, mine, read_log_file
from lockgate.mining.sources import collect
from lockgate.pipeline.call import UsageRecord
from lockgate.review import NewReview, ReviewRepository
from lockgate.store import Store

DATA = Path(__file__).parent / "data"


async def test_save_and_load_round_trip(store: Store) -> None:
    svc = MiningService(store.engine, None)
    log = read_log_file(DATA / "hand_log.csv")
    info = await svc.import_log("hand", log, source="test")
    assert (info.n_events, info.n_cases) == (9, 3)
    back = await svc.store.load("hand")
    assert back.events() == log.events()
    assert mine(back).to_dict() == mine(log).to_dict()
    with pytest.raises(MiningInputError, match="already exists"):
        await svc.import_log("hand", log, source="test")
    await svc.import_log("hand", log, source="again", replace=True)
    assert [i.name for i in await svc.logs()] == ["hand"]
    assert await svc.delete("hand") and not await svc.delete("hand")
    with pytest.raises(UnknownLog):
        await svc.store.load("hand")


async def test_concurrent_saves_wait_for_the_write_lock(store: Store) -> None:
    """Saves that run at once all land or get 'already exists'; none fails on a lock.

    On SQLite a save reads (does the name exist?) before it writes; a deferred transaction
    whose snapshot went stale in between used to fail at once (database is locked), which
    the fuzz run saw as a 500."""
    import asyncio

    svc = MiningService(store.engine, None)
    log = read_log_file(DATA / "hand_log.csv")
    names = [f"log-{i}" for i in range(12)] + ["same"] * 6
    results = await asyncio.gather(
        *(svc.import_log(n, log, source="race") for n in names), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, MiningInputError) and "already exists" in str(e)
               for e in errors), errors
    assert len(errors) == 5
    assert sorted(i.name for i in await svc.logs()) == sorted(set(names))
    deleted = await asyncio.gather(*(svc.delete(n) for n in sorted(set(names))))
    assert all(deleted) and await svc.logs() == []


def _usage(rid: str, at: float, source: str = "http", status: int = 200) -> UsageRecord:
    return UsageRecord(
        request_id=rid, created_at=at, key_id="k1", team_id="t1", model="fast",
        deployment="fast#0", kind="chat", source=source, status=status, error_class=None,
        prompt_tokens=1, completion_tokens=1, cost=0.0, latency_ms=1.0, overhead_ms=0.1,
        stream=False)


async def test_lockgate_records_become_cases(store: Store) -> None:
    t0 = time.time() - 3600
    await store.write_usage([_usage("req-1", t0), _usage("req-2", t0 + 5, status=502)])
    repo = ReviewRepository(store)
    item = await repo.insert(NewReview(task="invoice", source="http", input={}, output={},
                                       reasons=["r"], request_id="req-1"), now=t0 + 10)
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE review_items SET state = 'approved', decided_at = :t, decided_by = 'ann'"
            " WHERE id = :id"), {"t": t0 + 70, "id": item.id})
        await conn.execute(sa.text(
            "CREATE TABLE lockgate_jobs (id TEXT, task TEXT, state TEXT,"
            " created_at DOUBLE PRECISION, finished_at DOUBLE PRECISION)"))
        await conn.execute(sa.text(
            "INSERT INTO lockgate_jobs VALUES ('j1', 'summarise', 'succeeded', :a, :b)"),
            {"a": t0 + 1, "b": t0 + 31})
    await repo.insert(NewReview(task="summarise", source="jobs", source_ref="j1", input={},
                                output={}, reasons=["r"]), now=t0 + 20)
    events = await collect(store.engine, ["calls", "reviews", "jobs"], None, None)
    by_case: dict[str, list[str]] = {}
    for e in sorted(events, key=lambda e: (e.case_id, e.timestamp)):
        by_case.setdefault(e.case_id, []).append(e.activity)
    assert by_case["req-1"] == ["call http/chat", "review queued", "review approved"]
    assert by_case["req-2"] == ["call http/chat failed"]
    assert by_case["job:j1"] == ["job submitted", "review queued", "job succeeded"]
    # a time window applies to every source
    late = await collect(store.engine, ["calls", "reviews", "jobs"], t0 + 15, None)
    assert {e.case_id for e in late} == {"job:j1"}
    with pytest.raises(MiningInputError, match="unknown event source"):
        await collect(store.engine, ["nope"], None, None)


async def test_service_reads_records_and_checks_references(store: Store) -> None:
    from lockgate.settings.mining import MiningSettings

    t0 = time.time() - 100
    await store.write_usage([_usage("r1", t0), _usage("r2", t0 + 1)])
    svc = MiningService(store.engine, None, MiningSettings(references={"x": [["a"]]}))
    ev, label = await svc.event_log(sources=["calls"])
    an = await svc.analyze(ev, label, summary=True)
    assert an.result.overview["cases"] == 2
    assert an.summary is not None and an.summary.model is None and "[F1]" in an.summary.text
    assert svc.reference("x", None) == [["a"]]
    with pytest.raises(MiningInputError, match="unknown reference"):
        svc.reference("y", None)
    with pytest.raises(MiningInputError, match="not both"):
        svc.reference("x", [["a"]])
