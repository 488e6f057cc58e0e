"""``lockgate audit verify|tail|show`` as a user runs them (subprocess, real SQLite file)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from lockgate.pipeline.call import UsageRecord
from lockgate.store import Store


def lockgate(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKGATE_HOME": str(home), "COLUMNS": "200"}
    env.pop("LOCKGATE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def seed(url: str, n: int) -> None:
    async def go() -> None:
        store = await Store.open(url)
        try:
            await store.write_usage([
                UsageRecord(f"req_cli_{i}", time.time(), None, "team_x", "m", "d", "chat",
                            "http", 200, None, 3, 4, 0.01 * i, 5.0, 0.2, False)
                for i in range(n)
            ])
        finally:
            await store.close()

    asyncio.run(go())


def tamper(url: str, sql: str) -> None:
    async def go() -> None:
        store = await Store.open(url)
        try:
            async with store.engine.begin() as conn:
                await conn.execute(sa.text(sql))
        finally:
            await store.close()

    asyncio.run(go())


def test_verify_tail_show_and_tamper(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"database_url: sqlite:///{db}\n")
    seed(f"sqlite:///{db}", 5)

    ok = lockgate("audit", "verify", "-c", str(cfg), home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok, 5 records (head 5:")
    anchor = ok.stdout.split("(head ", 1)[1].split(")", 1)[0]
    assert lockgate("audit", "verify", "-c", str(cfg), "--anchor", anchor,
                    home=tmp_path).returncode == 0

    shown = lockgate("audit", "show", "req_cli_2", "-c", str(cfg), home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["seq"] == 3 and record["link_ok"] is True

    tail = lockgate("audit", "tail", "-n", "2", "--json", "-c", str(cfg), home=tmp_path)
    assert [json.loads(line)["seq"] for line in tail.stdout.splitlines()] == [4, 5]

    tamper(f"sqlite:///{db}", "UPDATE usage_records SET cost = 0 WHERE request_id = 'req_cli_3'")
    bad = lockgate("audit", "verify", "-c", str(cfg), home=tmp_path)
    assert bad.returncode == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "record #4 (request req_cli_3) was edited" in lines[0]
    assert "Traceback" not in bad.stderr

    missing = lockgate("audit", "show", "req_nope", "-c", str(cfg), home=tmp_path)
    assert missing.returncode == 1 and "no audit record" in missing.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text("database_url: postgresql://postgres@127.0.0.1:9/nope\n")
    proc = lockgate("audit", "verify", "-c", str(cfg), home=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot migrate database" in lines[0]


def test_archive_then_verify_archived_and_live(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"database_url: sqlite:///{db}\nhome: {tmp_path}\n"
                   "audit: {retention: {max_rows: 3, interval_seconds: 0}}\n")
    seed(f"sqlite:///{db}", 10)
    before = lockgate("audit", "verify", "-c", str(cfg), home=tmp_path)
    head = before.stdout.split("(head ", 1)[1].split(")", 1)[0]

    done = lockgate("audit", "archive", "-c", str(cfg), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("archived 7 records #1..#7 into 1 file(s)")
    files = list((tmp_path / "audit-archive").glob("audit-*.jsonl.gz"))
    assert len(files) == 1
    ok = lockgate("audit", "verify", "-c", str(cfg), "--anchor", head, home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok, 10 records (7 archived in 1 file(s), 3 live)")
    assert f"(head {head})" in ok.stdout
    again = lockgate("audit", "archive", "-c", str(cfg), home=tmp_path)
    assert again.stdout.startswith("nothing to archive (archived up to #7)")
    show = lockgate("audit", "show", "req_cli_7", "-c", str(cfg), home=tmp_path)
    assert json.loads(show.stdout)["link_ok"] is True  # its predecessor is archived

    files[0].unlink()
    bad = lockgate("audit", "verify", "-c", str(cfg), home=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is missing" in lines[0]
    live = lockgate("audit", "verify", "--live-only", "-c", str(cfg), home=tmp_path)
    assert live.returncode == 0 and "NOT read" in live.stdout


def test_archive_needs_a_policy(tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"database_url: sqlite:///{tmp_path / 'a.db'}\n")
    proc = lockgate("audit", "archive", "-c", str(cfg), home=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--max-age-days or --max-rows" in proc.stderr
