"""Rollups, sessions and widget tokens on SQLite and PostgreSQL (no server, no browser)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from lockgate.pipeline.call import UsageRecord
from lockgate.store import Store
from lockgate.store.console import ConsoleData, LogFilter
from lockgate.store.rollups import EDGES_MS, percentile


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lg.db'}"
    else:
        from tests.support.postgres import fresh_database

        yield from fresh_database("lg_rollups")


def _with_store(db_url: str, check: Callable[[Store], Awaitable[None]]) -> None:
    """Run ``check`` on a fresh store, on a thread of its own: these tests share a session
    with Playwright's sync API, which owns the main thread's event loop."""

    async def go() -> None:
        s = await Store.open(db_url)
        try:
            await check(s)
        finally:
            await s.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def _rec(i: int, *, at: float, team: str | None = "team_a", model: str = "fast",
         status: int = 200, latency: float = 20.0, source: str = "http",
         cost: float = 0.01) -> UsageRecord:
    return UsageRecord(request_id=f"r-{uuid.uuid4().hex}-{i}", created_at=at, key_id="k1",
                       team_id=team, model=model, deployment="d", kind="chat", source=source,
                       status=status, error_class=None, prompt_tokens=3, completion_tokens=4,
                       cost=cost, latency_ms=latency, overhead_ms=0.2, stream=False)


def test_rollups_match_the_audit_rows_and_fold_each_row_once(db_url: str) -> None:
    _with_store(db_url, _rollups_match_the_audit_rows_and_fold_each_row_once)


async def _rollups_match_the_audit_rows_and_fold_each_row_once(store: Store) -> None:
    now = time.time()
    data = ConsoleData(store.engine)
    first = [_rec(i, at=now - 30 * i, latency=15.0 + i, status=500 if i % 5 == 0 else 200)
             for i in range(40)]
    first += [_rec(100 + i, at=now - 50 * i, team="team_b", model="other", latency=400.0)
              for i in range(10)]
    first.append(_rec(999, at=now, source="shadow"))  # the operator's experiment: not counted
    await store.write_usage(first)
    await store.record_admin_action("key.create", actor="master")  # not a call
    assert await data.rollups.refresh() == 50
    assert await data.rollups.refresh() == 0  # nothing new: nothing folded twice
    for window in ("1h", "24h", "7d"):
        ov = await data.rollups.overview(window, now=now)
        summary = await store.usage_summary(since=now - 3600, group_by=("team", "model"))
        assert ov.totals["requests"] == sum(r["requests"] for r in summary) == 50
        assert ov.totals["errors"] == sum(r["errors"] for r in summary) == 8
        assert ov.totals["cost"] == pytest.approx(sum(r["cost"] for r in summary))
        assert sum(ov.requests) == 50
        by = {(r["team_id"], r["model"]): r["requests"] for r in ov.by_team_model}
        assert by == {("team_a", "fast"): 40, ("team_b", "other"): 10}
    one = await data.rollups.overview("1h", team_id="team_b", now=now)
    assert one.totals["requests"] == 10 and one.totals["errors"] == 0
    assert 250 <= (one.totals["p50_ms"] or 0) <= 500  # all ten took 400 ms: the 250-500 bin
    # new rows are added to the same buckets, not counted again from the start
    await store.write_usage([_rec(200 + i, at=now, latency=5.0) for i in range(7)])
    assert await data.rollups.refresh() == 7
    ov = await data.rollups.overview("1h", now=now + 1)
    assert ov.totals["requests"] == 57


def test_percentile_from_the_histogram() -> None:
    hist = [0] * (len(EDGES_MS) + 1)
    assert percentile(hist, 0.5) is None
    hist[0] = 50  # <= 10 ms
    hist[4] = 50  # 100-250 ms
    assert percentile(hist, 0.25) == pytest.approx(5.0)
    p95 = percentile(hist, 0.95)
    assert p95 is not None and 100 < p95 <= 250


def test_sessions_expire_and_end(db_url: str) -> None:
    _with_store(db_url, _sessions_expire_and_end)


async def _sessions_expire_and_end(store: Store) -> None:
    data = ConsoleData(store.engine)
    sid, rec = await data.create_session(key_id="master", team_id=None, team_name=None,
                                         is_master=True, ttl=60)
    got = await data.get_session(sid)
    assert got is not None and got.csrf == rec.csrf and got.is_master
    assert await data.get_session(sid + "x") is None
    await data.end_session(sid)
    assert await data.get_session(sid) is None
    short, _ = await data.create_session(key_id="k", team_id="t", team_name="T",
                                         is_master=False, ttl=0.001)
    time.sleep(0.01)
    assert await data.get_session(short) is None


def test_widget_tokens_are_stored_hashed(db_url: str) -> None:
    _with_store(db_url, _widget_tokens_are_stored_hashed)


async def _widget_tokens_are_stored_hashed(store: Store) -> None:
    data = ConsoleData(store.engine)
    token, rec = await data.mint_widget_token(key_id="k", team_id="t", origin="https://a.example",
                                              model="rag/kb", user_id="alice",
                                              groups=["hr", "eu"], ttl=60)
    got = await data.widget_token(token)
    assert got is not None and got.groups == ("hr", "eu") and got.model == "rag/kb"
    assert got.expires_at == pytest.approx(rec.expires_at)
    assert await data.widget_token(token[:-1] + "x") is None
    async with store.engine.connect() as conn:
        import sqlalchemy as sa

        raw = (await conn.execute(sa.text("SELECT token_hash FROM widget_tokens"))).scalars()
        assert token not in list(raw)


def test_request_log_filters(db_url: str) -> None:
    _with_store(db_url, _request_log_filters)


async def _request_log_filters(store: Store) -> None:
    now = time.time()
    await store.write_usage([_rec(1, at=now, model="fast"),
                             _rec(2, at=now, model="other", status=502),
                             _rec(3, at=now, team="team_b")])
    data = ConsoleData(store.engine)
    rows = [r for _i, r in await data.request_log(LogFilter(team_id="team_a"))]
    assert {r.model for r in rows} == {"fast", "other"}
    errs = [r for _i, r in await data.request_log(LogFilter(status="error"))]
    assert [r.status for r in errs] == [502]
    exact = [r for _i, r in await data.request_log(LogFilter(status="502", model="other"))]
    assert len(exact) == 1
    page1 = await data.request_log(LogFilter(), limit=2)
    page2 = await data.request_log(LogFilter(before_id=page1[-1][0]), limit=2)
    assert len(page1) == 2 and len(page2) == 1
    assert {r.request_id for _i, r in page1}.isdisjoint({r.request_id for _i, r in page2})


def test_made_up_model_names_roll_up_as_unknown(db_url: str) -> None:
    _with_store(db_url, _made_up_model_names_roll_up_as_unknown)


async def _made_up_model_names_roll_up_as_unknown(store: Store) -> None:
    now = time.time()
    data = ConsoleData(store.engine)
    bogus = [_rec(i, at=now, model=f"made-up-{i}-" + "x" * 300, status=404) for i in range(30)]
    bogus += [_rec(50 + i, at=now, model=f"nope-{i}", status=401) for i in range(5)]
    real = [_rec(80 + i, at=now, model="fast", status=502) for i in range(3)]
    await store.write_usage(bogus + real)
    assert await data.rollups.refresh() == 38
    ov = await data.rollups.overview("1h", now=now)
    by = {r["model"]: r["requests"] for r in ov.by_team_model}
    assert by == {"unknown": 35, "fast": 3}  # a known model's errors keep its name
    assert ov.totals["errors"] == 38
