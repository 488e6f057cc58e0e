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
