"""RAG query cost over HTTP: a 576 KB question is a precise 400 on every path, a long valid
question answers, and work stops when the client goes away (``unless_disconnected``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from lockgate.api.disconnect import CLIENT_CLOSED, ClientGone, unless_disconnected
from lockgate.store import Store
from tests.gateway import test_gateway_rag as rag_module
from tests.gateway.test_gateway_rag import RagEnv

rag_gateway = rag_module.rag_gateway
env = rag_module.env

HUGE = "How many vacation days do employees get? " * 14_000  # ~576 KB


@pytest.mark.parametrize("stream", [False, True])
def test_huge_question_is_400_on_the_rag_api(env: RagEnv, stream: bool) -> None:
    assert len(HUGE.encode()) > 570_000
    with env.client(env.other_key) as c:
        r = c.post(f"/v1/rag/{env.coll}/query", json={"question": HUGE, "stream": stream},
                   timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "question_too_long" and err["param"] == "question"
    assert "8192 bytes" in err["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_huge_question_is_400_through_the_rag_model(env: RagEnv, stream: bool) -> None:
    with env.client(env.other_key) as c:
        r = c.post("/v1/chat/completions", timeout=10, json={
            "model": f"rag/{env.coll}", "stream": stream,
            "messages": [{"role": "user", "content": HUGE}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "question_too_long"


def test_huge_question_is_400_in_anthropic_shape(env: RagEnv) -> None:
    with env.client(env.other_key) as c:
        r = c.post("/v1/messages", timeout=10, json={
            "model": f"rag/{env.coll}", "max_tokens": 50,
            "messages": [{"role": "user", "content": HUGE}]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "error" and "too long" in body["error"]["message"]


def test_long_valid_question_answers(env: RagEnv) -> None:
    filler = " ".join(f"term{i}q" for i in range(200))
    question = ("How many vacation days do employees get per year? " * 80 + filler)[:8000]
    r = env.query(env.other_key, question)
    assert r.status_code == 200, r.text
    assert any("vacation" in p["text"].lower() for p in r.json()["passages"])


# ---------------------------------------------------------------- client disconnect


def _request(disconnect_after: float | None) -> Request:
    async def receive() -> dict[str, Any]:
        if disconnect_after is None:
            await asyncio.Event().wait()  # never
        await asyncio.sleep(disconnect_after or 0)
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def test_work_is_cancelled_when_the_client_leaves() -> None:
    stages: list[str] = []

    async def work() -> str:
        for i in range(100):
            stages.append(f"stage{i}")
            await asyncio.sleep(0.02)
        return "done"

    with pytest.raises(ClientGone) as exc:
        await unless_disconnected(_request(0.05), work())
    assert exc.value.status == CLIENT_CLOSED
    n = len(stages)
    assert 1 <= n < 100
    await asyncio.sleep(0.1)
    assert len(stages) == n  # nothing ran after the cancel


async def test_work_finishes_when_the_client_stays() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await unless_disconnected(_request(None), work()) == "done"

    async def fails() -> str:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        await unless_disconnected(_request(None), fails())


def _rag_rows(env: RagEnv) -> list[tuple[int, float]]:
    async def rows() -> list[tuple[int, float]]:
        store = await Store.open(env.gw.database_url)
        try:
            found = await store.recent_usage(500, model=f"rag/{env.coll}")
            return [(r.status, r.latency_ms) for r in found]
        finally:
            await store.close()

    return asyncio.run(rows())


def test_client_gone_before_the_stream_starts_stops_the_work(env: RagEnv, upstream: str) -> None:
    """A streamed ``rag/*`` call whose client leaves during retrieval / before the first
    chunk: the work is cancelled then (audited 499 long before the slow upstream answers)."""
    before = [s for s, _ in _rag_rows(env)].count(CLIENT_CLOSED)
    httpx.post(upstream + "/_script", json=["slow:6000", "slow:6000"]).raise_for_status()
    try:
        with env.client(env.other_key) as c, pytest.raises(httpx.TimeoutException):
            c.post("/v1/chat/completions", timeout=0.5, json={
                "model": f"rag/{env.coll}", "stream": True,
                "messages": [{"role": "user", "content": "How many vacation days, slowly?"}]})
        deadline = time.monotonic() + 10
        while ([s for s, _ in _rag_rows(env)].count(CLIENT_CLOSED) == before
               and time.monotonic() < deadline):
            time.sleep(0.1)
        gone = [ms for s, ms in _rag_rows(env) if s == CLIENT_CLOSED]
        assert len(gone) == before + 1
        assert gone[0] < 4000  # newest row: stopped when the client left, not at the answer
    finally:
        httpx.post(upstream + "/_reset").raise_for_status()


def _rag_statuses(env: RagEnv) -> list[int]:
    async def rows() -> list[int]:
        store = await Store.open(env.gw.database_url)
        try:
            found = await store.recent_usage(500, model=f"rag/{env.coll}")
            return [r.status for r in found]
        finally:
            await store.close()

    return asyncio.run(rows())


def test_client_gone_mid_answer_is_recorded_as_499(env: RagEnv, upstream: str) -> None:
    """A client that gives up while the RAG answer is being made: the gateway stops the work
    and audits the call as 499 (client disconnected), not as a 200 nobody read."""
    before = _rag_statuses(env).count(CLIENT_CLOSED)
    httpx.post(upstream + "/_script", json=["slow:3000", "slow:3000"]).raise_for_status()
    try:
        with env.client(env.other_key) as c, pytest.raises(httpx.TimeoutException):
            c.post("/v1/chat/completions", timeout=0.5, json={
                "model": f"rag/{env.coll}",
                "messages": [{"role": "user", "content": "How many vacation days, slowly?"}]})
        deadline = time.monotonic() + 10
        while (_rag_statuses(env).count(CLIENT_CLOSED) == before
               and time.monotonic() < deadline):
            time.sleep(0.1)
        assert _rag_statuses(env).count(CLIENT_CLOSED) == before + 1
    finally:
        httpx.post(upstream + "/_reset").raise_for_status()
