"""Every call is recorded (batched), usage is reported, metrics are exposed."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.gateway.conftest import Gateway


def wait_usage(gw: Gateway, team: str, requests: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    with gw.admin() as c:
        while True:
            rows = c.get("/admin/usage", params={"team": team}).json()["data"]
            if sum(int(r["requests"]) for r in rows) >= requests or time.monotonic() > deadline:
                return list(rows)
            time.sleep(0.1)


def test_usage_and_cost_per_team(gateway: Gateway) -> None:
    team = "audit-team"
    k = gateway.new_key(team=team)
    c = openai.OpenAI(base_url=gateway.v1, api_key=k, max_retries=0)
    for _ in range(3):
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "a b c"}])
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    rows = wait_usage(gateway, team, 4)
    fast = [r for r in rows if r["model"] == "fast"]
    assert sum(int(r["requests"]) for r in fast) == 3
    assert sum(int(r["prompt_tokens"]) for r in fast) > 0
    assert sum(float(r["cost"]) for r in fast) > 0
    missing = [r for r in rows if r["model"] == "missing"]
    assert sum(int(r["errors"]) for r in missing) == 1


def test_metrics_exposed(gateway: Gateway, key: str) -> None:
    openai.OpenAI(base_url=gateway.v1, api_key=key).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "m"}])
    text = httpx.get(gateway.url + "/metrics").text
    assert 'lockgate_requests_total{kind="chat",model="fast",status="200"}' in text
    assert "lockgate_overhead_seconds_bucket" in text
    assert 'lockgate_tokens_total{direction="prompt",model="fast"}' in text
    assert "lockgate_audit_pending " in text
    assert "lockgate_audit_backlog_seconds " in text
    assert 'lockgate_audit{stat="spilled"} 0.0' in text
    assert 'lockgate_audit{stat="lost"} 0.0' in text

    def written() -> float:
        lines = httpx.get(gateway.url + "/metrics").text.splitlines()
        line = next(ln for ln in lines if ln.startswith('lockgate_audit{stat="written"}'))
        return float(line.split()[-1])

    deadline = time.monotonic() + 15
    while written() < 1 and time.monotonic() < deadline:  # the writer flushes in the background
        time.sleep(0.1)
    assert written() >= 1


def test_health(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-request-id"].startswith("req_")


def test_logs_are_json_lines_with_the_request_id() -> None:
    import io
    import json

    import structlog

    from lockgate.observability.logging import configure_logging, request_context, reset_logging

    buf = io.StringIO()
    configure_logging(stream=buf, force=True)
    try:
        with request_context(request_id="req_test123"):
            structlog.get_logger("lockgate.test").info("hello", model="fast")
    finally:
        reset_logging()
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert line["event"] == "hello" and line["request_id"] == "req_test123"
    assert line["model"] == "fast" and line["level"] == "info"
