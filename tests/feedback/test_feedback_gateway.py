"""Through a real gateway (uvicorn) on SQLite and PostgreSQL, with the openai SDK against
the stand-in upstream: POST /v1/feedback, /v1/feedback/quality, /v1/alerts, /metrics and
the ``lockgate feedback`` / ``lockgate alerts`` CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from typer.testing import CliRunner

from lockgate.alerts import AlertCenter
from lockgate.cli.app import app as cli_app
from lockgate.store import Store
from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.gateway.conftest import MASTER, Gateway, ServerThread, gateway_config
from tests.support.postgres import fresh_database


@dataclass
class Setup:
    gw: Gateway
    config_path: Path
    key_a: str
    key_a2: str
    key_b: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("fbhome")
    pg = None
    if request.param == "sqlite":
        db = f"sqlite:///{home / 'lockgate.db'}"
    else:
        pg = fresh_database("lg_fbgw")
        db = next(pg)
    with run_stub_in_thread() as stub:
        extra = ("log_bodies: true\nalerts: {gauge_interval: 0.1}\n"
                 "jobs:\n  tasks:\n    - {name: summarize, model: fast, prompt: '{{input}}'}\n")
        text = gateway_config(stub.base_url, home, db, extra=extra)
        config_path = home / "lockgate.yaml"
        config_path.write_text(text)
        server = ServerThread(text, home)
        url = server.start()
        try:
            gw = Gateway(url, MASTER, text, home, db)
            yield Setup(gw, config_path, gw.new_key("team-a"), gw.new_key("team-a"),
                        gw.new_key("team-b"))
        finally:
            server.stop()
    if pg is not None:
        for _ in pg:
            pass


def call(setup: Setup, key: str) -> str:
    client = OpenAI(base_url=setup.gw.v1, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "Refund order 7?"}],
        metadata={"task": "refunds"},
    )
    assert raw.parse().choices[0].message.content
    return str(raw.headers["x-request-id"])


def post(setup: Setup, key: str, body: object) -> httpx.Response:
    return httpx.post(setup.gw.v1 + "/feedback", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_feedback_from_the_caller_its_team_and_admin_only(setup: Setup) -> None:
    rid = call(setup, setup.key_a)
    r = post(setup, setup.key_a, {"request_id": rid, "thumbs": "down", "comment": "wrong"})
    assert r.status_code == 201, r.text  # right after the call (the audit row is flushed)
    fb = r.json()
    assert (fb["task"], fb["model"], fb["kind"], fb["thumbs"]) == ("refunds", "fast",
                                                                     "feedback", "down")
    assert fb["deployment"] and fb["request_id"] == rid
    r = post(setup, setup.key_a2, {"request_id": rid, "outcome": "refund_granted"})
    assert r.status_code == 201 and r.json()["kind"] == "outcome"
    r = post(setup, MASTER, {"request_id": rid, "corrected_output": {"refund": True}})
    assert r.status_code == 201
    other = post(setup, setup.key_b, {"request_id": rid, "thumbs": "up"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    unknown = post(setup, setup.key_a, {"request_id": "req_nope", "thumbs": "up"})
    assert unknown.status_code == 404
    assert post(setup, setup.key_a, {"job_id": "job_nope", "thumbs": "up"}).status_code == 404
    assert post(setup, setup.key_a, {"review_id": "rev_nope", "thumbs": "up"}).status_code == 404
    assert post(setup, "lg-wrong", {"request_id": rid, "thumbs": "up"}).status_code == 401


def test_feedback_on_a_job(setup: Setup) -> None:
    r = httpx.post(setup.gw.v1 + "/jobs", json={"task": "summarize", "input": "long text"},
                   headers={"Authorization": f"Bearer {setup.key_a}"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    fb = post(setup, setup.key_a2, {"job_id": job_id, "score": 2, "comment": "too long"})
    assert fb.status_code == 201, fb.text
    assert (fb.json()["job_id"], fb.json()["task"], fb.json()["score"]) == (job_id, "summarize",
                                                                            2.0)
    assert post(setup, setup.key_b, {"job_id": job_id, "score": 5}).status_code == 404


@pytest.mark.parametrize("body", [
    {"thumbs": "up"},
    {"request_id": "x", "job_id": "y", "thumbs": "up"},
    {"request_id": 5, "thumbs": "up"},
    {"request_id": "req_x"},
    {"request_id": "req_x", "thumbs": "up", "colour": "red"},
    {"request_id": "REAL", "thumbs": "meh"},
    {"request_id": "REAL", "score": "high"},
    {"request_id": "REAL", "outcome": "has spaces"},
    {"request_id": "REAL", "comment": ["not", "text"]},
    {"request_id": "REAL", "thumbs": "up", "refused": "no"},
    {"request_id": "REAL", "thumbs": "up", "task": ""},
])
def test_bad_shapes_are_400_never_500(setup: Setup, body: dict[str, object]) -> None:
    if body.get("request_id") == "REAL":
        body = {**body, "request_id": call(setup, setup.key_a)}
    r = post(setup, setup.key_a, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    raw = httpx.post(setup.gw.v1 + "/feedback", content=b"[1,2",
                     headers={"Authorization": f"Bearer {setup.key_a}"})
    assert raw.status_code == 400


def test_quality_endpoint_and_cli(setup: Setup) -> None:
    for thumbs in ("up", "down"):
        rid = call(setup, setup.key_a)
        assert post(setup, setup.key_a, {"request_id": rid, "thumbs": thumbs}).status_code == 201
    with setup.gw.admin() as admin:
        r = admin.get("/v1/feedback/quality", params={"task": "refunds"})
    assert r.status_code == 200
    [row] = r.json()["data"]
    assert row["task"] == "refunds" and row["thumbs"] >= 2 and row["thumbs_down"] >= 1
    assert row["thumbs_down_rate"] == round(row["thumbs_down"] / row["thumbs"], 6)
    denied = httpx.get(setup.gw.v1 + "/feedback/quality",
                       headers={"Authorization": f"Bearer {setup.key_a}"})
    assert denied.status_code == 403
    out = CliRunner().invoke(cli_app, ["feedback", "quality", "--json", "--task", "refunds",
                                       "-c", str(setup.config_path)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["thumbs"] == row["thumbs"]
    train = setup.gw.home / "train.jsonl"
    out = CliRunner().invoke(cli_app, ["feedback", "export", "--out", str(train),
                                       "-c", str(setup.config_path)])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in train.read_text().splitlines()]
    assert lines and all(x["messages"][0] == {"role": "user", "content": "Refund order 7?"}
                         for x in lines)


def test_alerts_api_metrics_and_cli(setup: Setup) -> None:
    async def raise_one() -> None:
        store = await Store.open(setup.gw.database_url)
        try:
            await AlertCenter(store.engine).raise_once("drift", "cost_per_call|task=-|"
                                                       "deployment=x", "cost up", {"v": 1})
        finally:
            await store.close()

    asyncio.run(raise_one())  # another process's incident, in the shared store
    with setup.gw.admin() as admin:
        listed = admin.get("/v1/alerts", params={"state": "open", "kind": "drift"}).json()
        [alert] = listed["data"]
        assert alert["subject"] == "cost_per_call|task=-|deployment=x"
        assert admin.get("/v1/alerts", params={"state": "nope"}).status_code == 400
        assert admin.get("/v1/alerts/abc").status_code == 404
        assert admin.post("/v1/alerts/999999/ack").status_code == 404
        r = admin.post(f"/v1/alerts/{alert['id']}/ack", json={"by": "ops", "colour": 1})
        assert r.status_code == 400
        r = admin.post(f"/v1/alerts/{alert['id']}/ack", json={"by": "ops"})
        assert r.status_code == 200 and r.json()["state"] == "acked"
    key = httpx.get(setup.gw.v1 + "/alerts", headers={"Authorization": f"Bearer {setup.key_a}"})
    assert key.status_code == 403
    out = CliRunner().invoke(cli_app, ["alerts", "list", "--json", "-c", str(setup.config_path)])
    assert out.exit_code == 0, out.output
    assert [a["state"] for a in json.loads(out.output)] == ["acked"]
    out = CliRunner().invoke(cli_app, ["alerts", "ack", str(alert["id"]), "--resolve",
                                       "-c", str(setup.config_path)])
    assert out.exit_code == 0 and "resolved" in out.output
    out = CliRunner().invoke(cli_app, ["alerts", "ack", "424242", "-c", str(setup.config_path)])
    assert out.exit_code == 1
    # a delivery by this gateway shows on its /metrics
    async def raise_here() -> None:
        store = await Store.open(setup.gw.database_url)
        try:
            assert await AlertCenter(store.engine).raise_once("queue", "x:depth", "deep")
        finally:
            await store.close()

    asyncio.run(raise_here())  # raised (and counted) elsewhere: the gauge shows it here
    deadline = time.monotonic() + 10
    line = 'lockgate_alerts_open{kind="queue",state="open"} 1.0'
    while line not in (text := httpx.get(setup.gw.url + "/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert 'lockgate_alerts_open{kind="drift",state="acked"}' not in text or \
        'lockgate_alerts_open{kind="drift",state="acked"} 0.0' in text
