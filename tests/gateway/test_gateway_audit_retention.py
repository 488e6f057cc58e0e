"""`lockgate serve` archives old audit rows on its own (audit.retention.interval_seconds),
reports it on /metrics, and `verify` proves archived + live afterwards."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from starlette.testclient import TestClient

from lockgate.server import create_app
from lockgate.settings import parse_config
from lockgate.store import Store
from lockgate.store.archive import verify_audit
from tests.gateway.conftest import MASTER, gateway_config

RETENTION = """
audit: {flush_interval_ms: 20, retention: {max_rows: 2, interval_seconds: 0.2}}
"""


def archived_on_metrics(c: TestClient) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith('lockgate_audit{stat="archived"}'):
            return float(line.split()[-1])
    return 0.0


def test_the_server_archives_on_its_timer(upstream: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ret.db'}"
    text = gateway_config(upstream, tmp_path, db).replace("audit: {flush_interval_ms: 50}\n", "")
    cfg = parse_config(text + RETENTION)
    with TestClient(create_app(cfg)) as c:
        for i in range(6):
            r = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                       json={"model": "fast", "messages": [{"role": "user", "content": f"{i}"}]})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while archived_on_metrics(c) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert archived_on_metrics(c) >= 4
    assert list((tmp_path / "audit-archive").glob("audit-*.jsonl.gz"))

    async def verify() -> tuple[bool, int, int]:
        store = await Store.open(db)
        try:
            async with store.engine.connect() as conn:
                v = await verify_audit(conn, tmp_path / "audit-archive")
            return v.ok, v.archived, v.live
        finally:
            await store.close()

    ok, archived, live = asyncio.run(verify())
    assert ok and archived >= 4 and archived + live >= 6
