"""Two real consumer processes on one capture, one of them SIGKILLed mid-work.

Trigger/outbox path (PostgreSQL, MariaDB): both consume (SKIP LOCKED claims of each row's
oldest change); the survivor takes over the killed one's changes when their leases run out.
wal2json: one leader reads the slot (advisory lock); when it is killed the other takes
over. In both: every change applied exactly once (the side table has no unique change id,
so a double write would show), nothing lost, each row's changes in commit order.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from lockgate.cdc import install_capture, open_database
from lockgate.cli.app import app
from lockgate.testing.stub_upstream import run_stub_in_thread
from tests.cdc.conftest import UserDb, config_text

ROWS = 24


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(userdb: UserDb, cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "lockgate", "cdc", "run", "--dsn", userdb.url,
           "--capture", "tickets", "--task", "gist", "--select", "text",
           "--side-table", "ai_fail", "--on-delete", "mark", "--lease", "1.5",
           "--poll", "0.05", "--concurrency", "4", "-c", str(cfg)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)


async def _install(url: str, source: str) -> None:
    db = open_database(url, source=source)
    await db.open()
    try:
        await install_capture(db, "tickets", "tickets", ["body"], ops="insert,update,delete")
    finally:
        await db.aclose()


def _side_table(userdb: UserDb) -> None:
    if userdb.kind == "postgres":
        userdb.q("CREATE TABLE ai_fail (seq bigserial PRIMARY KEY, change_id text, capture "
                 "text, row_key text, op text, result jsonb, created_at timestamptz DEFAULT "
                 "now())")
    else:
        userdb.q("CREATE TABLE ai_fail (seq BIGINT AUTO_INCREMENT PRIMARY KEY, change_id "
                 "VARCHAR(160), capture VARCHAR(64), row_key VARCHAR(512), op VARCHAR(8), "
                 "result LONGTEXT, created_at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))")


def _write_changes(userdb: UserDb) -> dict[str, list[tuple[str, Any]]]:
    """insert -> 2 updates -> (every third row) delete; the expected side rows per row."""
    expected: dict[str, list[tuple[str, Any]]] = {}
    for i in range(ROWS):
        userdb.q("INSERT INTO tickets (id, body) VALUES (%s, %s)", (i, f"r{i} v0"))
        expected[f"[{i}]"] = [("INSERT", f"r{i} v0")]
    for v in (1, 2):
        for i in range(ROWS):
            userdb.q("UPDATE tickets SET body = %s WHERE id = %s", (f"r{i} v{v}", i))
            expected[f"[{i}]"].append(("UPDATE", f"r{i} v{v}"))
    for i in range(0, ROWS, 3):
        userdb.q("DELETE FROM tickets WHERE id = %s", (i,))
        expected[f"[{i}]"].append(("DELETE", None))
    return expected


def _wait(cond: Callable[[], bool], procs: list[subprocess.Popen[bytes]], what: str,
          timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            assert p.poll() is None, f"a consumer exited early ({what})"
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def _check(userdb: UserDb, expected: dict[str, list[tuple[str, Any]]]) -> int:
    rows = userdb.q("SELECT change_id, row_key, op, result FROM ai_fail ORDER BY seq")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a change was applied twice"
    got: dict[str, list[tuple[str, Any]]] = {}
    for _, row_key, op, result in rows:
        value = json.loads(result) if userdb.kind == "mariadb" else result
        got.setdefault(row_key.replace(" ", ""), []).append((op, value))
    assert got == expected  # nothing lost, each row in commit order
    return len(rows)


def _stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text
    m = re.search(r"applied=(\d+)", text)
    assert m, text
    return int(m.group(1))


def test_two_trigger_consumers_split_the_work_and_survive_a_sigkill(
        userdb: UserDb, tmp_path: Path) -> None:
    asyncio.run(_install(userdb.url, "trigger"))
    _side_table(userdb)
    expected = _write_changes(userdb)
    total = sum(len(v) for v in expected.values())
    with run_stub_in_thread() as stub:
        cfg = tmp_path / "lockgate.yaml"
        cfg.write_text(config_text(stub, tmp_path / "home", model="slow:150"))
        a = _start(userdb, cfg, tmp_path / "a.log")
        b = _start(userdb, cfg, tmp_path / "b.log")
        try:
            _wait(lambda: userdb.q("SELECT count(*) FROM ai_fail")[0][0] >= total // 4,
                  [a, b], "first results")
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            _wait(lambda: userdb.q(f"SELECT count(*) FROM {userdb.outbox}")[0][0] == 0, [b],
                  "the survivor finishes the killed consumer's changes")
            applied_b = _stop(b, tmp_path / "b.log")
        finally:
            for p in (a, b):
                if p.poll() is None:
                    p.kill()
    assert _check(userdb, expected) == total
    assert 0 < applied_b < total  # both consumed: the killed one applied the rest


def _leader_pid(userdb: UserDb) -> int | None:
    rows = userdb.q("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND a.application_name LIKE 'lockgate-cdc:%%'")
    return int(rows[0][0].split(":")[1]) if rows else None


def test_wal2json_leader_fails_over_after_sigkill(walldb: UserDb, tmp_path: Path) -> None:
    asyncio.run(_install(walldb.url, "wal2json"))
    _side_table(walldb)
    expected = _write_changes(walldb)
    total = sum(len(v) for v in expected.values())
    done = "SELECT count(*) FROM ai_fail"
    with run_stub_in_thread() as stub:
        cfg = tmp_path / "lockgate.yaml"
        cfg.write_text(config_text(stub, tmp_path / "home", model="slow:150"))
        procs: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        for name in ("first", "second"):
            log = tmp_path / f"{name}.log"
            p = _start(walldb, cfg, log)
            procs[p.pid] = (p, log)
        all_p = [p for p, _ in procs.values()]
        try:
            _wait(lambda: walldb.q(done)[0][0] >= total // 4, all_p, "first results")
            leader = _leader_pid(walldb)
            assert leader in procs, leader
            before = walldb.q(done)[0][0]
            procs[leader][0].send_signal(signal.SIGKILL)
            procs[leader][0].wait(10)
            [(follower, (fproc, flog))] = [(k, v) for k, v in procs.items() if k != leader]
            _wait(lambda: _leader_pid(walldb) == follower, [fproc], "the follower takes over")
            listed = CliRunner().invoke(app, ["cdc", "list", "--dsn", walldb.url])
            assert f"leader=lockgate-cdc:{follower} " in listed.output, listed.output
            _wait(lambda: walldb.q(done)[0][0] >= total, [fproc], "everything applied")
            time.sleep(1.0)  # a double apply would show up now
            applied_f = _stop(fproc, flog)
        finally:
            for p in all_p:
                if p.poll() is None:
                    p.kill()
    assert _check(walldb, expected) == total
    assert before < total and 0 < applied_f <= total - before  # the follower did the rest
    # the slot was advanced past every change of the table: nothing is left to replay
    rest = walldb.q("SELECT count(*) FROM pg_logical_slot_peek_changes('lockgate_tickets', "
                    "NULL, NULL, 'format-version', '2', 'add-tables', 'public.tickets') "
                    "WHERE data::jsonb ->> 'action' IN ('I', 'U', 'D')")
    assert rest == [(0,)]
