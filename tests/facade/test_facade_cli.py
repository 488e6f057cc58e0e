"""``lockgate facade``: start-up problems are one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lockgate.cli.app import app


def test_no_facades_configured(tmp_path: Path) -> None:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(f"home: {tmp_path / 'h'}\n")
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg)])
    assert r.exit_code == 2 and "no facades configured" in r.output


def test_unknown_task_and_unknown_name(tmp_path: Path) -> None:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'h'}\nfacades:\n  - name: crm\n    port: 18089\n"
        "    upstream: http://127.0.0.1:9\n    rules:\n      - name: r\n"
        "        match: {path: /x}\n        task: no_such_task\n"
        "        to: {response_header: X-A}\n")
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg)])
    assert r.exit_code == 1 and "unknown task 'no_such_task'" in r.output, r.output
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg), "--name", "erp"])
    assert r.exit_code == 2 and "unknown facade(s): erp" in r.output


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'h'}\nfacades:\n  - name: crm\n    port: 18089\n"
        "    upstream: http://127.0.0.1:9\n    rules:\n      - name: r\n"
        "        match: {path: /x}\n        task: gist\n")
    r = CliRunner().invoke(app, ["facade", "-c", str(cfg)])
    assert r.exit_code == 2 and "needs 'task' and 'to'" in r.output, r.output


def test_facade_command_serves_until_sigterm(tmp_path: Path) -> None:
    import asyncio
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from tests.facade.legacy import free_port, start_legacy

    loop = asyncio.new_event_loop()
    runner, legacy = loop.run_until_complete(start_legacy())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    port = free_port()
    cfg = tmp_path / "lg.yaml"
    cfg.write_text(f"home: {tmp_path / 'h'}\nfacades:\n  - {{name: crm, port: {port}, "
                   f"upstream: '{legacy}'}}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "facade", "-c", str(cfg)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.get(f"http://127.0.0.1:{port}/tickets/5", timeout=10)
        assert r.status_code == 200 and r.json()["id"] == "5"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert b"facade crm: http://127.0.0.1:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
