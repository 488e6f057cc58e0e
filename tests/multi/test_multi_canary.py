"""Canary rollback across two gateways sharing PostgreSQL and Redis, against the stand-in upstream.

The model ``chat`` has a stable deployment and a canary whose upstream answers 500.
The canary has weight 1 and the stable one weight 0, so every call tries the canary
first and falls back to the stable deployment: each call adds exactly one canary
failure and one stable success, which makes the counts (and so the test) exact.

- 6 calls through gateway A: A's window holds 6 canary calls, below ``min_samples``
  (10): no rollback;
- 6 calls through gateway B: the shared window holds 12: the canary is rolled back,
  by exactly one gateway (one audit row, one signed ``alert.raised`` webhook of kind
  ``canary``), and
  both gateways stop sending it traffic (``/admin/controls`` shows ``rolled_back``);
- ``POST /admin/controls/canary`` on A restores it on both.
"""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis
from typer.testing import CliRunner

from lockgate.cli.controls_commands import controls_app
from lockgate.jobs.webhooks import SIGNATURE_HEADER, verify
from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.gateway.conftest import MASTER, ServerThread
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "whsec-canary-test-0123456789"
CHECK_S = 0.2


class Hooks:
    """A webhook receiver on loopback: records every POST."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                hooks.received.append(({k.lower(): v for k, v in self.headers.items()},
                                       self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _config(upstream: str, db: str, prefix: str, home: Path, hook_url: str) -> str:
    return f"""
master_key: {MASTER}
home: {home}
database_url: {db}
audit: {{flush_interval_ms: 50}}
redis_url: {REDIS_URL}
redis_prefix: "{prefix}"
breaker: null   # the circuit breaker would also stop the failing canary: test the rollback alone
jobs:
  webhook_secret: {SECRET}
  alerts: {{url: "{hook_url}"}}
models:
  - {{name: chat, provider: openai, base_url: "{upstream}/v1", model: stub-stable,
      id: chat-stable, weight: 0, max_retries: 0}}
  - {{name: chat, provider: openai, base_url: "{upstream}/v1", model: error-500,
      id: chat-canary, weight: 1, max_retries: 0,
      canary: {{max_error_rate_margin: 0.2, window_seconds: 120, min_samples: 10,
                check_seconds: {CHECK_S}}}}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prefix = "lgt-canary-" + uuid.uuid4().hex[:8] + ":"
    base = tmp_path_factory.mktemp("canary")
    hooks = Hooks()
    servers: list[ServerThread] = []
    with run_stub_in_thread() as stub:
        db_iter = fresh_database("lg_canary")
        db = next(db_iter)
        try:
            urls = []
            for i in range(2):
                home = base / f"home{i}"
                text = _config(stub.base_url, db, prefix, home, hooks.url)
                (base / f"gw{i}.yaml").write_text(text)
                server = ServerThread(text, home)
                servers.append(server)
                urls.append(server.start())
            yield {"a": urls[0], "b": urls[1], "stub": stub, "db": db, "hooks": hooks,
                   "config": base / "gw0.yaml"}
        finally:
            for s in servers:
                s.stop()
            hooks.close()
            r = redis.Redis.from_url(REDIS_URL)
            keys = list(r.scan_iter(match=prefix + "*", count=1000))
            if keys:
                r.delete(*keys)
            r.close()
            for _ in db_iter:  # drop the database
                pass


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=10)


def canary_view(url: str) -> dict[str, Any]:
    with admin(url) as c:
        r = c.get("/admin/controls")
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()["canary"]["canaries"]["chat-canary"]
        return view


def chat(url: str, key: str, n: int) -> list[str]:
    """n calls; the deployment that answered each."""
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        for i in range(n):
            r = c.post("/v1/chat/completions", json={
                "model": "chat",
                "messages": [{"role": "user", "content": f"hello {i} {uuid.uuid4().hex}"}]})
            assert r.status_code == 200, r.text
            out.append(r.headers["x-lockgate-deployment"])
    assert "cache" not in out
    return out


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def canary_calls(stub: Any) -> int:
    return int(stub.stats()["by_model"].get("error-500", 0))


def audit_rows(db: str, kind: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as conn:
        return list(conn.execute(
            "SELECT deployment, source, response_body FROM usage_records WHERE kind = %s",
            (kind,)).fetchall())


def test_failing_canary_rolls_back_on_both_gateways(world: dict[str, Any]) -> None:
    a, b, stub, db, hooks = world["a"], world["b"], world["stub"], world["db"], world["hooks"]
    with admin(a) as c:
        assert c.post("/admin/teams", json={"name": "canary-team"}).status_code in (201, 409)
        r = c.post("/admin/keys", json={"team": "canary-team"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    assert canary_view(a)["state"] == "serving"

    # A alone: 6 canary failures, below min_samples
    assert chat(a, key, 6) == ["chat-stable"] * 6  # the canary failed, the stable answered
    assert canary_calls(stub) == 6
    assert wait_for(lambda: (canary_view(a)["window"] or {}).get("canary", {}).get("calls") == 6)
    time.sleep(CHECK_S * 3)
    assert canary_view(a)["state"] == "serving"
    assert canary_view(b)["state"] == "serving"

    # B adds 6 more: the shared window crosses min_samples
    chat(b, key, 6)
    assert wait_for(lambda: canary_view(a)["state"] == "rolled_back"
                    and canary_view(b)["state"] == "rolled_back")
    view = canary_view(a)
    assert view["rollback"]["canary"]["calls"] >= 10
    assert view["rollback"]["canary"]["error_rate"] == 1.0
    assert view["rollback"]["stable"]["error_rate"] == 0.0

    # no more canary traffic from either gateway
    before = canary_calls(stub)
    chat(a, key, 5)
    chat(b, key, 5)
    assert canary_calls(stub) == before

    # exactly one audit row and one signed alert
    assert wait_for(lambda: len(audit_rows(db, "canary_rollback")) >= 1)
    time.sleep(0.3)
    rows = audit_rows(db, "canary_rollback")
    assert len(rows) == 1
    deployment, source, body = rows[0]
    assert (deployment, source) == ("chat-canary", "control")
    assert orjson.loads(body)["reason"].startswith("error rate")
    assert wait_for(lambda: len(hooks.received) >= 1)
    time.sleep(0.3)
    assert len(hooks.received) == 1
    headers, raw = hooks.received[0]
    assert headers["x-lockgate-event"] == "alert.raised"
    assert verify(SECRET, raw, headers[SIGNATURE_HEADER.lower()])
    alert = orjson.loads(raw)
    assert alert["kind"] == "canary" and alert["subject"] == "chat-canary"
    assert alert["details"]["deployment"] == "chat-canary"

    with admin(a) as c:
        metrics = c.get("/metrics").text
    assert 'lockgate_canary_state{deployment="chat-canary"} 1.0' in metrics

    # the CLI shows it; restoring through A (CLI -> admin API): both gateways use it again
    cli = CliRunner()
    args = ["--gateway", a, "-c", str(world["config"])]
    out = cli.invoke(controls_app, ["canary", *args])
    assert out.exit_code == 0, out.output
    assert "chat-canary" in out.output and "rolled_back" in out.output
    out = cli.invoke(controls_app, ["canary", "--restore", "chat-canary", *args])
    assert out.exit_code == 0, out.output
    assert "serving" in out.output
    assert canary_view(a)["state"] == "serving"
    with admin(a) as c:
        assert c.post("/admin/controls/canary",
                      json={"deployment": "nope"}).status_code == 404
    assert wait_for(lambda: canary_view(b)["state"] == "serving")
    before = canary_calls(stub)
    chat(b, key, 2)
    assert canary_calls(stub) == before + 2
    assert wait_for(lambda: len(audit_rows(db, "canary_restore")) == 1)
