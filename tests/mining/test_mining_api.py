"""``/v1/mining`` over HTTP and ``lockgate mine`` on the command line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.gateway.conftest import Gateway

DATA = Path(__file__).parent / "data"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_upload_analyze_svg_and_cited_summary(mining_gateway: Gateway) -> None:
    gw = mining_gateway
    with httpx.Client(base_url=gw.url, headers=_auth(gw.master), timeout=60) as c:
        body = (DATA / "hand_log.xes").read_bytes()
        r = c.put("/v1/mining/logs/hand?format=xes", content=body)
        assert r.status_code == 201, r.text
        assert (r.json()["events"], r.json()["cases"]) == (9, 3)
        assert c.put("/v1/mining/logs/hand?format=xes", content=body).status_code == 409
        assert [x["name"] for x in c.get("/v1/mining/logs").json()["data"]] == ["hand"]
        r = c.post("/v1/mining/analyze", json={"log": "hand", "reference_name": "abc",
                                               "svg": True, "summary": True})
        assert r.status_code == 200, r.text
        doc = r.json()
    assert doc["overview"]["cases"] == 3
    assert doc["conformance"]["fitting_cases"] == 1
    assert "<svg" in doc["svg"] and ">A<" in doc["svg"]
    summary = doc["summary"]
    assert summary["model"] == "fast"
    ids = {f["id"] for f in summary["facts"]}
    assert summary["cited"] and set(summary["cited"]) <= ids
    # the summary is a model call through the pipeline: audited with source "mining"
    path = gw.database_url.removeprefix("sqlite:///")
    deadline = time.monotonic() + 10
    rows: list[tuple[str]] = []
    while time.monotonic() < deadline and not rows:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT model FROM usage_records WHERE source = 'mining'"
                              ).fetchall()
        time.sleep(0.1)
    assert rows == [("fast",)]


def test_lockgate_own_calls_are_mined(mining_gateway: Gateway) -> None:
    gw = mining_gateway
    key = gw.new_key()
    client = OpenAI(base_url=gw.v1, api_key=key)
    for _ in range(3):
        client.chat.completions.create(model="fast", messages=[{"role": "user",
                                                                "content": "hi"}])
    time.sleep(0.5)  # the audit writer flushes every 50 ms
    with httpx.Client(base_url=gw.url, headers=_auth(gw.master), timeout=60) as c:
        r = c.post("/v1/mining/analyze", json={"sources": ["calls"], "since": "1h"})
    assert r.status_code == 200, r.text
    acts = {a["activity"]: a["count"] for a in r.json()["activities"]}
    assert acts.get("call http/chat", 0) >= 3


@pytest.mark.parametrize("method, path, kwargs, status, code", [
    ("POST", "/v1/mining/analyze", {"json": {"log": "missing"}}, 404, "log_not_found"),
    ("POST", "/v1/mining/analyze", {"json": {"sources": ["nope"]}}, 400, "invalid_log"),
    ("POST", "/v1/mining/analyze", {"json": {"reference_name": "zzz"}}, 400, "invalid_log"),
    ("POST", "/v1/mining/analyze", {"json": {"bogus": 1}}, 400, "invalid_value"),
    ("POST", "/v1/mining/analyze", {"json": {"since": "yesterday"}}, 400, "invalid_value"),
    ("PUT", "/v1/mining/logs/x?format=pdf", {"content": b"a"}, 400, "invalid_value"),
    ("PUT", "/v1/mining/logs/x", {"content": b"case,activity\n1,a\n"}, 400, "invalid_log"),
    ("PUT", "/v1/mining/logs/x?format=xes", {"content": b"<log"}, 400, "invalid_log"),
    ("PUT", "/v1/mining/logs/x", {"content": b""}, 400, "invalid_log"),
    ("DELETE", "/v1/mining/logs/never", {}, 404, "log_not_found"),
])
def test_bad_requests_are_precise_4xx(mining_gateway: Gateway, method: str, path: str,
                                      kwargs: dict, status: int, code: str) -> None:
    with httpx.Client(base_url=mining_gateway.url, headers=_auth(mining_gateway.master),
                      timeout=30) as c:
        r = c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_team_keys_may_not_mine(mining_gateway: Gateway) -> None:
    key = mining_gateway.new_key()
    with httpx.Client(base_url=mining_gateway.url, headers=_auth(key), timeout=30) as c:
        assert c.post("/v1/mining/analyze", json={}).status_code == 403
        assert c.get("/v1/mining/logs").status_code == 403


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKGATE_HOME": str(home)}
    env.pop("LOCKGATE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "lockgate", "mine", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_mines_a_file_to_json_and_svg(tmp_path: Path) -> None:
    svg = tmp_path / "map.svg"
    proc = _cli("--file", str(DATA / "running_example.csv"), "--json", "-", "--svg", str(svg),
                "--reference", "register request,check ticket,examine casually,decide,"
                "pay compensation", "--save", "running", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["overview"]["events"] == 42 and doc["conformance"]["fitting_cases"] == 1
    assert "<svg" in svg.read_text()
    listed = _cli("--list", home=tmp_path)
    assert json.loads(listed.stdout)[0]["name"] == "running"
    again = _cli("--log", "running", "--summary", home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "summary" in again.stdout and "[F1]" in again.stdout


@pytest.mark.parametrize("args, needle", [
    (("--file", "/nonexistent.csv"), "cannot read"),
    (("--log", "nope"), "no event log named"),
    (("--since", "yesterday"), "--since"),
    (("--source", "nope"), "unknown event source"),
])
def test_cli_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    proc = _cli(*args, home=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
