"""``lockgate serve`` with a start-up problem: one line naming it, a non-zero exit, no
uvicorn lifespan traceback (subprocess, like an operator runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.conftest import free_port

BASE = """
master_key: test-master-key-0123456789
home: {home}
database_url: {db}
models:
  - name: fast
    provider: openai
    base_url: http://127.0.0.1:9/v1
    model: x
    api_key: {api_key}
{extra}
"""


@pytest.mark.parametrize(("api_key", "db", "extra", "named"), [
    ("env:LG_TEST_UNSET_KEY_XYZ", None, "", "LG_TEST_UNSET_KEY_XYZ"),
    ("sk-x", None, "shadow:\n  routes:\n    - {model: fast, candidate: ghost, percent: 5}",
     "ghost"),
    ("sk-x", "postgresql://127.0.0.1:1/nothing", "", "127.0.0.1:1"),
], ids=["unset-env-key", "unknown-shadow-model", "unreachable-database"])
def test_serve_start_problem_is_one_line(tmp_path: Path, api_key: str, db: str | None,
                                         extra: str, named: str) -> None:
    config = tmp_path / "lockgate.yaml"
    config.write_text(BASE.format(home=tmp_path / "home", api_key=api_key, extra=extra,
                                  db=db or f"sqlite:///{tmp_path / 'lg.db'}"))
    env = {k: v for k, v in os.environ.items() if k not in ("LG_TEST_UNSET_KEY_XYZ",
                                                            "LOCKGATE_MASTER_KEY")}
    proc = subprocess.run(
        [sys.executable, "-m", "lockgate", "serve", "-c", str(config), "--port",
         str(free_port())], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "Traceback" not in out and "lifespan" not in out, out
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert named in lines[0] and "cannot start" in lines[0], lines[0]


def test_serve_runs_the_gateway_in_a_clean_interpreter(tmp_path: Path) -> None:
    """After the pre-flight, ``lockgate serve`` execs :mod:`lockgate.serving` (same PID):
    the gateway answers, and neither the serving module nor the app it loads pulls in
    the command line's libraries (issue 12: memory per worker)."""
    import time

    import httpx

    config = tmp_path / "lockgate.yaml"
    config.write_text(BASE.format(home=tmp_path / "home", api_key="sk-x", extra="",
                                  db=f"sqlite:///{tmp_path / 'lg.db'}"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LOCKGATE_SERVE_IN_PROCESS"}
    proc = subprocess.Popen([sys.executable, "-m", "lockgate", "serve", "-c", str(config),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer"
            time.sleep(0.2)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"lockgate.serving" in cmdline, cmdline
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    code = ("import sys, lockgate.serving, lockgate.server\n"
            "print(','.join(m for m in ('typer', 'click', 'lockgate.cli')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == ""
