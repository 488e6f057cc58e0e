"""The ``facade`` event source: real traffic through a facade (pass-through, a ruled
request, a WebSocket tunnel) lands in the call log off the request path and is mined;
the expected counts are worked out by hand from the requests below."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import sqlalchemy as sa
import yaml
from websockets.asyncio.client import connect

from lockgate.facade import Facades
from lockgate.mining.facade_source import calls_of
from lockgate.runtime import Runtime
from lockgate.settings import parse_config
from lockgate.store.tables import facade_calls
from lockgate.testing.stub_upstream import StubUpstream, run_stub_in_thread
from tests.facade.conftest import TASKS
from tests.facade.legacy import free_port, start_legacy
from tests.gateway.conftest import MASTER, ServerThread, gateway_config

RULE = {"name": "ticket-summary", "match": {"methods": ["GET"], "path": "/tickets/{id}"},
        "task": "gist", "input": "description", "select": "text",
        "to": {"response_field": "ai.summary"},
        "budget_ms": 5000}


@pytest.fixture
async def legacy() -> AsyncIterator[str]:
    runner, url = await start_legacy()
    yield url
    await runner.cleanup()


@pytest.fixture
async def model() -> AsyncIterator[StubUpstream]:
    s = StubUpstream()
    await s.start()
    yield s
    await s.stop()


async def _facade(db_url: str, legacy: str, model: StubUpstream, home: Path,
                  **extra: Any) -> tuple[Runtime, Facades, str]:
    port = free_port()
    doc = yaml.safe_load(TASKS)
    doc.update({
        "home": str(home), "database_url": db_url, "audit": {"flush_interval_ms": 50},
        "models": [{"name": "local", "provider": "openai", "base_url": model.openai_base,
                    "model": "stub-1", "max_retries": 0}],
        "facades": [{"name": "crm", "port": port, "upstream": legacy, "rules": [RULE],
                     **extra}],
    })
    rt = await Runtime.start(parse_config(yaml.safe_dump(doc)), warm_up=False)
    fac = await Facades.start(rt)
    return rt, fac, f"http://127.0.0.1:{port}"


async def _traffic(base: str) -> None:
    """order-1: ticket (ruled), echo, 404 | order-2: ticket (ruled), echo, WebSocket |
    no header: GET /echo/42 twice. The two orders interleave."""
    one, two = {"X-Correlation-Id": "order-1"}, {"X-Correlation-Id": "order-2"}
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/tickets/7", headers=one) as r:
            doc = await r.json()
            assert doc["ai"]["summary"].startswith("The printer")  # the rule applied
        async with s.get(base + "/tickets/8", headers=two) as r:
            assert r.status == 200
        async with s.post(base + "/echo", json={"a": 1}, headers=one) as r:
            assert r.status == 200
        async with s.post(base + "/echo", json={"b": 2}, headers=two) as r:
            assert r.status == 200
        async with s.get(base + "/status/404", headers=one) as r:
            assert r.status == 404
        async with connect("ws://" + base.removeprefix("http://") + "/ws",
                           additional_headers=two) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        for _ in range(2):
            async with s.get(base + "/echo/42") as r:
                assert r.status == 200


async def _logged(rt: Runtime, n: int) -> list[dict[str, Any]]:
    """The logged calls once ``n`` are in (the facade hands a batch over once a second; the
    WebSocket's call is logged when it closed)."""
    rows: list[dict[str, Any]] = []
    for _ in range(400):
        await rt.audit.flush()
        async with rt.store.engine.connect() as conn:
            batches = list(await conn.execute(sa.select(facade_calls.c.calls).order_by(
                facade_calls.c.id)))
        rows = [c for b in batches for c in calls_of(b.calls)]
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.025)
    raise AssertionError(f"{len(rows)} facade calls logged, expected {n}")


EXPECTED_EDGES = {
    ("GET /tickets/{id} [ticket-summary]", "POST /echo"): 2,   # order-1, order-2
    ("POST /echo", "GET /status/{id} failed"): 1,              # order-1: the 404
    ("POST /echo", "GET /ws (websocket)"): 1,                  # order-2
    ("GET /echo/{id}", "GET /echo/{id}"): 1,                   # no header: client + path
}


def _edges(doc: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(e["source"], e["target"]): e["count"] for e in doc["dfg"]["edges"]}


async def test_facade_calls_mined_with_hand_counted_dfg(db_url: str, legacy: str,
                                                        model: StubUpstream,
                                                        tmp_path: Path) -> None:
    rt, fac, base = await _facade(db_url, legacy, model, tmp_path / "home")
    try:
        await _traffic(base)
        rows = await _logged(rt, 8)
        assert len(rows) == 8
        ws = next(r for r in rows if r["path"] == "/ws")
        assert (ws["status"], ws["upgraded"], ws["case_id"]) == (101, True, "order-2")
        ticket = next(r for r in rows if r["path"] == "/tickets/7")
        assert (ticket["rules"], ticket["case_id"], ticket["client"]) == (
            "ticket-summary", "order-1", "127.0.0.1")
        assert {r["case_id"] for r in rows if r["path"] == "/echo/42"} == {"127.0.0.1 /echo/42"}
        assert all(r["started_at"] <= r["finished_at"] for r in rows)

        assert rt.mining is not None
        ev, label = await rt.mining.event_log(sources=["facade"])
        doc = (await rt.mining.analyze(ev, label)).to_dict()
        assert doc["overview"]["cases"] == 3 and doc["overview"]["events"] == 8
        assert _edges(doc) == EXPECTED_EDGES
        assert doc["dfg"]["start"] == {"GET /tickets/{id} [ticket-summary]": 2,
                                       "GET /echo/{id}": 1}
        assert doc["dfg"]["end"] == {"GET /status/{id} failed": 1, "GET /ws (websocket)": 1,
                                     "GET /echo/{id}": 1}
        upstream = legacy.removeprefix("http://")
        assert {e.resource for e in ev.events()} == {upstream}
        rework = {r["activity"]: r for r in doc["rework"]}
        assert rework["GET /echo/{id}"]["cases"] == 1  # the repeated call is a rework loop
    finally:
        await fac.aclose()
        await rt.aclose()


async def test_call_log_can_be_switched_off(db_url: str, legacy: str, model: StubUpstream,
                                            tmp_path: Path) -> None:
    rt, fac, base = await _facade(db_url, legacy, model, tmp_path / "home", log_calls=False)
    try:
        async with aiohttp.ClientSession() as s, s.get(base + "/echo/1") as r:
            assert r.status == 200
        fac.servers[0].front.close()  # would hand over the waiting calls, if any
        await rt.audit.flush()
        async with rt.store.engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(
                facade_calls))).scalar() == 0
    finally:
        await fac.aclose()
        await rt.aclose()


async def test_served_facade_mined_over_http_and_cli(legacy: str, tmp_path: Path) -> None:
    """``lockgate serve`` with a facade: traffic, then ``/v1/mining/analyze`` and
    ``lockgate mine --source facade`` read the same call log."""
    home = tmp_path / "gw"
    home.mkdir()
    db = f"sqlite:///{home / 'lockgate.db'}"
    port = free_port()
    extra = yaml.safe_dump({"facades": [{"name": "crm", "port": port, "upstream": legacy}]})
    base = f"http://127.0.0.1:{port}"
    with run_stub_in_thread() as stub:
        server = ServerThread(gateway_config(stub.base_url, home, db, extra), home)
        url = server.start()
        try:
            one = {"X-Correlation-Id": "o1"}
            async with aiohttp.ClientSession() as s:
                for path in ("/tickets/1", "/echo", "/status/500"):
                    async with s.get(base + path, headers=one) as r:
                        await r.read()
            body = {"sources": ["facade"]}
            async with httpx.AsyncClient(base_url=url, timeout=30, headers={
                    "Authorization": f"Bearer {MASTER}"}) as c:
                for _ in range(400):  # written within about a second (the call log's batch)
                    resp = await c.post("/v1/mining/analyze", json=body)
                    if resp.status_code == 200 and resp.json()["overview"]["events"] == 3:
                        break
                    await asyncio.sleep(0.025)
                assert resp.status_code == 200, resp.text
                unknown = await c.post("/v1/mining/analyze", json={"sources": ["facades"]})
            doc = resp.json()
            assert _edges(doc) == {("GET /tickets/{id}", "GET /echo"): 1,
                                   ("GET /echo", "GET /status/{id} failed"): 1}
            assert unknown.status_code == 400 and "unknown event source" in unknown.text
        finally:
            server.stop()
    env = {**os.environ, "LOCKGATE_HOME": str(tmp_path / "cli"), "LOCKGATE_DATABASE_URL": db}
    env.pop("LOCKGATE_CONFIG", None)
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "lockgate", "mine", "--source", "facade",
                         "--json", "-"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _edges(json.loads(proc.stdout)) == {("GET /tickets/{id}", "GET /echo"): 1,
                                               ("GET /echo", "GET /status/{id} failed"): 1}
