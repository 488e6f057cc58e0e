"""A consumer killed with SIGKILL mid-work: a restarted one finishes, every effect once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lockgate.cdc import install_capture, open_database
from lockgate.testing.stub_upstream import StubUpstream, run_stub_in_thread
from tests.cdc.conftest import UserDb, config_text

ROWS = 40


def _cmd(userdb: UserDb, cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lockgate", "cdc", "run", "--dsn", userdb.url,
            "--capture", "tickets", "--task", "gist", "--select", "text",
            "--side-table", "ai_kill", "--lease", "1.5", "--poll", "0.05",
            "--concurrency", "4", "-c", str(cfg), *extra]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


async def _install(url: str) -> None:
    db = open_database(url)
    await db.open()
    try:
        await install_capture(db, "tickets", "tickets", ["body"])
    finally:
        await db.aclose()


def test_sigkill_then_restart_applies_each_change_once(userdb: UserDb, tmp_path: Path) -> None:
    # the model stand-in on its own thread: this test blocks while the consumer runs
    with run_stub_in_thread() as stub:
        _scenario(userdb, stub, tmp_path)


def _scenario(userdb: UserDb, stub: StubUpstream, tmp_path: Path) -> None:
    asyncio.run(_install(userdb.url))
    # the side table WITHOUT a unique change id: a double write-back would show as 2 rows
    if userdb.kind == "postgres":
        userdb.q("CREATE TABLE ai_kill (seq bigserial PRIMARY KEY, change_id text, capture "
                 "text, row_key text, op text, result jsonb, created_at timestamptz DEFAULT "
                 "now())")
    else:
        userdb.q("CREATE TABLE ai_kill (seq BIGINT AUTO_INCREMENT PRIMARY KEY, change_id "
                 "VARCHAR(160), capture VARCHAR(64), row_key VARCHAR(512), op VARCHAR(8), "
                 "result LONGTEXT, created_at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))")
    for i in range(ROWS):
        userdb.q("INSERT INTO tickets (id, body) VALUES (%s, %s)", (i, f"body {i}"))
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(config_text(stub, tmp_path / "home", model="slow:150"))

    proc = subprocess.Popen(_cmd(userdb, cfg), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        claimed = f"SELECT count(*) FROM {userdb.outbox} WHERE attempts > 0"
        while userdb.q("SELECT count(*) FROM ai_kill")[0][0] < 8 or not userdb.q(claimed)[0][0]:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, "the consumer applied nothing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = userdb.q("SELECT count(*) FROM ai_kill")[0][0]
    in_flight = userdb.q(f"SELECT count(*) FROM {userdb.outbox} WHERE attempts > 0")[0][0]
    assert done < ROWS and in_flight > 0  # killed with claimed, unfinished changes

    time.sleep(2.0)  # their leases run out
    out = subprocess.run(_cmd(userdb, cfg, "--once"), env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert userdb.q(f"SELECT count(*) FROM {userdb.outbox}")[0][0] == 0
    rows = userdb.q("SELECT change_id, count(*) FROM ai_kill GROUP BY change_id")
    assert len(rows) == ROWS and all(n == 1 for _, n in rows)
    assert userdb.q("SELECT count(DISTINCT row_key) FROM ai_kill")[0][0] == ROWS
