"""Usage rows: batched insert with duplicate tolerance, summaries with filters, recent rows."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lockgate.store import InvalidInput, NotFoundError, Store

RecordFactory = Callable[..., Any]

HOUR = 3600.0


async def _seed(store: Store, make_record: RecordFactory) -> dict[str, Any]:
    """Two teams, three keys, two models, rows two days old and fresh."""
    a = await store.create_team("alpha")
    b = await store.create_team("beta")
    _, ka1 = await store.create_key("alpha", "a1")
    _, ka2 = await store.create_key("alpha", "a2")
    _, kb = await store.create_key("beta", "b")
    now = time.time()
    old = now - 48 * HOUR
    rows = [
        # alpha / a1 / m1: 3 fresh (one error), 1 old
        make_record("a1", team_id=a.id, key_id=ka1.id, model="m1", created_at=now),
        make_record("a2", team_id=a.id, key_id=ka1.id, model="m1", created_at=now - 10),
        make_record(
            "a3",
            team_id=a.id,
            key_id=ka1.id,
            model="m1",
            created_at=now - 20,
            status=502,
            error_class="upstream_error",
            completion_tokens=0,
            cost=0.0,
        ),
        make_record("a4", team_id=a.id, key_id=ka1.id, model="m1", created_at=old),
        # alpha / a2 / m2: 2 fresh, tokens differ
        make_record(
            "a5", team_id=a.id, key_id=ka2.id, model="m2", created_at=now, prompt_tokens=100
        ),
        make_record(
            "a6", team_id=a.id, key_id=ka2.id, model="m2", created_at=now, prompt_tokens=200
        ),
        # beta / b / m1: 1 fresh, 1 old with an error_class but status 200 (counts as error)
        make_record("b1", team_id=b.id, key_id=kb.id, model="m1", created_at=now, cost=1.5),
        make_record(
            "b2",
            team_id=b.id,
            key_id=kb.id,
            model="m1",
            created_at=old,
            error_class="guard_blocked",
        ),
        # master key: no team, no key
        make_record("m1", model="m1", created_at=now, cost=2.0),
    ]
    assert await store.write_usage(rows) == len(rows)
    return {"a": a, "b": b, "ka1": ka1, "ka2": ka2, "kb": kb, "now": now, "old": old}


async def test_write_usage_skips_duplicates_keeps_rest(
    store: Store, make_record: RecordFactory
) -> None:
    assert await store.write_usage([make_record(1), make_record(2)]) == 2
    batch = [make_record(3), make_record(2), make_record(4), make_record(3)]
    assert await store.write_usage(batch) == 2
    rows = await store.recent_usage(100)
    assert sorted(r.request_id for r in rows) == [f"req_test_{n}" for n in (1, 2, 3, 4)]
    assert await store.write_usage([]) == 0


async def test_rows_round_trip_every_field(store: Store, make_record: RecordFactory) -> None:
    created = 1_790_000_000.123456
    record = make_record(
        "rt",
        created_at=created,
        key_id="key_x",
        team_id="team_x",
        deployment=None,
        kind="embeddings",
        source="rag",
        status=429,
        error_class="rate_limit_exceeded",
        prompt_tokens=2**40,
        completion_tokens=7,
        cost=0.000123,
        latency_ms=1.5,
        overhead_ms=0.25,
        stream=True,
        cached=True,
        request_body='{"a": "é\\u0000"}',
        response_body="ok\x00!",
    )
    await store.write_usage([record])
    (row,) = await store.recent_usage(1)
    assert row.created_at == datetime.fromtimestamp(created, UTC)
    assert row.created_at.tzinfo is not None
    as_dict = row.as_dict()
    for name in (
        "request_id",
        "key_id",
        "team_id",
        "model",
        "deployment",
        "kind",
        "source",
        "status",
        "error_class",
        "prompt_tokens",
        "completion_tokens",
        "stream",
        "cached",
        "request_body",
    ):
        assert as_dict[name] == getattr(record, name), name
    assert math.isclose(row.cost, 0.000123) and row.latency_ms == 1.5
    assert row.response_body == "ok!"  # NUL cannot be stored in PostgreSQL text


async def test_unstorable_text_is_sanitised(store: Store, make_record: RecordFactory) -> None:
    await store.write_usage([make_record("s", model="bad\ud800x", request_body="a\x00b")])
    (row,) = await store.recent_usage(1)
    assert row.model == "bad?x" and row.request_body == "ab"


async def test_malformed_record_is_refused_whole(store: Store, make_record: RecordFactory) -> None:
    with pytest.raises(InvalidInput):
        await store.write_usage([make_record(1), make_record(2, request_id=None)])
    with pytest.raises(InvalidInput):
        await store.write_usage([make_record(3, prompt_tokens=2**64)])
    assert await store.recent_usage(10) == []


async def test_summary_by_team_key_model(store: Store, make_record: RecordFactory) -> None:
    s = await _seed(store, make_record)
    groups = await store.usage_summary()
    by = {(g["team_name"], g["key_name"], g["model"]): g for g in groups}
    assert set(by) == {
        ("alpha", "a1", "m1"),
        ("alpha", "a2", "m2"),
        ("beta", "b", "m1"),
        (None, None, "m1"),
    }
    a1 = by[("alpha", "a1", "m1")]
    assert a1["team_id"] == s["a"].id and a1["key_id"] == s["ka1"].id
    assert a1["requests"] == 4 and a1["errors"] == 1
    assert a1["prompt_tokens"] == 40 and a1["completion_tokens"] == 15
    assert math.isclose(a1["cost"], 0.75)
    a2 = by[("alpha", "a2", "m2")]
    assert (a2["requests"], a2["prompt_tokens"], a2["errors"]) == (2, 300, 0)
    beta = by[("beta", "b", "m1")]
    assert (beta["requests"], beta["errors"]) == (2, 1)
    assert math.isclose(beta["cost"], 1.75)
    master = by[(None, None, "m1")]
    assert master["team_id"] is None and master["requests"] == 1
    assert all(isinstance(g["requests"], int) and isinstance(g["cost"], float) for g in groups)


async def test_summary_filters_since_and_team(store: Store, make_record: RecordFactory) -> None:
    s = await _seed(store, make_record)
    since = datetime.now(UTC) - timedelta(hours=1)

    fresh = await store.usage_summary(since=since, group_by=("team",))
    totals = {g["team_name"]: g["requests"] for g in fresh}
    assert totals == {"alpha": 5, "beta": 1, None: 1}

    alpha_by_model = await store.usage_summary(team="alpha", since=since, group_by=["model"])
    assert [(g["model"], g["requests"], g["errors"]) for g in alpha_by_model] == [
        ("m1", 3, 1),
        ("m2", 2, 0),
    ]
    # by id, and with epoch seconds for since, gives the same
    same = await store.usage_summary(team=s["a"].id, since=since.timestamp(), group_by=["model"])
    assert same == alpha_by_model

    everything = await store.usage_summary(team="beta", group_by=())
    assert len(everything) == 1 and everything[0]["requests"] == 2
    assert everything[0]["errors"] == 1

    until_old = await store.usage_summary(until=s["old"] + 1, group_by=())
    assert until_old[0]["requests"] == 2

    naive = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    assert await store.usage_summary(since=naive) == []
    by_key = await store.usage_summary(key_id=s["kb"].id, group_by=["key"])
    assert by_key == await store.usage_summary(team="beta", group_by=["key"])
    assert by_key[0]["key_name"] == "b" and by_key[0]["requests"] == 2


async def test_summary_rejects_unknown_group_and_team(
    store: Store, make_record: RecordFactory
) -> None:
    await _seed(store, make_record)
    with pytest.raises(InvalidInput, match="cannot group usage by colour"):
        await store.usage_summary(group_by=("team", "colour"))
    with pytest.raises(NotFoundError):
        await store.usage_summary(team="gamma")


async def test_recent_usage_newest_first_with_filters(
    store: Store, make_record: RecordFactory
) -> None:
    s = await _seed(store, make_record)
    rows = await store.recent_usage(3)
    assert len(rows) == 3
    assert rows[0].created_at >= rows[1].created_at >= rows[2].created_at
    alpha = await store.recent_usage(100, team="alpha")
    assert len(alpha) == 6 and {r.team_id for r in alpha} == {s["a"].id}
    errors = await store.recent_usage(100, errors_only=True)
    assert sorted(r.request_id for r in errors) == ["req_test_a3", "req_test_b2"]
    since = datetime.fromtimestamp(s["now"] - HOUR, UTC)
    assert len(await store.recent_usage(100, since=since, key_id=s["ka1"].id)) == 3
    assert sorted(r.request_id for r in await store.recent_usage(100, model="m2")) == [
        "req_test_a5",
        "req_test_a6",
    ]
    with pytest.raises(InvalidInput):
        await store.recent_usage(0)


async def test_shadow_rows_are_visible_but_not_billed(
    store: Store, make_record: RecordFactory
) -> None:
    """Shadow calls carry the caller's key and team but are counted apart, never as spend."""
    team = await store.create_team("gamma")
    _, key = await store.create_key("gamma", "g")
    now = time.time()
    ids = {"team_id": team.id, "key_id": key.id, "model": "m1", "created_at": now}
    assert await store.write_usage([
        make_record("p1", **ids, cost=1.0, latency_ms=10.0),
        make_record("p2", **ids, cost=2.0, latency_ms=30.0, status=502,
                    error_class="upstream_error"),
        make_record("s1", **ids, source="shadow", cost=4.0, latency_ms=999.0, status=502,
                    error_class="upstream_error", prompt_tokens=1000),
        make_record("s2", **ids, source="shadow", cost=8.0, latency_ms=999.0),
    ]) == 4
    (line,) = await store.usage_summary(team="gamma")
    assert (line["requests"], line["errors"], line["prompt_tokens"]) == (2, 1, 20)
    assert math.isclose(line["cost"], 3.0) and line["avg_latency_ms"] == 20.0
    assert line["shadow_requests"] == 2 and math.isclose(line["shadow_cost"], 12.0)
    by_source = {g["source"]: g for g in await store.usage_summary(team="gamma",
                                                                   group_by=["source"])}
    assert by_source["http"]["shadow_requests"] == 0 and by_source["http"]["requests"] == 2
    shadow = by_source["shadow"]
    assert (shadow["requests"], shadow["cost"], shadow["shadow_requests"]) == (0, 0.0, 2)
    assert shadow["avg_latency_ms"] is None
    (total,) = await store.usage_summary(team="gamma", since=now - 1, group_by=())
    assert (total["requests"], total["shadow_requests"]) == (2, 2)
    shown = {r.request_id: r.source for r in await store.recent_usage(10, team="gamma")}
    assert shown["req_test_s1"] == "shadow"  # every row stays visible in the audit log
