"""The lockgate CLI: one-line errors with non-zero exit, keys and teams lifecycle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LOCKGATE = [sys.executable, "-m", "lockgate"]


def run(*args: str, home: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LOCKGATE_HOME": str(home), **(env or {})}
    full_env.pop("LOCKGATE_MASTER_KEY", None)
    return subprocess.run([*LOCKGATE, *args], capture_output=True, text=True, env=full_env,
                          timeout=60)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_version(tmp_path: Path) -> None:
    proc = run("version", home=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip()


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("models:\n  - name: a\n    provider: nope\n", ":3: models[0].provider"),
        ("server:\n  port: 99999\n", ":2: server.port"),
        ("models: [\n", "not valid YAML"),
        ("unknown_field: 1\n", "unknown_field"),
        ("models:\n  - name: a\n    provider: openai\n    model: m\n", "base_url"),
    ],
)
def test_config_check_bad_files(tmp_path: Path, text: str, expect: str) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(text)
    line = one_line_error(run("config", "check", str(cfg), home=tmp_path))
    assert expect in line


def test_config_check_missing_env_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text("models:\n  - name: a\n    provider: openai\n    model: m\n"
                   "    base_url: http://x/v1\n    api_key: env:LG_TEST_UNSET_VAR\n")
    assert "LG_TEST_UNSET_VAR" in one_line_error(run("config", "check", str(cfg), home=tmp_path))


def test_config_check_missing_file(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(run("config", "check", "/nonexistent.yaml",
                                                home=tmp_path))


def test_config_check_ok(tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(
        "models:\n  - name: local\n    provider: llamacpp\n    path: bundled:gemma-3-270m\n"
    )
    proc = run("config", "check", str(cfg), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_teams_and_keys_lifecycle(tmp_path: Path) -> None:
    assert run("teams", "create", "alpha", "-b", "finance", home=tmp_path).returncode == 0
    dup = run("teams", "create", "alpha", home=tmp_path)
    assert "alpha" in one_line_error(dup)
    assert "finance" in run("teams", "list", home=tmp_path).stdout
    created = run("keys", "create", "--team", "alpha", "--model", "local", home=tmp_path)
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip().splitlines()[-1]
    assert plaintext.startswith("lg-")
    listing = run("keys", "list", home=tmp_path).stdout
    assert plaintext[:10] in listing and plaintext not in listing
    key_id = next(tok for tok in listing.split() if tok.startswith("key_"))
    revoked = run("keys", "revoke", key_id, "--gateway", "http://127.0.0.1:9", home=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert "no active key" in one_line_error(run("keys", "revoke", key_id, home=tmp_path))
    assert "team" in one_line_error(run("keys", "create", "--team", "ghost", home=tmp_path)).lower()
    assert "unknown model" in one_line_error(
        run("keys", "create", "--team", "alpha", "--model", "gpt-9", home=tmp_path))


def test_usage_bad_since(tmp_path: Path) -> None:
    assert "since" in one_line_error(run("usage", "--since", "whenever", home=tmp_path))


def test_usage_by_business_unit_and_unreachable_db(tmp_path: Path) -> None:
    assert run("teams", "create", "bu-team", "-b", "legal", home=tmp_path).returncode == 0
    proc = run("usage", "--by", "business-unit", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--by" in one_line_error(run("usage", "--by", "colour", home=tmp_path))
    down = run("teams", "list", home=tmp_path,
               env={"LOCKGATE_DATABASE_URL": "postgresql://127.0.0.1:9/nothing"})
    assert one_line_error(down)
