"""``cdc:`` consumers in the config run inside ``lockgate worker`` (a real subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lockgate.cdc import install_capture, open_database
from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.cdc.conftest import UserDb, config_text


async def _install(url: str) -> None:
    db = open_database(url)
    await db.open()
    try:
        await install_capture(db, "tickets", "tickets", ["body"])
    finally:
        await db.aclose()


def test_worker_runs_configured_cdc_consumers(userdb: UserDb, tmp_path: Path) -> None:
    asyncio.run(_install(userdb.url))
    with run_stub_in_thread() as stub:
        doc = yaml.safe_load(config_text(stub, tmp_path / "home"))
        doc["cdc"] = [{"capture": "tickets", "dsn": "env:TEST_CRM_DSN", "task": "gist",
                       "select": "text", "write_column": "summary", "poll": 0.05}]
        cfg = tmp_path / "lockgate.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        env = {**os.environ, "TEST_CRM_DSN": userdb.url,
               "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        proc = subprocess.Popen([sys.executable, "-m", "lockgate", "worker", "-c", str(cfg)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for i in range(1, 4):
                userdb.q("INSERT INTO tickets (id, body) VALUES (%s, %s)", (i, f"text {i}"))
            deadline = time.monotonic() + 60
            while userdb.q("SELECT count(*) FROM tickets WHERE summary IS NOT NULL")[0][0] < 3:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                assert time.monotonic() < deadline, "the worker applied nothing"
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert userdb.q("SELECT id, summary FROM tickets ORDER BY id") == [
        (i, f"text {i}") for i in range(1, 4)]
