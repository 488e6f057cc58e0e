"""Cache stage: keys per tenant and body, the no-cache header, hits and misses."""

from __future__ import annotations

import asyncio

from lockgate.pipeline import Call, Controls, Principal
from lockgate.pipeline.cache import ResponseCache, cache_key, wants_no_cache
from lockgate.state import MemoryState
from tests.pipeline.fakes import FakeProvider, build_pipeline, chat_call, deployment, metric, target

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def call(team: str | None = "team-a", key: str = "key-1", model: str = "m",
         kind: str = "chat") -> Call:
    return Call(kind=kind, model=model, body=BODY,  # type: ignore[arg-type]
                principal=Principal(key_id=key, team_id=team))


def test_keys_differ_per_team_but_not_per_key_of_a_team() -> None:
    a = cache_key(call("team-a", "key-1"), BODY)
    assert a == cache_key(call("team-a", "key-2"), BODY)  # one team shares its cache
    assert a != cache_key(call("team-b", "key-1"), BODY)
    assert a.startswith("rc:")


def test_keys_without_a_team_are_per_key() -> None:
    assert cache_key(call(None, "key-1"), BODY) != cache_key(call(None, "key-2"), BODY)
    assert cache_key(call(None, "key-1"), BODY) != cache_key(call("key-1", "x"), BODY)


def test_keys_differ_per_body_model_and_kind_but_ignore_transport_fields() -> None:
    base = cache_key(call(), BODY)
    other = {**BODY, "messages": [{"role": "user", "content": "hello!"}]}
    assert cache_key(call(), other) != base
    assert cache_key(call(), {**BODY, "temperature": 0.2}) != base
    assert cache_key(call(model="n"), BODY) != base
    assert cache_key(call(kind="embeddings"), BODY) != base
    noise = {**BODY, "user": "u-9", "stream": False, "metadata": {"trace": "x"},
             "stream_options": {"include_usage": True}}
    assert cache_key(call(), noise) == base
    reordered = dict(reversed(list(BODY.items())))
    assert cache_key(call(), reordered) == base


def test_wants_no_cache() -> None:
    assert wants_no_cache("no-cache") and wants_no_cache("No-Store, max-age=0")
    assert not wants_no_cache(None) and not wants_no_cache("") and not wants_no_cache("max-age=60")


async def test_response_cache_miss_then_hit() -> None:
    cache = ResponseCache(MemoryState(), ttl_seconds=60)
    assert await cache.get("rc:x") is None
    await cache.put("rc:x", {"answer": 1})
    assert await cache.get("rc:x") == {"answer": 1}
    assert await cache.get("rc:y") is None
    assert cache.stats() == {"hits": 1, "misses": 2, "errors": 0}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_pipeline_serves_a_repeat_from_the_cache_and_audits_it_as_cached() -> None:
    provider = FakeProvider("cached answer")
    cache = ResponseCache(MemoryState(), ttl_seconds=60)
    pipe, sink, metrics = build_pipeline({"m": [target(deployment("m"), provider)]},
                                         controls=Controls(cache=cache))
    team_a = Principal(key_id="k1", team_id="A")
    first = await pipe.chat(chat_call("m", principal=team_a))
    await settle()  # the fill runs in the background
    second = await pipe.chat(chat_call("m", principal=team_a))
    assert provider.calls == 1
    assert second.body == first.body
    assert [r.cached for r in sink.records] == [False, True]
    assert sink.records[1].cost == 0.0 and sink.records[1].prompt_tokens == 3
    assert metric(metrics, "lockgate_cache_total", {"result": "hit"}) == 1
    assert metric(metrics, "lockgate_cache_total", {"result": "miss"}) == 1

    # another team never gets team A's answer
    await pipe.chat(chat_call("m", principal=Principal(key_id="k2", team_id="B")))
    assert provider.calls == 2
    # no-cache bypasses the cache
    await pipe.chat(chat_call("m", principal=team_a, no_cache=True))
    assert provider.calls == 3 and sink.records[-1].cached is False


async def test_streams_use_the_cache() -> None:
    """Streams read and fill the cache too (details in test_pipeline_streams.py)."""
    provider = FakeProvider("one two")
    cache = ResponseCache(MemoryState(), ttl_seconds=60)
    pipe, sink, _ = build_pipeline({"m": [target(deployment("m"), provider)]},
                                   controls=Controls(cache=cache))
    p = Principal(key_id="k1", team_id="A")
    seen = []
    for _ in range(2):
        stream = await pipe.chat_stream(chat_call("m", principal=p))
        chunks = [c async for c in stream]
        seen.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks))
        await settle()
    assert provider.calls == 1 and cache.stats()["hits"] == 1
    assert seen == ["onetwo", "onetwo"]
    assert [r.cached for r in sink.records] == [False, True]
