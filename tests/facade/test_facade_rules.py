"""Rules: enrichment through the pipeline (fails open), redact/block (fail closed), shadow."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest

from lockgate.testing.stub_upstream import StubUpstream
from tests.facade.conftest import FacadeFactory, runtime_of
from tests.facade.legacy import TICKET_TEXT

GIST_TO_FIELD = {"name": "gist", "match": {"methods": ["GET"], "path": "/tickets/{id}",
                                           "content_type": "application/json",
                                           "json": {"status": "open"}},
                 "task": "gist", "input": "description", "select": "text",
                 "to": {"response_field": "ai.summary"}, "budget_ms": 5000}


async def _get(url: str, **kw: object) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, dict(r.headers), await r.read()


async def _stats(stub: StubUpstream) -> int:
    async with aiohttp.ClientSession() as s, s.get(stub.base_url + "/_stats") as r:
        return int((await r.json())["total"])


async def test_enrich_response_field_through_the_pipeline(
        facade: FacadeFactory, stub: StubUpstream) -> None:
    base = await facade([GIST_TO_FIELD])
    status, headers, body = await _get(base + "/tickets/9")
    doc = orjson.loads(body)
    assert status == 200
    assert doc["ai"]["summary"] == TICKET_TEXT  # the model's answer (echo of the input)
    assert doc["description"] == TICKET_TEXT and doc["id"] == "9"
    assert int(headers["Content-Length"]) == len(body)
    assert await _stats(stub) == 1
    # the json predicate: a closed ticket is not enriched, and no model call is made
    _, _, body = await _get(base + "/tickets/c1")
    assert "ai" not in orjson.loads(body)
    assert await _stats(stub) == 1


async def test_enrichment_fails_open_within_the_budget(facade: FacadeFactory) -> None:
    rule = dict(GIST_TO_FIELD, task="slow_gist", budget_ms=150)
    base = await facade([rule])
    status, _, body = await _get(base + "/tickets/9")
    assert status == 200
    doc = orjson.loads(body)
    assert "ai" not in doc and doc["description"] == TICKET_TEXT  # the legacy answer as is
    metrics = await _metrics(base)
    assert 'lockgate_facade_enrichment_misses_total{facade="legacy",reason="timeout",' \
           'rule="gist"} 1.0' in metrics


async def _metrics(base: str) -> str:
    return runtime_of(base).metrics.render().decode()


async def test_model_error_fails_open(facade: FacadeFactory, stub: StubUpstream) -> None:
    base = await facade([GIST_TO_FIELD])
    async with aiohttp.ClientSession() as s:
        await s.post(stub.base_url + "/_script", json=["error-500"])
    status, _, body = await _get(base + "/tickets/9")
    assert status == 200 and "ai" not in orjson.loads(body)
    assert 'reason="error",rule="gist"} 1.0' in await _metrics(base)


async def test_response_header_and_request_field(facade: FacadeFactory) -> None:
    base = await facade([
        {"name": "hdr", "match": {"methods": ["POST"], "path": "/echo"}, "task": "label",
         "side": "request", "select": "label", "to": {"response_header": "X-AI-Label"},
         "budget_ms": 5000},
        {"name": "field", "match": {"methods": ["POST"], "path": "/echo"}, "task": "label",
         "select": "label", "to": {"request_field": "ai.kind"}, "budget_ms": 5000},
    ])
    async with aiohttp.ClientSession() as s, s.post(base + "/echo", json={"kind": "billing",
                                                                         "n": 1}) as r:
        assert r.status == 200
        assert r.headers["X-AI-Label"] == "billing"
        seen = orjson.loads((await r.json())["body"])
    # the service received the request with the field set by the model
    assert seen == {"kind": "billing", "n": 1, "ai": {"kind": "billing"}}


async def test_redact_fails_closed_and_covers_streams(facade: FacadeFactory) -> None:
    base = await facade([
        {"name": "pii", "action": "redact", "match": {"methods": ["GET"],
                                                      "path": "/customers/**"}},
        {"name": "pii-stream", "action": "redact", "match": {"methods": ["GET"],
                                                             "path": "/stream"}},
        {"name": "pii-bin", "action": "redact", "match": {"methods": ["GET"], "path": "/gzip"}},
    ])
    status, _, body = await _get(base + "/customers/1")
    doc = orjson.loads(body)
    assert status == 200
    assert "ada.lovelace@example.com" not in body.decode()
    assert "7946" not in body.decode()
    assert doc["name"] == "Ada" and doc["note"] == "call after 5pm"
    # a streamed text answer is redacted on the fly
    status, _, body = await _get(base + "/stream?n=3&gap=0.01")
    assert status == 200 and b"@example.com" not in body and body.count(b"\n") == 3
    # a body that cannot be redacted (compressed, streamed length unknown to us) is refused
    status, _, body = await _get(base + "/gzip", headers={"Accept-Encoding": "gzip"})
    assert status == 502 and orjson.loads(body)["error"]["code"] == "protective_rule_failed"


async def test_block_by_detector_and_by_task(facade: FacadeFactory, stub: StubUpstream) -> None:
    base = await facade([
        {"name": "no-pii-in", "action": "block", "detector": "pii",
         "match": {"methods": ["POST"], "path": "/echo/notes"}},
        {"name": "no-spam", "action": "block", "task": "label", "block_labels": ["spam"],
         "match": {"methods": ["POST"], "path": "/echo/posts"}, "budget_ms": 5000},
    ])
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/echo/notes", json={"t": "mail me: bob@example.org"}) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "blocked_by_rule"
        async with s.post(base + "/echo/notes", json={"t": "nothing personal"}) as r:
            assert r.status == 200
        async with s.post(base + "/echo/posts", json={"kind": "spam"}) as r:
            assert r.status == 403
        async with s.post(base + "/echo/posts", json={"kind": "news"}) as r:
            assert r.status == 200
        # the model fails: a protective rule does not let the message through
        await s.post(stub.base_url + "/_script", json=["error-500"])
        async with s.post(base + "/echo/posts", json={"kind": "news"}) as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "protective_rule_failed"


async def test_shadow_mode_changes_nothing_and_logs_the_diff(
        facade: FacadeFactory, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    base = await facade([GIST_TO_FIELD,
                         {"name": "pii", "action": "redact",
                          "match": {"methods": ["GET"], "path": "/customers/**"}}],
                        shadow=True)
    caplog.set_level(logging.INFO)
    _, _, body = await _get(base + "/tickets/9")
    assert "ai" not in orjson.loads(body)
    _, _, body = await _get(base + "/customers/1")
    assert b"ada.lovelace@example.com" in body
    metrics = await _metrics(base)
    assert 'lockgate_facade_shadow_total{differs="yes",facade="legacy",rule="gist"} 1.0' \
        in metrics
    assert 'lockgate_facade_shadow_total{differs="yes",facade="legacy",rule="pii"} 1.0' \
        in metrics
    out = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "lockgate.facade_shadow" in out and TICKET_TEXT in out


async def test_event_destination(facade: FacadeFactory) -> None:
    import uuid

    from lockgate.events.transports import open_transport
    url = f"redis://127.0.0.1:6379/0/lgfacade{uuid.uuid4().hex[:8]}:out"
    sink = open_transport(url, group="test")
    await sink.open()
    try:
        rule = dict(GIST_TO_FIELD, name="ev", to={"event": url})
        base = await facade([rule])
        status, _, body = await _get(base + "/tickets/4")
        assert status == 200 and "ai" not in orjson.loads(body)
        got = []
        for _ in range(50):
            got = await sink.fetch(1, 0.2)
            if got:
                break
        assert got, "no event published"
        event = got[0].data
        assert event["output"] == TICKET_TEXT and event["rule"] == "ev"
        assert event["path"] == "/tickets/4" and event["status"] == 200
    finally:
        await sink.drop()
        await sink.aclose()


async def test_job_destination(facade: FacadeFactory) -> None:
    rule = dict(GIST_TO_FIELD, name="jb", to={"job": True})
    base = await facade([rule])
    status, _, _ = await _get(base + "/tickets/5", headers={"x-request-id": "req-5"})
    assert status == 200
    rt = runtime_of(base)
    assert rt.jobs is not None
    for _ in range(50):
        stats = await rt.jobs.queue.stats()
        if stats.depth:
            break
        await asyncio.sleep(0.05)
    assert stats.depth == 1
